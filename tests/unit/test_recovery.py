"""Crash recovery and engine outages on the fake runtime."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.backends.local.ports import local_ports
from dockyard.errors import RunFailed
from dockyard.events import Event
from dockyard.execution import Abandon, Executor
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime, Fault
from tests.unit.test_engine_fake import IMAGE

RUNS = itertools.count(1)


class CrashAfter:
    """A reporter that kills the run (as SIGKILL would) after ``n`` events."""

    def __init__(self, n: int | None):
        self.n = n
        self.seen = 0

    def __call__(self, event: Event) -> None:
        self.seen += 1
        if self.n is not None and self.seen > self.n:
            raise Abandon


def attempt_run(path: Path, runtime: FakeRuntime, crash_after: int | None) -> str | None:
    """One `dockyard run`; None when it was killed before it finished."""
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    executor = Executor(
        pf,
        runtime,
        store,
        ports=local_ports(pf),
        reporter=CrashAfter(crash_after),
        new_id=lambda: f"r{next(RUNS)}",
        sleep=lambda s: None,
    )
    try:
        return executor.run()
    except Abandon:
        return None
    except RunFailed as exc:
        return exc.run_id
    finally:
        store.close()


def committed(path: Path, run_id: str) -> dict[str, str | None]:
    store = Store(path.parent / ".dockyard" / "state.db")
    outputs = {row.instance: row.output for row in store.instances(run_id)}
    store.close()
    return outputs


def pipeline_text(width: int, depth: int, retries: int) -> str:
    values = ", ".join(f'"{i}"' for i in range(width))
    lines = [
        "version: 1",
        "name: converge",
        f"defaults: {{image: {IMAGE}, resources: {{cpus: 0.5, memory: 16m}}, retries: {retries}}}",
        "steps:",
        "  s0:",
        f"    scatter: {{v: [{values}]}}",
        '    command: "echo ${v} > /out/v"',
    ]
    for level in range(1, depth):
        lines += [
            f"  s{level}:",
            f"    needs: [s{level - 1}]",
            f"    scatter: {{v: [{values}]}}",
            f'    command: "cat /in/s{level - 1}/v > /out/v && echo {level} >> /out/v"',
        ]
    lines += [
        "  total:",
        f"    needs: [s{depth - 1}]",
        f'    command: "cat {" ".join(f"/in/s{depth - 1}/{i}/v" for i in range(width))}'
        ' > /out/all"',
    ]
    return "\n".join(lines) + "\n"


def write(tmp: Path, text: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "dockyard.yaml"
    path.write_text(text)
    return path


def test_killed_run_is_adopted_and_finished_by_the_next(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    path = write(tmp_path, pipeline_text(width=3, depth=2, retries=0))
    assert attempt_run(path, runtime, crash_after=4) is None
    left = [c for c in runtime.containers.values()]
    assert left, "the killed run should leave containers behind"
    run_id = attempt_run(path, runtime, crash_after=None)
    assert run_id is not None
    store = Store(path.parent / ".dockyard" / "state.db")
    assert store.run(run_id).state == "succeeded"
    assert {r.state for r in store.runs()[:-1]} == {"interrupted"}
    store.close()
    assert runtime.containers == {}


def test_engine_outage_is_waited_out(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    path = write(tmp_path, pipeline_text(width=2, depth=1, retries=0))
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            runtime.reachable = True

    original_start = runtime.start
    calls = itertools.count()

    def flaky_start(container_id: str) -> None:
        original_start(container_id)
        if next(calls) == 0:
            runtime.reachable = False  # the engine goes away after the first start

    runtime.start = flaky_start  # type: ignore[method-assign]
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    events: list[Event] = []
    run_id = Executor(
        pf,
        runtime,
        store,
        ports=local_ports(pf),
        reporter=events.append,
        sleep=sleep,
        new_id=lambda: "outage",
    ).run()
    assert store.run(run_id).state == "succeeded"
    assert any(e.kind == "engine" for e in events)
    assert len(naps) >= 3
    store.close()


def test_engine_gone_for_too_long_stops_the_run(tmp_path: Path) -> None:
    from dockyard.errors import EngineUnavailable

    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    path = write(tmp_path, pipeline_text(width=1, depth=1, retries=0))
    original_create = runtime.create

    def create_then_vanish(spec):  # type: ignore[no-untyped-def]
        cid = original_create(spec)
        runtime.reachable = False
        return cid

    runtime.create = create_then_vanish  # type: ignore[method-assign]
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    with pytest.raises(EngineUnavailable):
        Executor(
            pf,
            runtime,
            store,
            ports=local_ports(pf),
            sleep=lambda s: None,
            engine_patience=0.0,
            new_id=lambda: "gone",
        ).run()
    assert store.run("gone").state == "interrupted"  # not a step's failure: the engine went away
    store.close()


def test_lost_container_is_retried_without_using_a_retry(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    runtime.inject("s0[0]", Fault(lost=True), Fault(lost=True))
    path = write(tmp_path, pipeline_text(width=1, depth=1, retries=0))
    run_id = attempt_run(path, runtime, crash_after=None)
    assert run_id is not None
    store = Store(path.parent / ".dockyard" / "state.db")
    assert [a.reason for a in store.attempts(run_id, "s0[0]")] == ["lost", "lost", "exited"]
    assert store.run(run_id).state == "succeeded"
    store.close()


faults = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 1),
        st.sampled_from([Fault(exit_code=1), Fault(oom=True), Fault(lost=True)]),
    ),
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 3),
    depth=st.integers(1, 3),
    faults=faults,
    crashes=st.lists(st.integers(1, 30), max_size=4),
)
def test_runs_converge_to_the_fault_free_outputs(
    tmp_path_factory: pytest.TempPathFactory,
    width: int,
    depth: int,
    faults: list[tuple[int, int, Fault]],
    crashes: list[int],
) -> None:
    text = pipeline_text(width, depth, retries=len(faults) + 1)
    clean_runtime = FakeRuntime()
    clean_runtime.add_image(IMAGE)
    clean = write(tmp_path_factory.mktemp("clean"), text)
    clean_run = attempt_run(clean, clean_runtime, crash_after=None)
    assert clean_run is not None
    expected = committed(clean, clean_run)

    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    for value, level, fault in faults:
        if value < width and level < depth:
            runtime.inject(f"s{level}[{value}]", fault)
    path = write(tmp_path_factory.mktemp("faulty"), text)
    schedule = [*crashes, None]  # each entry: one `dockyard run`, killed after n events
    finals = [attempt_run(path, runtime, crash_after) for crash_after in schedule]
    final = finals[-1]  # a run that was not killed always finishes, in one round
    assert final is not None
    assert committed(path, final) == expected
    assert runtime.containers == {}
