"""The incremental planner: the same answers as planning from scratch, in time per event."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.lifecycles import Phase
from dockyard.planning.actions import (
    Adopt,
    Block,
    Commit,
    Fail,
    Kill,
    Observed,
    Orphan,
    Outcome,
    Reason,
    Resolution,
    Retry,
    Reuse,
    Start,
    after_attempt,
)
from dockyard.planning.graph import Graph, InstanceId
from dockyard.planning.plan import plan
from dockyard.planning.planner import Planner
from dockyard.planning.preflight import graph_of
from dockyard.planning.ready import Ready
from dockyard.planning.schedule import Capacity
from dockyard.planning.volume_homes import VolumeHomes
from dockyard.spec import load_pipeline
from tests.conftest import WritePipeline

MIB = 1024**2
POOL = Capacity.of(2, 1024 * MIB)
MISS = Resolution(reusable=False, orphans={})


def iid(text: str) -> InstanceId:
    return InstanceId.parse(text)


def graph(write_pipeline: WritePipeline, text: str) -> Graph:
    return graph_of(load_pipeline(write_pipeline(text)))


def resolve_all(planner: Planner, resolution: Resolution = MISS) -> list[object]:
    actions: list[object] = []
    while units := planner.resolvable():
        for unit in units:
            actions += planner.resolved(unit, resolution)
    return actions


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


def test_roots_start_first_critical_path_first_on_the_node_that_fits(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL)
    resolve_all(planner)
    result = planner.next(now=0)
    assert result.actions == (
        Start(iid("a"), 1, 64 * MIB, "local"),
        Start(iid("side"), 1, 64 * MIB, "local"),
    )
    assert not result.finished


def test_a_success_makes_its_dependents_resolvable_and_a_failure_blocks_them(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL)
    resolve_all(planner)
    planner.next(now=0)
    assert planner.ended(iid("a"), 1, Outcome(0), now=1) == [Commit(iid("a"), 1)]
    assert [u for u in planner.resolvable()] == [(iid("b[x]"),), (iid("b[y]"),), (iid("b[z]"),)]
    failed = planner.ended(iid("side"), 1, Outcome(3), now=1)
    assert failed == [Fail(iid("side"), 1, Outcome(3), "exited with status 3")]


def test_a_failure_blocks_everything_downstream_once(write_pipeline: WritePipeline) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL)
    resolve_all(planner)
    planner.next(now=0)
    planner.ended(iid("a"), 1, Outcome(2), now=1)
    result = planner.next(now=1)
    assert [str(a.instance) for a in result.actions if isinstance(a, Block)] == [
        "b[x]",
        "b[y]",
        "b[z]",
        "c",
    ]
    assert planner.next(now=1).actions == ()


def test_a_retry_waits_for_its_backoff(write_pipeline: WritePipeline) -> None:
    text = CHAIN.replace(
        'a: {command: "true"}', 'a: {command: "true", retries: {max: 1, backoff: 10s}}'
    )
    planner = Planner(graph(write_pipeline, text), POOL)
    resolve_all(planner)
    planner.next(now=0)
    (retry,) = planner.ended(iid("a"), 1, Outcome(1), now=0)
    assert isinstance(retry, Retry) and retry.at == 10.0
    assert planner.next(now=5).wake_at == 10.0
    assert Start(iid("a"), 2, 64 * MIB, "local") in planner.next(now=10).actions


def test_a_unit_the_cache_answers_is_reused_and_its_dependents_resolve(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL)
    first = planner.resolvable()
    assert first == [(iid("a"),), (iid("side"),)]
    assert planner.resolved(first[0], Resolution(True, {})) == [Reuse(iid("a"))]
    assert len(planner.resolvable()) == 3  # b[x], b[y], b[z]


def test_a_unit_with_a_dead_runs_container_is_adopted_and_holds_its_room(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), Capacity.of(1, 1024 * MIB))
    (a, side) = planner.resolvable()
    orphan = Orphan("c0ffee", "old-run", 3, running=True)
    assert planner.resolved(a, Resolution(False, {iid("a"): orphan})) == [Adopt(iid("a"), orphan)]
    planner.resolved(side, MISS)
    assert planner.next(now=0).actions == ()  # a's container uses the only CPU


def test_no_cache_reruns_what_the_cache_would_answer(write_pipeline: WritePipeline) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL, no_cache=True)
    (a, _) = planner.resolvable()
    assert planner.resolved(a, Resolution(True, {})) == []


STREAMED = """
    version: 1
    name: streamed
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      gen: {command: "echo hi"}
      count: {stdin: gen, command: "wc -c > /out/n", retries: 1}
"""


def test_a_failed_stream_member_gets_its_partner_killed_and_both_retry(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, STREAMED), POOL)
    resolve_all(planner)
    assert len(planner.next(now=0).actions) == 2
    assert planner.ended(iid("count"), 1, Outcome(1), now=1) == [Kill(iid("gen"), 1)]
    retries = planner.ended(iid("gen"), 1, Outcome(137), now=1)
    assert [(type(a), str(a.instance)) for a in retries] == [(Retry, "gen"), (Retry, "count")]
    assert "stream partner count failed" in retries[0].message  # type: ignore[union-attr]


def test_a_producer_ended_by_sigpipe_after_its_consumer_is_fine(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, STREAMED), POOL)
    resolve_all(planner)
    planner.next(now=0)
    assert planner.ended(iid("gen"), 1, Outcome(141), now=1) == []
    assert planner.ended(iid("count"), 1, Outcome(0), now=1) == [
        Commit(iid("gen"), 1),
        Commit(iid("count"), 1),
    ]


def test_work_goes_to_the_fullest_node_that_fits(write_pipeline: WritePipeline) -> None:
    nodes = {"big": Capacity.of(4, 4096 * MIB), "small": Capacity.of(1, 1024 * MIB)}
    planner = Planner(graph(write_pipeline, CHAIN), nodes)
    resolve_all(planner)
    assert {a.node for a in planner.next(now=0).actions if isinstance(a, Start)} == {"small", "big"}


WIDE = """
    version: 1
    name: wide
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      w: {command: "true", scatter: {s: [a, b, c, d]}}
"""


def test_a_lost_node_takes_no_new_work_and_its_lost_attempts_run_elsewhere(
    write_pipeline: WritePipeline,
) -> None:
    nodes = {"one": Capacity.of(2, 1024 * MIB), "two": Capacity.of(2, 1024 * MIB)}
    planner = Planner(graph(write_pipeline, WIDE), nodes)
    resolve_all(planner)
    first = [a for a in planner.next(now=0).actions if isinstance(a, Start)]
    on_two = sorted(a.instance for a in first if a.node == "two")
    assert len(first) == 4 and len(on_two) == 2

    planner.nodes_changed({"one": nodes["one"]})  # "two" went down
    for instance in on_two:
        retry = planner.ended(instance, 1, Outcome(None, Reason.LOST, "node down"), now=1)
        assert [type(a) for a in retry] == [Retry]
    assert planner.next(now=1).actions == ()  # "one" is full; "two" takes nothing
    for start in first:
        if start.node == "one":
            planner.ended(start.instance, 1, Outcome(0), now=2)
    again = [a for a in planner.next(now=2).actions if isinstance(a, Start)]
    assert sorted(a.instance for a in again) == on_two
    assert {a.node for a in again} == {"one"}


def test_a_node_that_comes_back_takes_work_again(write_pipeline: WritePipeline) -> None:
    nodes = {"one": Capacity.of(1, 1024 * MIB), "two": Capacity.of(1, 1024 * MIB)}
    planner = Planner(graph(write_pipeline, WIDE), nodes)
    resolve_all(planner)
    planner.nodes_changed({"one": nodes["one"]})
    assert {a.node for a in planner.next(now=0).actions if isinstance(a, Start)} == {"one"}
    planner.nodes_changed(nodes)
    assert {a.node for a in planner.next(now=0).actions if isinstance(a, Start)} == {"two"}


def _succeed(planner: Planner, *names: str, now: float = 0) -> None:
    for start in [a for a in planner.next(now=now).actions if isinstance(a, Start)]:
        if str(start.instance) in names:
            planner.ended(start.instance, start.attempt, Outcome(0), now=now)


def test_an_output_lost_with_its_node_is_made_again_before_what_reads_it(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), POOL)
    resolve_all(planner)
    _succeed(planner, "a", "side")
    resolve_all(planner)
    starts = [a for a in planner.next(now=1).actions if isinstance(a, Start)]
    assert sorted(str(a.instance) for a in starts) == ["b[x]", "b[y]"]
    # b[x] could not get a's output: a's node is gone, and no other node kept it.
    lost = planner.ended(iid("b[x]"), 1, Outcome(None, Reason.LOST, "a's output"), now=2)
    assert [type(x) for x in lost] == [Retry]
    assert planner.outputs_lost([iid("a")]) == [iid("a")]
    assert planner.observed[iid("a")].phase is Phase.PENDING
    assert planner.observed[iid("a")].lost == 1  # (not held against its retries)
    assert planner.outputs_lost([iid("a")]) == []  # already being made again
    assert [u for u in planner.resolvable()] == [(iid("a"),)]
    planner.resolved((iid("a"),), MISS)
    plan_ = planner.next(now=3)
    started = [str(a.instance) for a in plan_.actions if isinstance(a, Start)]
    assert started == ["a"]  # b[x] and b[z] wait for a again; b[y] runs on
    assert not plan_.finished
    again = next(a for a in plan_.actions if isinstance(a, Start))
    assert again.attempt == 2
    planner.ended(iid("a"), 2, Outcome(0), now=4)
    planner.ended(iid("b[y]"), 1, Outcome(0), now=4)
    assert sorted(str(u[0]) for u in planner.resolvable()) == ["b[x]", "b[z]"]


def test_a_lost_output_whose_readers_are_done_or_running_only_runs_again(
    write_pipeline: WritePipeline,
) -> None:
    planner = Planner(graph(write_pipeline, CHAIN), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "a", "side")
    resolve_all(planner)
    bs = [a for a in planner.next(now=1).actions if isinstance(a, Start)]
    assert len(bs) == 3
    planner.ended(bs[0].instance, 1, Outcome(0), now=2)  # one done, two running
    planner.outputs_lost([iid("a")])
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=3).actions if isinstance(a, Start)] == ["a"]
    planner.ended(iid("a"), 2, Outcome(0), now=4)
    assert planner.resolvable() == []  # nothing that read it resolves again
    for start in bs[1:]:
        planner.ended(start.instance, 1, Outcome(0), now=5)
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=6).actions if isinstance(a, Start)] == ["c"]


def test_a_reader_waiting_to_retry_waits_for_the_lost_output_instead(
    write_pipeline: WritePipeline,
) -> None:
    text = CHAIN.replace(
        'b: {command: "true",', 'b: {command: "true", retries: {max: 2, backoff: 10s},'
    )
    planner = Planner(graph(write_pipeline, text), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "a", "side")
    resolve_all(planner)
    planner.next(now=1)
    planner.ended(iid("b[x]"), 1, Outcome(1), now=2)  # failed: retry at 12
    planner.outputs_lost([iid("a")])
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=20).actions if isinstance(a, Start)] == ["a"]
    planner.ended(iid("a"), 2, Outcome(0), now=21)
    assert [str(u[0]) for u in planner.resolvable()] == ["b[x]"]


def test_a_second_reader_that_finds_the_output_gone_waits_for_it_too(
    write_pipeline: WritePipeline,
) -> None:
    """The second reader's loss comes after the output is being made again already."""
    planner = Planner(graph(write_pipeline, CHAIN), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "a", "side")
    resolve_all(planner)
    planner.next(now=1)  # b[x], b[y], b[z] run
    for reader in ("b[x]", "b[y]"):  # as the loop tells it: the loss, then the end
        planner.outputs_lost([iid("a")])
        planner.ended(iid(reader), 1, Outcome(None, Reason.LOST, "a's output"), now=2)
    resolve_all(planner)
    for now in (3, 4, 5):  # only a runs, however often asked, until it is done
        started = [str(a.instance) for a in planner.next(now=now).actions if isinstance(a, Start)]
        assert started == (["a"] if now == 3 else [])
    planner.ended(iid("a"), 2, Outcome(0), now=6)
    assert sorted(str(u[0]) for u in planner.resolvable()) == ["b[x]", "b[y]"]


def test_a_streamed_chain_whose_head_lost_its_input_waits_as_a_whole(
    write_pipeline: WritePipeline,
) -> None:
    text = """
    version: 1
    name: streamed
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      a: {command: "true"}
      gen: {command: "echo hi", needs: [a]}
      count: {stdin: gen, command: "wc -c > /out/n"}
    """
    planner = Planner(graph(write_pipeline, text), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "a")
    resolve_all(planner)
    assert len([a for a in planner.next(now=1).actions if isinstance(a, Start)]) == 2
    planner.outputs_lost([iid("a")])  # gen could not get a's output; count is killed
    kills = planner.ended(iid("gen"), 1, Outcome(None, Reason.LOST, "a's output"), now=2)
    assert [type(k) for k in kills] == [Kill]
    planner.ended(iid("count"), 1, Outcome(137), now=2)
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=3).actions if isinstance(a, Start)] == ["a"]
    assert planner.next(now=4).actions == ()
    planner.ended(iid("a"), 2, Outcome(0), now=5)
    assert [u for u in planner.resolvable()] == [(iid("gen"), iid("count"))]


def test_a_retry_due_after_its_input_was_made_again_does_not_start_it_twice(
    write_pipeline: WritePipeline,
) -> None:
    retrying = 'b: {command: "true", retries: {max: 2, backoff: 10s},'
    text = CHAIN.replace('b: {command: "true",', retrying)
    planner = Planner(graph(write_pipeline, text), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "a", "side")
    resolve_all(planner)
    planner.next(now=1)
    planner.ended(iid("b[x]"), 1, Outcome(1), now=2)  # failed: its retry is due at 12
    planner.outputs_lost([iid("a")])
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=3).actions if isinstance(a, Start)] == ["a"]
    planner.ended(iid("a"), 2, Outcome(0), now=4)
    resolve_all(planner)
    again = [a for a in planner.next(now=5).actions if isinstance(a, Start)]
    assert [(str(a.instance), a.attempt) for a in again] == [("b[x]", 2)]
    assert planner.next(now=13).actions == ()  # the retry that was due is not a second start
    assert planner.next(now=13).wake_at is None


def test_a_producer_whose_own_input_is_being_made_again_waits_for_it(
    write_pipeline: WritePipeline,
) -> None:
    """s -> p -> r, and q reads s: q finds s's output gone, then r finds p's gone. p runs
    again only after s has, never beside it."""
    text = """
    version: 1
    name: deep
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      s: {command: "true"}
      p: {command: "true", needs: [s]}
      q: {command: "true", needs: [s]}
      r: {command: "true", needs: [p]}
    """
    planner = Planner(graph(write_pipeline, text), Capacity.of(8, 8192 * MIB))
    resolve_all(planner)
    _succeed(planner, "s")
    resolve_all(planner)
    _succeed(planner, "p", now=1)  # (q goes on running)
    resolve_all(planner)
    planner.next(now=2)  # r runs
    planner.outputs_lost([iid("s")])
    planner.ended(iid("q"), 1, Outcome(None, Reason.LOST, "s's output"), now=3)
    planner.outputs_lost([iid("p")])
    planner.ended(iid("r"), 1, Outcome(None, Reason.LOST, "p's output"), now=3)
    resolve_all(planner)
    assert [str(a.instance) for a in planner.next(now=4).actions if isinstance(a, Start)] == ["s"]
    planner.ended(iid("s"), 2, Outcome(0), now=5)
    resolve_all(planner)
    started = sorted(str(a.instance) for a in planner.next(now=6).actions if isinstance(a, Start))
    assert started == ["p", "q"]
    assert all(count >= 0 for count in planner.waiting.values())


def test_with_keep_going_a_reader_whose_source_failed_while_it_ran_is_blocked(
    write_pipeline: WritePipeline,
) -> None:
    text = """
    version: 1
    name: blocked
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    steps:
      s: {command: "true", retries: {max: 0}}
      q: {command: "true", needs: [s]}
      r: {command: "true", needs: [s], retries: {max: 2, backoff: 1s}}
      d: {command: "true", needs: [r]}
    """
    planner = Planner(graph(write_pipeline, text), Capacity.of(8, 8192 * MIB), keep_going=True)
    resolve_all(planner)
    _succeed(planner, "s")
    resolve_all(planner)
    planner.next(now=1)  # q and r run
    planner.outputs_lost([iid("s")])
    planner.ended(iid("q"), 1, Outcome(None, Reason.LOST, "s's output"), now=2)
    resolve_all(planner)
    planner.next(now=2)  # s runs again, and fails for good
    planner.ended(iid("s"), 2, Outcome(1), now=3)
    planner.ended(iid("r"), 1, Outcome(1), now=4)  # r, running all along, fails on its own
    plan_ = planner.next(now=10)
    blocked = sorted(str(a.instance) for a in plan_.actions if isinstance(a, Block))
    assert "r" in blocked and "d" in blocked
    assert plan_.finished
    assert planner.observed[iid("r")].phase is Phase.BLOCKED


# -- the same answers as planning from scratch ---------------------------------------------------


def pipeline(width: int, depth: int, cpus: list[float], retries: int) -> str:
    values = ", ".join(f'"{i}"' for i in range(width))
    lines = [
        "version: 1",
        "name: oracle",
        f"defaults: {{image: busybox:1.36, retries: {{max: {retries}, backoff: 1s}}}}",
        "steps:",
    ]
    for level in range(depth):
        lines += [
            f"  s{level}:",
            f"    resources: {{cpus: {cpus[level % len(cpus)]}, memory: 64m}}",
            f"    scatter: {{v: [{values}]}}",
            '    command: "true"',
        ]
        if level:
            lines.append(f"    needs: [s{level - 1}]")
    lines += ["  total:", f"    needs: [s{depth - 1}]", '    command: "true"']
    return "\n".join(lines) + "\n"


OUTCOMES = [
    Outcome(0),
    Outcome(0),
    Outcome(1),
    Outcome(137, Reason.OOM),
    Outcome(None, Reason.LOST),
]


def oracle_after(
    graph: Graph, seen: dict[InstanceId, Observed], iid: InstanceId, outcome: Outcome, now: float
) -> None:
    if outcome.ok:
        seen[iid] = replace(seen[iid], phase=Phase.SUCCEEDED, reason=None)
    else:
        seen[iid] = after_attempt(graph.instances[iid], seen[iid], outcome, now, POOL)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 4),
    depth=st.integers(1, 3),
    cpus=st.lists(st.sampled_from([0.5, 1.0, 1.5]), min_size=1, max_size=3),
    retries=st.integers(0, 2),
    keep_going=st.booleans(),
    data=st.data(),
)
def test_incremental_planning_agrees_with_planning_from_scratch(
    tmp_path_factory: pytest.TempPathFactory,
    width: int,
    depth: int,
    cpus: list[float],
    retries: int,
    keep_going: bool,
    data: st.DataObject,
) -> None:
    folder: Path = tmp_path_factory.mktemp("oracle")
    (folder / "dockyard.yaml").write_text(pipeline(width, depth, cpus, retries))
    g = graph_of(load_pipeline(folder / "dockyard.yaml"))
    planner = Planner(g, POOL, keep_going=keep_going)
    seen: dict[InstanceId, Observed] = {i: Observed() for i in g.order}
    now = 0.0
    for _ in range(200):
        resolve_all(planner)
        expected = plan(g, seen, POOL, now, keep_going=keep_going)
        got = planner.next(now)
        for action in expected.actions:  # the oracle's actions, applied to its own state
            if isinstance(action, Start):
                seen[action.instance] = replace(
                    seen[action.instance],
                    phase=Phase.RUNNING,
                    attempts=action.attempt,
                    memory=action.memory,
                    retry_at=None,
                )
            else:
                seen[action.instance] = replace(seen[action.instance], phase=Phase.BLOCKED)
        assert sorted(
            (a.instance, a.attempt, a.memory) for a in got.actions if isinstance(a, Start)
        ) == sorted(
            (a.instance, a.attempt, a.memory) for a in expected.actions if isinstance(a, Start)
        )
        assert sorted(a.instance for a in got.actions if isinstance(a, Block)) == sorted(
            a.instance for a in expected.actions if isinstance(a, Block)
        )
        assert (got.finished, got.wake_at) == (expected.finished, expected.wake_at)
        assert {i: o.phase for i, o in planner.observed.items()} == {
            i: o.phase for i, o in seen.items()
        }
        if got.finished:
            return
        running = sorted(i for i, o in seen.items() if o.phase is Phase.RUNNING)
        ending = (
            data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
            if running
            else []
        )
        for instance in ending:
            outcome = data.draw(st.sampled_from(OUTCOMES))
            planner.ended(instance, seen[instance].attempts, outcome, now)
            oracle_after(g, seen, instance, outcome, now)
        now += data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    raise AssertionError("the run never finished")


def test_ready_work_that_fits_no_node_that_is_up_waits_for_one_to_return(
    write_pipeline: WritePipeline,
) -> None:
    nodes = {"one": Capacity.of(2, 1024 * MIB)}
    planner = Planner(graph(write_pipeline, WIDE), nodes)
    resolve_all(planner)
    planner.nodes_changed({})  # the only node is down before anything started
    plan = planner.next(now=0)
    assert plan.actions == () and plan.finished  # nothing can happen now...
    assert planner.waiting_for_room()  # ...but four are ready for a node that comes back
    planner.nodes_changed(nodes)
    assert len([a for a in planner.next(now=1).actions if isinstance(a, Start)]) == 2
    assert not planner.waiting_for_room()  # (two run: they will make room)


WRITERS = """
    version: 1
    name: writers
    defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 64m}}
    volumes: {cache: {}, other: {}}
    steps:
      fill: {command: "true", scatter: {s: [a, b, c]}, volumes: {cache: /cache}}
      read: {command: "true", volumes: {cache: {path: /cache, readonly: true}}}
      elsewhere: {command: "true", volumes: {other: /other}}
"""


def test_on_a_cluster_the_writers_of_a_volume_share_one_node_and_readers_go_anywhere(
    write_pipeline: WritePipeline,
) -> None:
    nodes = {"one": Capacity.of(3, 1024 * MIB), "two": Capacity.of(3, 1024 * MIB)}
    planner = Planner(graph(write_pipeline, WRITERS), nodes)
    resolve_all(planner)
    first = [a for a in planner.next(now=0).actions if isinstance(a, Start)]
    where = {str(a.instance): a.node for a in first}
    fills = [node for name, node in where.items() if name.startswith("fill")]
    # (a volume is mounted read-write on one node at a time: the fills wait for room there,
    # and what does not write it starts beside them, on the other node too)
    assert len(set(fills)) == 1
    assert len(where) == 4 and len(fills) == 2  # (the third fill: no room on theirs)
    rest = [name for name in where if not name.startswith("fill")]
    assert sorted(rest) == ["elsewhere", "read"]
    last = next(a for a in first if str(a.instance).startswith("fill"))
    planner.ended(last.instance, 1, Outcome(0), now=1)
    [third] = [a for a in planner.next(now=1).actions if isinstance(a, Start)]
    assert str(third.instance).startswith("fill") and third.node == fills[0]


def test_a_writer_prefers_the_node_its_volume_was_written_on_when_it_has_room(
    write_pipeline: WritePipeline,
) -> None:
    homes = VolumeHomes(graph(write_pipeline, WRITERS))
    fill_a, fill_b, read = iid("fill[a]"), iid("fill[b]"), iid("read")
    assert homes.place(fill_a, {}) == (None, None)  # never written: anywhere
    homes.started(fill_a, "two")
    assert homes.place(fill_b, {fill_a: ("two", None)}) == ("two", None)  # it writes there now
    assert homes.place(fill_b, {}) == (None, "two")  # its data is there
    assert homes.place(read, {fill_a: ("two", None)}) == (None, None)  # readers: anywhere
    ready = Ready()
    small = Capacity.of(1, 64 * MIB)
    ready.push(small, 1, fill_b)
    free = {"one": Capacity.of(1, 1024 * MIB), "two": Capacity.of(3, 1024 * MIB)}
    assert ready.pop_fitting(free, lambda head: homes.place(head, {})) == (fill_b, small, "two")
    ready.push(small, 1, fill_b)
    assert ready.pop_fitting(free) == (fill_b, small, "one")  # (packing, without a home)
