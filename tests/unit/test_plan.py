from __future__ import annotations

import pytest

from dockyard.lifecycles import Phase
from dockyard.planning.actions import Block, Observed, Outcome, Reason, Start, after_attempt
from dockyard.planning.graph import Graph, InstanceId
from dockyard.planning.plan import Plan, plan
from dockyard.planning.preflight import graph_of
from dockyard.planning.schedule import Capacity
from dockyard.spec import load_pipeline
from tests.conftest import WritePipeline

MIB = 1024**2
POOL = Capacity.of(2, 1024 * MIB)

CHAIN = """
    version: 1
    name: chain
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      a: {command: "true"}
      b: {command: "true", needs: [a], scatter: {s: [x, y, z]}}
      c: {command: "true", needs: [b]}
      side: {command: "true"}
"""


def chain(write_pipeline: WritePipeline) -> Graph:
    return graph_of(load_pipeline(write_pipeline(CHAIN)))


def iid(text: str) -> InstanceId:
    return InstanceId.parse(text)


def test_first_plan_starts_roots_critical_path_first(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    assert plan(graph, {}, POOL, now=0) == Plan(
        (Start(iid("a"), 1, 64 * MIB), Start(iid("side"), 1, 64 * MIB)), finished=False
    )


def test_nothing_starts_beyond_the_pool(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {iid("a"): Observed(Phase.SUCCEEDED, 1), iid("side"): Observed(Phase.RUNNING, 1)}
    result = plan(graph, observed, POOL, now=0)
    assert result.actions == (Start(iid("b[x]"), 1, 64 * MIB),)


def test_waiting_on_running_work_is_not_finished(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {iid("a"): Observed(Phase.RUNNING, 1), iid("side"): Observed(Phase.RUNNING, 1)}
    assert plan(graph, observed, POOL, now=0) == Plan((), finished=False)


def test_failure_blocks_downstream_and_stops_new_work(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {iid("a"): Observed(Phase.FAILED, 1)}
    result = plan(graph, observed, POOL, now=0)
    blocked = [a for a in result.actions if isinstance(a, Block)]
    assert [str(b.instance) for b in blocked] == ["b[x]", "b[y]", "b[z]", "c"]
    assert not any(isinstance(a, Start) for a in result.actions)
    assert result.finished


def test_keep_going_runs_independent_work_after_a_failure(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {iid("a"): Observed(Phase.FAILED, 1)}
    result = plan(graph, observed, POOL, now=0, keep_going=True)
    assert Start(iid("side"), 1, 64 * MIB) in result.actions


def test_retry_waits_for_its_backoff(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {
        iid("a"): Observed(Phase.PENDING, 1, retry_at=10.0),
        iid("side"): Observed(Phase.SUCCEEDED, 1),
    }
    assert plan(graph, observed, POOL, now=5) == Plan((), finished=False, wake_at=10.0)
    assert plan(graph, observed, POOL, now=10).actions == (Start(iid("a"), 2, 64 * MIB),)


def test_everything_done_is_finished(write_pipeline: WritePipeline) -> None:
    graph = chain(write_pipeline)
    observed = {i: Observed(Phase.SUCCEEDED, 1) for i in graph.order}
    assert plan(graph, observed, POOL, now=0) == Plan((), finished=True)


RETRYING = """
    version: 1
    name: retrying
    steps:
      a:
        image: busybox:1.36
        command: "true"
        resources: {memory: 100m}
        retries: {max: 2, memory_factor: 4, backoff: 2s}
"""


def test_failure_with_retries_left_goes_back_to_pending(write_pipeline: WritePipeline) -> None:
    instance = graph_of(load_pipeline(write_pipeline(RETRYING))).instances[iid("a")]
    seen = after_attempt(instance, Observed(Phase.RUNNING, 1), Outcome(1), now=100, pool=POOL)
    assert seen == Observed(Phase.PENDING, 1, memory=100 * MIB, retry_at=102.0, reason="exited")


def test_out_of_memory_multiplies_memory_by_the_factor(write_pipeline: WritePipeline) -> None:
    instance = graph_of(load_pipeline(write_pipeline(RETRYING))).instances[iid("a")]
    seen = after_attempt(instance, Observed(Phase.RUNNING, 1), Outcome(137, Reason.OOM), 0, POOL)
    assert seen.memory == 400 * MIB
    assert seen.phase is Phase.PENDING


def test_out_of_memory_beyond_the_pool_fails(write_pipeline: WritePipeline) -> None:
    instance = graph_of(load_pipeline(write_pipeline(RETRYING))).instances[iid("a")]
    seen = Observed(Phase.RUNNING, 1, memory=400 * MIB)
    assert after_attempt(instance, seen, Outcome(137, Reason.OOM), 0, POOL).phase is Phase.FAILED


def test_no_retries_left_fails(write_pipeline: WritePipeline) -> None:
    instance = graph_of(load_pipeline(write_pipeline(RETRYING))).instances[iid("a")]
    seen = after_attempt(instance, Observed(Phase.RUNNING, 3), Outcome(2), now=0, pool=POOL)
    assert seen.phase is Phase.FAILED
    assert seen.reason == "exited"


LIFECYCLE = [
    # (reason, attempts so far, lost so far, expected phase); the step allows 1 retry
    (Reason.EXITED, 1, 0, Phase.PENDING),
    (Reason.EXITED, 2, 0, Phase.FAILED),
    (Reason.OOM, 1, 0, Phase.PENDING),
    (Reason.OOM, 2, 0, Phase.FAILED),
    (Reason.TIMEOUT, 1, 0, Phase.PENDING),
    (Reason.TIMEOUT, 2, 0, Phase.FAILED),
    (Reason.ENGINE, 1, 0, Phase.PENDING),
    (Reason.ENGINE, 2, 0, Phase.FAILED),
    (Reason.LOST, 1, 0, Phase.PENDING),
    (Reason.LOST, 9, 4, Phase.PENDING),
    (Reason.LOST, 9, 5, Phase.FAILED),
    (Reason.EXITED, 3, 1, Phase.FAILED),
    (Reason.EXITED, 2, 1, Phase.PENDING),
]


def test_lifecycle_table_covers_every_reason() -> None:
    assert {row[0] for row in LIFECYCLE} == set(Reason)


@pytest.mark.parametrize(("reason", "attempts", "lost", "phase"), LIFECYCLE)
def test_lifecycle_after_a_failed_attempt(
    write_pipeline: WritePipeline, reason: Reason, attempts: int, lost: int, phase: Phase
) -> None:
    instance = graph_of(load_pipeline(write_pipeline(RETRYING.replace("max: 2", "max: 1"))))
    seen = Observed(Phase.RUNNING, attempts, lost=lost)
    result = after_attempt(instance.instances[iid("a")], seen, Outcome(1, reason), 0, POOL)
    assert result.phase is phase


STREAMED = """
    version: 1
    name: streamed
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      gen: {command: "echo hi"}
      count: {stdin: gen, command: "wc -c > /out/n"}
"""


def test_a_streamed_pair_starts_together(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(STREAMED)))
    assert plan(graph, {}, POOL, now=0).actions == (
        Start(iid("gen"), 1, 64 * MIB),
        Start(iid("count"), 1, 64 * MIB),
    )


def test_a_streamed_pair_waits_until_both_fit(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(STREAMED)))
    assert plan(graph, {}, Capacity.of(1.5, 1024 * MIB), now=0) == Plan((), finished=True)


def test_a_lost_instance_runs_again_at_once_then_a_little_later_each_time(
    write_pipeline: WritePipeline,
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: lost
        steps:
          a: {image: busybox:1.36, command: "true"}
        """
    )
    instance = graph_of(load_pipeline(path)).instances[InstanceId.parse("a")]
    lost = Outcome(None, Reason.LOST, "its node went down")
    waits = []
    for before in range(4):
        running = Observed(Phase.RUNNING, before + 1, lost=before)
        seen = after_attempt(instance, running, lost, 100.0, POOL)
        assert seen.retry_at is not None
        waits.append(seen.retry_at - 100.0)
    assert waits == [0.0, 1.0, 2.0, 4.0]
