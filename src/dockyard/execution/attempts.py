"""One attempt on a worker thread: create (or adopt) a container, start it, wait, keep its
logs and usage, hand the result to the reconcile loop, and remove the container only once
the loop has acknowledged (committed) it. Also how an ended attempt is classified."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.disk.sealing import Sealed
from dockyard.errors import DockyardError
from dockyard.events import Event
from dockyard.execution import cgroups
from dockyard.execution.feed import Wake
from dockyard.execution.ports import (
    NodeUnavailable,
    OutputStore,
    Staging,
    VolumeBackend,
    Workspace,
)
from dockyard.planning.actions import Outcome, Reason, committable
from dockyard.planning.graph import InstanceId
from dockyard.runtime.base import Bind, ContainerSpec, ExitStatus, Runtime
from dockyard.runtime.patient import EngineGuard

# How soon after the engine came back an exit by a signal is still read as its doing: each
# waiting thread sees the engine back within its probe backoff (at most a few seconds).
RECENT_OUTAGE_SECONDS = 10.0
# How an engine's stop ends a container: its stop signal (SIGTERM unless the image says
# otherwise: SIGINT, SIGQUIT and SIGHUP are common), then SIGKILL after a grace period.
STOP_SIGNALS = frozenset(
    {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL, signal.SIGTERM}
)


@dataclass(frozen=True)
class Result:
    instance: InstanceId
    attempt: int
    container_id: str | None
    status: ExitStatus | None
    error: DockyardError | None
    ended_at: float
    # Why a death by a signal may not be the step's doing: the engine was away while it ran
    # (and a restarting engine stops its containers), or it had ended before this run adopted
    # it. None: the engine stayed, and dockyard watched it throughout.
    unwatched: str | None
    ack: threading.Event
    usage: cgroups.Usage
    sealed: Sealed | None = None  # its /out made plain data and hashed, after an exit 0


@dataclass(frozen=True)
class FromHere:
    """A bind whose source is a file or folder of this machine (an input, the stream
    helper): the workspace provides it on the attempt's node before the container is made
    (the path itself on one machine, the node's copy on a cluster)."""

    path: Path
    target: str


@dataclass(frozen=True)
class Order:
    """One attempt for a worker: run ``spec`` (its ``/out`` at ``staging``, made first),
    or watch the adopted ``container_id`` (which writes into ``staging`` already)."""

    instance: InstanceId
    attempt: int
    spec: ContainerSpec | None
    container_id: str | None
    timeout: float | None
    staging: Staging
    log: Path
    exited: bool = False  # adopted after it had already ended
    needs: tuple[str, ...] = ()  # committed outputs it reads, to be brought to its node
    from_here: tuple[FromHere, ...] = ()  # binds of this machine's files, beside spec's
    # (volume, mount path, read-only, the version its key holds)
    volumes: tuple[tuple[str, str, bool, str | None], ...] = ()
    seeds: tuple[FromHere, ...] = ()  # this machine's files copied into /out before the start
    success_codes: tuple[int, ...] = (0,)  # the exit statuses that are a success


@dataclass(frozen=True)
class Notice:
    event: Event


class AttemptRunner:
    """What worker threads run; results go to ``results`` for the loop's thread.

    ``runtime`` rides out engine outages (a :class:`~dockyard.runtime.patient.PatientRuntime`
    over ``guard``), so a call here fails with :class:`EngineUnavailable` only once the
    patience is spent.
    """

    def __init__(
        self,
        runtime: Runtime,
        guard: EngineGuard,
        ports: tuple[Workspace, OutputStore],
        results: queue.Queue[Result | Notice | Wake],
        clock: Callable[[], float],
        volumes: VolumeBackend | None = None,
    ):
        self.runtime = runtime
        self.volumes = volumes
        self.guard = guard
        self.workspace, self.outputs = ports
        self.results = results
        self.clock = clock
        self.abandoned = False  # set when a run is abandoned: leave containers as they are
        self.killed: set[str] = set()  # containers the loop killed (its signal, not the engine's)
        # Kills asked for by attempt, and the container each attempt has so far: a kill that
        # comes before its container exists (or runs) is carried out once it does.
        self._lock = threading.Lock()
        self._kill_asked: set[tuple[InstanceId, int]] = set()
        self._containers: dict[tuple[InstanceId, int], str] = {}

    def kill(self, instance: InstanceId, attempt: int) -> None:
        """Kill this attempt's container now, or as soon as it has one that runs."""
        with self._lock:
            self._kill_asked.add((instance, attempt))
            container_id = self._containers.get((instance, attempt))
        if container_id is not None:
            self._kill(container_id)

    def _kill(self, container_id: str) -> None:
        self.killed.add(container_id)
        self.runtime.kill(container_id)  # (one that has not started yet is killed after start)

    def _track(self, key: tuple[InstanceId, int], container_id: str) -> bool:
        """Remember the attempt's container; True if a kill was already asked for."""
        with self._lock:
            self._containers[key] = container_id
            return key in self._kill_asked

    def _forget(self, key: tuple[InstanceId, int]) -> None:
        with self._lock:
            self._containers.pop(key, None)
            self._kill_asked.discard(key)

    def _engine_was_just_away(self) -> bool:
        """Whether the engine was away shortly before now: a wait made again once the engine is
        back returns at once for a container that ended while it was away, but blocks for one
        that lived through the restart (live-restore) and ended on its own later, which is the
        step's own result whatever signal ended it."""
        now = self.clock()
        return self.guard.away_between(now - RECENT_OUTAGE_SECONDS, now)

    def _on_its_node(self, order: Order, spec: ContainerSpec) -> ContainerSpec:
        """Bring what the container reads to the node it runs on: the committed outputs it
        reads, this machine's files it binds (they become the node's copies), and the
        volumes it mounts."""
        node = order.staging.node
        if order.needs:
            self.outputs.bring(order.needs, node)
        if not order.from_here and not order.volumes:
            return spec
        binds = list(spec.binds)
        binds += [Bind(self.workspace.provide(f.path, node), f.target) for f in order.from_here]
        if order.volumes:
            assert self.volumes is not None, "an attempt that mounts volumes needs their port"
            binds += [
                self.volumes.mount(v, path, ro, node, at) for v, path, ro, at in order.volumes
            ]
        return dataclasses.replace(spec, binds=tuple(binds))

    def _settle(self, order: Order) -> None:
        """What the attempt wrote in its volumes is their content before it is reported
        (its dependents' keys name that content)."""
        for volume, _, readonly, _ in order.volumes:
            if not readonly and self.volumes is not None:
                self.volumes.settle(volume)

    def run(self, order: Order) -> None:
        """Worker thread: one attempt, from create (or adoption) to remove. Never raises."""
        iid, spec, container_id = order.instance, order.spec, order.container_id
        key = (iid, order.attempt)
        status: ExitStatus | None = None
        error: DockyardError | None = None
        sealed: Sealed | None = None
        usage = cgroups.Usage()
        unwatched = "it had ended before this run adopted it" if order.exited else None
        try:
            if container_id is None:
                assert spec is not None
                spec = self._on_its_node(order, spec)
                self.workspace.make(order.staging)
                if order.seeds:
                    self.workspace.seed(order.staging, [(f.path, f.target) for f in order.seeds])
                container_id = self.runtime.create(spec)
                self._track(key, container_id)
                self.runtime.start(container_id)
                # Asked before it ran (a kill of a created container does nothing): now.
                with self._lock:
                    late_kill = key in self._kill_asked
                if late_kill:
                    self._kill(container_id)
            elif self._track(key, container_id):
                self._kill(container_id)  # an adopted one, whose partner failed already
            status = self.runtime.wait(container_id, order.timeout)
            self._settle(order)
            if (
                unwatched is None
                and _by_signal(status)
                and container_id not in self.killed
                and (self._engine_was_just_away() or self.guard.going_away())
            ):
                unwatched = "the container engine restarted while it ran"
            if spec is not None and spec.cgroup_parent is not None:
                usage = cgroups.read_usage(spec.cgroup_parent)
            logs = self.runtime.logs(container_id)
            if logs:  # an attempt that printed nothing has no file (one fewer per instance)
                order.log.parent.mkdir(parents=True, exist_ok=True)
                order.log.write_bytes(logs)
            if committable(_of_exit(status, unwatched), last=False, success=order.success_codes):
                # Beside the loop, the slow part of committing: the loop only renames.
                try:
                    sealed = self.outputs.seal(order.staging)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise  # (a real failure: reported as this attempt's error)
        except DockyardError as exc:
            error = exc
        except Exception as exc:  # an unexpected engine answer or a bug: fail this attempt
            error = DockyardError(f"{type(exc).__name__}: {exc}")
        ack = threading.Event()
        self.results.put(
            Result(
                iid,
                order.attempt,
                container_id,
                status,
                error,
                self.clock(),
                unwatched,
                ack,
                usage,
                sealed,
            )
        )
        ack.wait()
        self._forget(key)
        if container_id is not None and not self.abandoned:
            # On failure, the sweep by label at the end of the run removes it.
            with contextlib.suppress(DockyardError):
                self.runtime.remove(container_id)
            if spec is not None and spec.cgroup_parent is not None:
                cgroups.remove(spec.cgroup_parent)


def _by_signal(status: ExitStatus) -> bool:
    """Ended by a signal an engine stops containers with (exit 128 + its number, as a shell
    reports it), and not by the kernel for memory or by dockyard for time."""
    return (
        status.exit_code is not None
        and status.exit_code - 128 in STOP_SIGNALS
        and not status.oom_killed
        and not status.timed_out
    )


def outcome(result: Result) -> Outcome:
    if isinstance(result.error, NodeUnavailable):  # its node's store failed it, not its step
        return Outcome(None, Reason.LOST, str(result.error))
    if result.error is not None or result.status is None:
        return Outcome(None, Reason.ENGINE, str(result.error or "no exit status"))
    return _of_exit(result.status, result.unwatched)


def _of_exit(status: ExitStatus, unwatched: str | None) -> Outcome:
    """What an exit means (also on the worker, before the result exists: whether to seal)."""
    if status.timed_out:
        return Outcome(status.exit_code, Reason.TIMEOUT, "stopped after its timeout")
    if status.oom_killed:
        return Outcome(status.exit_code, Reason.OOM, "killed by the kernel: memory limit")
    if status.exit_code is None:
        return Outcome(None, Reason.LOST, status.error or "the container disappeared")
    if unwatched is not None and _by_signal(status):
        # Most likely stopped by the engine (its shutdown, or its restart without
        # live-restore), not by the step itself: rerun it, without using a retry.
        return Outcome(
            status.exit_code,
            Reason.LOST,
            f"stopped by signal {status.exit_code - 128}: {unwatched}",
        )
    return Outcome(status.exit_code, Reason.EXITED, status.error or "")
