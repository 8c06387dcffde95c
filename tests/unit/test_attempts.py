"""The worker side of an attempt: kills that race its container's creation, and exits by a
signal read against the engine's outages."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from dockyard.errors import EngineUnavailable
from dockyard.execution.attempts import (
    RECENT_OUTAGE_SECONDS,
    AttemptRunner,
    Notice,
    Order,
    Result,
)
from dockyard.planning.graph import InstanceId
from dockyard.runtime.base import LABEL_INSTANCE, ContainerSpec, ExitStatus
from dockyard.runtime.patient import EngineGuard
from dockyard.testing import FakeOutputs, FakeRuntime, FakeWorkspace

IMAGE = "sha256:" + "0" * 64


def _runner(
    tmp_path: Path, runtime: FakeRuntime
) -> tuple[AttemptRunner, queue.Queue[Result | Notice]]:
    results: queue.Queue[Result | Notice] = queue.Queue()
    guard = EngineGuard(runtime.ping, 60.0, clock=lambda: 0.0, sleep=lambda s: None)
    workspace, outputs = FakeWorkspace(tmp_path), FakeOutputs(tmp_path)
    return AttemptRunner(runtime, guard, (workspace, outputs), results, clock=lambda: 0.0), results


def _order(tmp_path: Path, iid: InstanceId, command: str) -> Order:
    spec = ContainerSpec(IMAGE, ("sh", "-c", command), 1.0, 2**20, {LABEL_INSTANCE: str(iid)})
    staging = FakeWorkspace(tmp_path).staging("run-1", str(iid), 1, "local")
    return Order(iid, 1, spec, None, None, staging, tmp_path / "log")


def _result(results: queue.Queue[Result | Notice]) -> Result:
    item = results.get(timeout=30)
    assert isinstance(item, Result)
    item.ack.set()
    return item


def test_a_kill_asked_before_the_container_exists_is_carried_out_once_it_runs(
    tmp_path: Path,
) -> None:
    # The partner failed while this member's worker had not yet created its container:
    # a kill by label would find nothing, and the member would run on (or hang on its pipe).
    runtime = FakeRuntime(time_scale=0.01, images={"busybox": IMAGE})
    runner, results = _runner(tmp_path, runtime)
    iid = InstanceId("consume")
    runner.kill(iid, 1)

    worker = threading.Thread(target=runner.run, args=(_order(tmp_path, iid, "sleep 500"),))
    worker.start()
    result = _result(results)
    worker.join(timeout=30)

    assert result.status is not None and result.status.exit_code == 137
    assert result.container_id in runner.killed  # dockyard's signal: not "the engine's"
    assert result.unwatched is None
    assert result.sealed is None


def test_a_kill_finds_the_running_container_of_its_attempt_only(tmp_path: Path) -> None:
    runtime = FakeRuntime(time_scale=0.01, images={"busybox": IMAGE})
    runner, results = _runner(tmp_path, runtime)
    iid, other = InstanceId("consume"), InstanceId("produce")
    runner.kill(other, 1)  # another attempt's kill leaves this one alone

    worker = threading.Thread(target=runner.run, args=(_order(tmp_path, iid, "true"),))
    worker.start()
    result = _result(results)
    worker.join(timeout=30)

    assert result.status is not None and result.status.exit_code == 0
    assert result.container_id not in runner.killed


def _sigterm_after_an_outage(tmp_path: Path, exit_at: float) -> Result:
    """An attempt whose container ends by SIGTERM ``exit_at`` seconds after an engine outage
    that it lived through (live-restore)."""
    runtime = FakeRuntime(images={"busybox": IMAGE})
    now = [0.0]
    guard = EngineGuard(runtime.ping, 60.0, clock=lambda: now[0], sleep=lambda s: None)
    results: queue.Queue[Result | Notice] = queue.Queue()
    workspace, outputs = FakeWorkspace(tmp_path), FakeOutputs(tmp_path)
    runner = AttemptRunner(runtime, guard, (workspace, outputs), results, clock=lambda: now[0])
    guard._went_away(EngineUnavailable("restarting"))
    guard._came_back()
    original = runtime.wait

    def wait(container_id: str, timeout: float | None = None) -> ExitStatus:
        original(container_id, timeout)
        now[0] = exit_at
        return ExitStatus(143)

    runtime.wait = wait  # type: ignore[method-assign]
    worker = threading.Thread(target=runner.run, args=(_order(tmp_path, InstanceId("s"), "x"),))
    worker.start()
    result = _result(results)
    worker.join(timeout=30)
    return result


def test_an_exit_by_signal_right_after_an_outage_is_the_engines_doing(tmp_path: Path) -> None:
    assert _sigterm_after_an_outage(tmp_path, 2.0).unwatched is not None


def test_an_exit_by_signal_long_after_the_engine_came_back_is_the_steps_own(
    tmp_path: Path,
) -> None:
    result = _sigterm_after_an_outage(tmp_path, 60.0 + RECENT_OUTAGE_SECONDS)
    assert result.unwatched is None
    assert result.status is not None and result.status.exit_code == 143
