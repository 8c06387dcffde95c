"""The engine going away and coming back, on the fake runtime (issue 15).

The same scenarios run on a real dockerd in tests/integration/test_engine_restart_docker.py;
here each rule of the classification and of the patient runtime is pinned down on its own.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from dockyard.backends.local.ports import local_ports
from dockyard.cli import main
from dockyard.errors import EngineUnavailable, RunFailed
from dockyard.events import Event
from dockyard.execution import Executor
from dockyard.runtime.base import LABEL_INSTANCE, ContainerSpec, ExitStatus
from dockyard.runtime.patient import EngineGuard, PatientRuntime
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime, Fault
from tests.unit.test_engine_fake import IMAGE
from tests.unit.test_recovery import attempt_run, pipeline_text, write


def comes_back(runtime: FakeRuntime, naps: list[float]) -> object:
    """A sleeper under which the engine answers again after the second nap."""

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) >= 2:
            runtime.reachable = True

    return sleep


def run_once(
    path: Path, runtime: FakeRuntime, naps: list[float], run_id: str
) -> tuple[Store, list[Event]]:
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    events: list[Event] = []
    executor = Executor(
        pf,
        runtime,
        store,
        ports=local_ports(pf),
        reporter=events.append,
        new_id=lambda: run_id,
        sleep=comes_back(runtime, naps),  # type: ignore[arg-type]
    )
    with contextlib.suppress(RunFailed):
        executor.run()
    return store, events


@pytest.fixture
def runtime() -> FakeRuntime:
    fake = FakeRuntime()
    fake.add_image(IMAGE)
    return fake


def test_attempts_stopped_by_an_engine_restart_are_rerun_without_using_a_retry(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.inject("s0[0]", Fault(engine_restart=True))
    path = write(tmp_path, pipeline_text(width=2, depth=1, retries=0))
    store, events = run_once(path, runtime, [], "restart")
    assert store.run("restart").state == "succeeded"
    attempts = store.attempts("restart", "s0[0]")
    assert [(a.state, a.reason, a.exit_code) for a in attempts] == [
        ("lost", "lost", 143),
        ("succeeded", "exited", 0),
    ]
    assert "the container engine restarted while it ran" in (attempts[0].detail or "")
    engine = [e.detail["state"] for e in events if e.kind == "engine"]
    assert engine == ["away", "back"]
    assert runtime.containers == {}


def test_containers_that_run_on_through_a_live_restore_are_not_rerun(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.inject("s0[0]", Fault(engine_restart=True, live_restore=True))
    path = write(tmp_path, pipeline_text(width=2, depth=1, retries=0))
    store, events = run_once(path, runtime, [], "live")
    assert store.run("live").state == "succeeded"
    assert [a.state for a in store.attempts("live", "s0[0]")] == ["succeeded"]
    assert [e.detail["state"] for e in events if e.kind == "engine"] == ["away", "back"]


def test_a_step_that_dies_by_sigterm_while_the_engine_stays_fails_as_itself(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.inject("s0[0]", Fault(exit_code=143))
    path = write(tmp_path, pipeline_text(width=1, depth=1, retries=0))
    naps: list[float] = []
    store, events = run_once(path, runtime, naps, "own")
    assert store.run("own").state == "failed"
    attempts = store.attempts("own", "s0[0]")
    assert [(a.state, a.reason, a.exit_code) for a in attempts] == [("failed", "exited", 143)]
    assert naps, "a death by SIGTERM is checked against an engine going away"
    assert not any(e.kind == "engine" for e in events)


def test_an_adopted_container_that_a_restart_stopped_is_rerun_not_failed(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    path = write(tmp_path, pipeline_text(width=2, depth=1, retries=0))
    # Killed once both attempts started and one committed: the other one is not done.
    assert attempt_run(path, runtime, crash_after=3) is None
    for left in runtime.containers.values():
        left.state, left.status = "exited", ExitStatus(143)  # then the engine restarted
    run_id = attempt_run(path, runtime, crash_after=None)
    assert run_id is not None
    store = Store(path.parent / ".dockyard" / "state.db")
    assert store.run(run_id).state == "succeeded"
    adopted = [r.instance for r in store.instances(run_id) if r.step == "s0" and not r.cached]
    assert adopted
    for instance in adopted:
        attempts = store.attempts(run_id, instance)
        assert [(a.state, a.reason) for a in attempts] == [
            ("lost", "lost"),
            ("succeeded", "exited"),
        ]
        assert "before this run adopted it" in (attempts[0].detail or "")
    store.close()


def test_a_service_that_an_engine_restart_stopped_is_started_again(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    path = write(
        tmp_path,
        f"""
version: 1
name: svc
services:
  db: {{image: {IMAGE}, command: "sleep 1000"}}
steps:
  load: {{image: {IMAGE}, services: [db], command: "echo loaded > /out/x"}}
""",
    )
    runtime.inject("load", Fault(engine_restart=True))
    store, _ = run_once(path, runtime, [], "svc")
    assert store.run("svc").state == "succeeded"
    assert [a.state for a in store.attempts("svc", "load")] == ["lost", "succeeded"]
    assert runtime.started_instances.count("") == 2  # the service, started again once


def test_an_engine_away_longer_than_the_patience_stops_the_run_with_a_message(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.inject("s0[0]", Fault(engine_restart=True))
    path = write(tmp_path, pipeline_text(width=1, depth=1, retries=0))
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    with pytest.raises(EngineUnavailable, match=r"did not answer for .*\(DOCKYARD_ENGINE_PATIENCE"):
        Executor(
            pf, runtime, store, ports=local_ports(pf), sleep=lambda s: None, engine_patience=0.0
        ).run()
    (run,) = store.runs()
    assert run.state == "interrupted"
    store.close()


def test_status_says_how_long_the_engine_was_away_and_what_it_cost(
    tmp_path: Path, runtime: FakeRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime.inject("s0[0]", Fault(engine_restart=True))
    path = write(tmp_path, pipeline_text(width=2, depth=1, retries=0))
    run_once(path, runtime, [], "shown")[0].close()
    capsys.readouterr()
    assert main(["status", "-f", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "the container engine was away 1 time (" in shown
    assert "1 attempt was lost and rerun without using a retry" in shown


# -- the patient runtime on its own --------------------------------------------------------


def guard_for(runtime: FakeRuntime, events: list[Event] | None = None) -> EngineGuard:
    naps: list[float] = []
    return EngineGuard(
        runtime.ping,
        60.0,
        clock=lambda: 0.0,
        sleep=comes_back(runtime, naps),  # type: ignore[arg-type]
        notify=(events if events is not None else []).append,
    )


def spec(attempt: str = "1") -> ContainerSpec:
    return ContainerSpec(
        image=IMAGE,
        command=("sh", "-c", "true"),
        cpus=1.0,
        memory=16 * 1024**2,
        labels={LABEL_INSTANCE: "x", "dockyard.attempt": attempt},
        name=f"x-{attempt}",
    )


def test_a_create_whose_answer_was_lost_finds_its_container_instead_of_making_another(
    runtime: FakeRuntime,
) -> None:
    original = runtime.create

    def create_then_go_away(made: ContainerSpec) -> str:
        original(made)
        runtime.reachable = False
        raise EngineUnavailable("the answer was lost")

    runtime.create = create_then_go_away  # type: ignore[method-assign]
    patient = PatientRuntime(runtime, guard_for(runtime))
    container_id = patient.create(spec())
    assert list(runtime.containers) == [container_id]


def test_a_start_after_an_outage_never_runs_a_container_twice(runtime: FakeRuntime) -> None:
    patient = PatientRuntime(runtime, guard_for(runtime))
    container_id = patient.create(spec())
    original = runtime.start

    def start_then_go_away(started: str) -> None:
        original(started)
        runtime.reachable = False
        raise EngineUnavailable("the answer was lost")

    runtime.start = start_then_go_away  # type: ignore[method-assign]
    patient.start(container_id)
    assert runtime.started == [container_id]


def test_threads_waiting_for_the_engine_see_one_outage_reported_once(
    runtime: FakeRuntime,
) -> None:
    events: list[Event] = []
    gate = threading.Barrier(3)

    def sleep(seconds: float) -> None:
        gate.wait(timeout=10)  # all three are waiting before the engine comes back
        runtime.reachable = True

    guard = EngineGuard(runtime.ping, 60.0, clock=lambda: 5.0, sleep=sleep, notify=events.append)
    runtime.reachable = False
    workers = [threading.Thread(target=guard.call, args=(runtime.ping,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert [e.detail["state"] for e in events] == ["away", "back"]
    assert guard.away_between(4.0, 6.0) and not guard.away_between(6.5, 7.0)


def test_a_service_started_early_that_a_restart_stopped_is_started_again_for_its_step(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    path = write(
        tmp_path,
        f"""
version: 1
name: svc
services:
  db: {{image: {IMAGE}, command: "sleep 1000"}}
steps:
  make: {{image: {IMAGE}, command: "echo made > /out/x"}}
  load: {{image: {IMAGE}, needs: [make], services: [db], command: "echo loaded > /out/x"}}
""",
    )
    runtime.inject("make", Fault(engine_restart=True))  # while db was still starting
    store, _ = run_once(path, runtime, [], "early")
    assert store.run("early").state == "succeeded"
    assert [a.state for a in store.attempts("early", "load")] == ["succeeded"]
    assert runtime.started_instances.count("") == 2  # the service, started again once


def test_a_timed_out_wait_that_met_an_outage_while_stopping_still_says_timed_out(
    runtime: FakeRuntime,
) -> None:
    now = [0.0]
    guard = EngineGuard(
        runtime.ping,
        60.0,
        clock=lambda: now[0],
        sleep=lambda seconds: setattr(runtime, "reachable", True),
    )
    patient = PatientRuntime(runtime, guard)
    container_id = patient.create(spec())
    patient.start(container_id)
    original = runtime.wait
    calls: list[float | None] = []

    def wait(waited: str, timeout: float | None = None) -> ExitStatus:
        calls.append(timeout)
        if len(calls) == 1:  # the timeout passed; the engine went while it stopped the step
            now[0] = 31.0
            runtime.reachable = False
            raise EngineUnavailable("connection reset")
        return ExitStatus(143)  # stopped by that stop: found ended on the second wait

    runtime.wait = wait  # type: ignore[method-assign]
    status = patient.wait(container_id, timeout=30.0)
    assert status.timed_out and status.exit_code == 143
    assert calls[0] == 30.0 and calls[1] is not None and calls[1] < 0.01
    runtime.wait = original  # type: ignore[method-assign]
