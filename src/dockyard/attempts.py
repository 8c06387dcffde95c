"""One attempt on a worker thread: create (or adopt) a container, start it, wait, keep its
logs and usage, hand the result to the reconcile loop, and remove the container only once
the loop has acknowledged (committed) it. Also how an ended attempt is classified."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dockyard import cgroups
from dockyard.errors import DockyardError, EngineUnavailable
from dockyard.events import Event
from dockyard.graph import InstanceId
from dockyard.plan import Outcome, Reason
from dockyard.runtime.base import ContainerSpec, ExitStatus, Runtime
from dockyard.units import format_memory, format_seconds

T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    instance: InstanceId
    attempt: int
    container_id: str | None
    status: ExitStatus | None
    error: DockyardError | None
    ended_at: float
    outage: bool  # the engine was unreachable at some point during the attempt
    ack: threading.Event
    usage: cgroups.Usage


@dataclass(frozen=True)
class Notice:
    event: Event


class AttemptRunner:
    """What worker threads run; results go to ``results`` for the loop's thread."""

    def __init__(
        self,
        runtime: Runtime,
        results: queue.Queue[Result | Notice],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        engine_patience: float,
    ):
        self.runtime = runtime
        self.results = results
        self.clock = clock
        self.sleep = sleep
        self.engine_patience = engine_patience
        self.abandoned = False  # set when a run is abandoned: leave containers as they are

    def run(
        self,
        iid: InstanceId,
        attempt: int,
        spec: ContainerSpec | None,
        container_id: str | None,
        timeout: float | None,
        log_path: Path,
    ) -> None:
        """Worker thread: one attempt, from create (or adoption) to remove. Never raises."""
        status: ExitStatus | None = None
        error: DockyardError | None = None
        usage = cgroups.Usage()
        outage: list[bool] = []
        try:
            if container_id is None:
                assert spec is not None
                container_id = self.patiently(lambda: self.runtime.create(spec), outage)
                started = container_id
                self.patiently(lambda: self.runtime.start(started), outage)
            waiting = container_id
            status = self.patiently(lambda: self.runtime.wait(waiting, timeout), outage)
            if spec is not None and spec.cgroup_parent is not None:
                usage = cgroups.read_usage(spec.cgroup_parent)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(self.patiently(lambda: self.runtime.logs(waiting), outage))
        except DockyardError as exc:
            error = exc
        except Exception as exc:  # an unexpected engine answer or a bug: fail this attempt
            error = DockyardError(f"{type(exc).__name__}: {exc}")
        ack = threading.Event()
        self.results.put(
            Result(
                iid, attempt, container_id, status, error, self.clock(), bool(outage), ack, usage
            )
        )
        ack.wait()
        if container_id is not None and not self.abandoned:
            # On failure, the sweep by label at the end of the run removes it.
            with contextlib.suppress(DockyardError):
                self.runtime.remove(container_id)
            if spec is not None and spec.cgroup_parent is not None:
                cgroups.remove(spec.cgroup_parent)

    def patiently(self, call: Callable[[], T], outage: list[bool]) -> T:
        """Retry ``call`` while the engine is unreachable, for at most ``engine_patience``."""
        deadline: float | None = None
        delay = 0.5
        while True:
            try:
                return call()
            except EngineUnavailable as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.engine_patience
                    outage.append(True)
                    self.results.put(
                        Notice(
                            Event(
                                "engine",
                                self.clock(),
                                detail={
                                    "message": f"{exc.message}; waiting up to "
                                    f"{format_seconds(self.engine_patience)} for it"
                                },
                            )
                        )
                    )
                if now >= deadline or self.abandoned:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, 5.0)


def outcome(result: Result) -> Outcome:
    if result.error is not None or result.status is None:
        return Outcome(None, Reason.ENGINE, str(result.error or "no exit status"))
    status = result.status
    if status.timed_out:
        return Outcome(status.exit_code, Reason.TIMEOUT, "stopped after its timeout")
    if status.oom_killed:
        return Outcome(status.exit_code, Reason.OOM, "killed by the kernel: memory limit")
    if status.exit_code is None:
        return Outcome(None, Reason.LOST, status.error or "the container disappeared")
    if status.exit_code != 0 and result.outage:
        # The engine went away while this ran; a restarting engine kills its containers.
        return Outcome(status.exit_code, Reason.LOST, "the engine restarted while it ran")
    return Outcome(status.exit_code, Reason.EXITED, status.error or "")


def describe(outcome: Outcome, memory: int) -> str:
    if outcome.reason is Reason.EXITED:
        return f"exited with status {outcome.exit_code}"
    if outcome.reason is Reason.OOM:
        return (
            f"out of memory: killed by the kernel at its {format_memory(memory)} limit "
            f"(exit {outcome.exit_code})"
        )
    if outcome.reason is Reason.TIMEOUT:
        return "timed out"
    return outcome.detail or outcome.reason.value
