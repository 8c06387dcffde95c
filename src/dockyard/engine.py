"""The reconcile loop: the only place where a run has side effects.

It asks the pure planner what to do, starts attempts on worker threads (one
per running container: create, start, wait, keep logs, remove), and applies
their results in the loop's own thread, which alone writes the state store.
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from dockyard.errors import DockyardError, EngineUnavailable, PlanError, RunFailed
from dockyard.graph import Graph, Instance, InstanceId, expand
from dockyard.images import image_key, resolve_images
from dockyard.outputs import commit, discard
from dockyard.plan import Block, Observed, Outcome, Phase, Reason, Start, after_attempt, plan
from dockyard.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_INSTANCE,
    LABEL_PIPELINE,
    LABEL_RUN,
    Bind,
    ContainerSpec,
    ExitStatus,
    Runtime,
)
from dockyard.schedule import Capacity
from dockyard.spec.checks import scatter_values
from dockyard.spec.loader import PipelineFile
from dockyard.store import RunRow, Store
from dockyard.units import format_memory

Clock = Callable[[], float]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class RunOptions:
    max_cpus: float | None = None
    max_memory: int | None = None
    no_cache: bool = False
    keep_going: bool = False


@dataclass(frozen=True)
class Event:
    kind: str  # run-started | image | started | succeeded | retrying | failed | blocked | run-ended
    at: float
    instance: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


def _ignore(event: Event) -> None:
    pass


@dataclass(frozen=True)
class _Result:
    instance: InstanceId
    attempt: int
    container_id: str | None
    status: ExitStatus | None
    error: DockyardError | None
    ended_at: float


def graph_of(pf: PipelineFile) -> Graph:
    scatter = {name: scatter_values(step, pf.root) for name, step in pf.pipeline.steps.items()}
    return expand(pf.pipeline, scatter)


def pool_of(runtime: Runtime, options: RunOptions) -> Capacity:
    host = runtime.capacity()
    cpus = min(host.cpus, options.max_cpus) if options.max_cpus else host.cpus
    memory = min(host.memory, options.max_memory) if options.max_memory else host.memory
    return Capacity.of(cpus, memory)


def check_supported(pf: PipelineFile) -> None:
    """Refuse, before anything starts, the parts of the format this version cannot run yet."""
    pipeline = pf.pipeline
    missing = []
    if pipeline.services or any(s.services for s in pipeline.steps.values()):
        missing.append("services")
    if pipeline.volumes or any(s.volumes for s in pipeline.steps.values()):
        missing.append("named volumes")
    if any(s.stdin for s in pipeline.steps.values()):
        missing.append("stdin streaming")
    if missing:
        raise PlanError(
            f"{pf.path.name} uses {', '.join(missing)}, which this version of dockyard can "
            "validate but not run yet",
            pipeline=pipeline.name,
        )


def check_fits(graph: Graph, pool: Capacity) -> None:
    for instance in graph.instances.values():
        need = Capacity.of(instance.cpus, instance.memory)
        if not pool.fits(need):
            raise PlanError(
                f"step {instance.step!r} asks for {instance.cpus:g} CPUs and "
                f"{format_memory(instance.memory)} of memory, but the pool has "
                f"{pool.cpus:g} CPUs and {format_memory(pool.memory)}; lower its resources or "
                "raise --max-cpus/--max-memory",
                pipeline=graph.pipeline,
                step=instance.step,
            )


class Executor:
    def __init__(
        self,
        pf: PipelineFile,
        runtime: Runtime,
        store: Store,
        *,
        options: RunOptions | None = None,
        reporter: Reporter = _ignore,
        clock: Clock = time.time,
        new_id: Callable[[], str] = new_run_id,
    ):
        self.pf = pf
        self.runtime = runtime
        self.store = store
        self.options = options or RunOptions()
        self.report = reporter
        self.clock = clock
        self.new_id = new_id
        self.state_dir = pf.state_dir
        self.outputs_dir = self.state_dir / "outputs"
        self.results: queue.Queue[_Result] = queue.Queue()
        self.observed: dict[InstanceId, Observed] = {}
        self.outputs: dict[InstanceId, Path] = {}
        self.run_id = ""

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> str:
        """Run the pipeline to completion; return the run id or raise :class:`RunFailed`."""
        check_supported(self.pf)
        self.runtime.ping()
        graph = graph_of(self.pf)
        pool = pool_of(self.runtime, self.options)
        check_fits(graph, pool)
        notes: list[str] = []
        images = resolve_images(
            self.pf, (i.image for i in graph.instances.values()), self.runtime, notes
        )
        for note in notes:
            self.report(Event("image", self.clock(), detail={"message": note}))

        self.run_id = self.new_id()
        self.store.create_run(
            RunRow(
                self.run_id,
                graph.pipeline,
                _file_sha256(self.pf.path),
                "running",
                self.clock(),
                None,
                pool.cpus,
                pool.memory,
                None,
            ),
            [(str(iid), iid.step) for iid in graph.order],
        )
        self.report(
            Event(
                "run-started",
                self.clock(),
                detail={
                    "run": self.run_id,
                    "instances": len(graph.order),
                    "cpus": pool.cpus,
                    "memory": pool.memory,
                },
            )
        )
        self.observed = {iid: Observed() for iid in graph.order}
        workers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dockyard-attempt")
        state, message = "failed", None
        try:
            self._loop(graph, pool, images, workers)
            failed = [str(i) for i, s in self.observed.items() if s.phase is Phase.FAILED]
            state = "failed" if failed else "succeeded"
            if failed:
                message = f"{len(failed)} instance(s) failed"
                raise RunFailed(self.run_id, failed, pipeline=graph.pipeline)
        except KeyboardInterrupt:
            state, message = "interrupted", "interrupted by a signal"
            raise
        except EngineUnavailable as exc:
            state, message = "failed", exc.message
            raise
        finally:
            self._remove_leftovers()
            workers.shutdown(wait=True, cancel_futures=True)
            self._drain_after_abort()
            self.store.finish_run(self.run_id, state, self.clock(), message)
            self.report(
                Event("run-ended", self.clock(), detail={"run": self.run_id, "state": state})
            )
        return self.run_id

    def _loop(
        self, graph: Graph, pool: Capacity, images: dict[str, str], workers: ThreadPoolExecutor
    ) -> None:
        while True:
            now = self.clock()
            step = plan(graph, self.observed, pool, now, keep_going=self.options.keep_going)
            for action in step.actions:
                if isinstance(action, Block):
                    self._block(action)
                elif isinstance(action, Start):
                    self._launch(graph.instances[action.instance], action, images, workers)
            if step.finished:
                return
            timeout = None if step.wake_at is None else max(0.0, step.wake_at - self.clock())
            try:
                result = self.results.get(timeout=timeout)
            except queue.Empty:
                continue
            self._apply(graph, pool, result)
            while True:  # apply everything else that is already done before replanning
                try:
                    self._apply(graph, pool, self.results.get_nowait())
                except queue.Empty:
                    break

    # -- actions ------------------------------------------------------------------------------

    def _block(self, action: Block) -> None:
        self.observed[action.instance] = replace(
            self.observed[action.instance], phase=Phase.BLOCKED
        )
        self.store.set_instance(
            self.run_id,
            str(action.instance),
            state="blocked",
            reason=f"upstream {action.because} failed",
        )
        self.report(
            Event("blocked", self.clock(), str(action.instance), {"because": str(action.because)})
        )

    def _launch(
        self, instance: Instance, action: Start, images: dict[str, str], workers: ThreadPoolExecutor
    ) -> None:
        iid = instance.id
        name = str(iid)
        staging = self._staging(iid, action.attempt)
        log_path = self.state_dir / "logs" / self.run_id / f"{_safe(name)}.{action.attempt}.log"
        spec = ContainerSpec(
            image=images[image_key(instance.image)],
            command=instance.command,
            cpus=instance.cpus,
            memory=action.memory,
            env=dict(instance.env),
            binds=self._binds(instance, staging),
            labels={
                LABEL_PIPELINE: self.pf.pipeline.name,
                LABEL_RUN: self.run_id,
                LABEL_INSTANCE: name,
                LABEL_ATTEMPT: str(action.attempt),
            },
            name=_container_name(self.pf.pipeline.name, self.run_id, name, action.attempt),
        )
        now = self.clock()
        self.store.start_attempt(
            self.run_id, name, action.attempt, instance.cpus, action.memory, now, str(log_path)
        )
        self.observed[iid] = replace(
            self.observed[iid],
            phase=Phase.RUNNING,
            attempts=action.attempt,
            memory=action.memory,
            retry_at=None,
        )
        self.report(Event("started", now, name, {"attempt": action.attempt}))
        workers.submit(self._attempt, iid, action.attempt, spec, instance.timeout, log_path)

    def _attempt(
        self,
        iid: InstanceId,
        attempt: int,
        spec: ContainerSpec,
        timeout: float | None,
        log_path: Path,
    ) -> None:
        """Worker thread: one container from create to remove. Never raises."""
        container_id: str | None = None
        status: ExitStatus | None = None
        error: DockyardError | None = None
        try:
            container_id = self.runtime.create(spec)
            self.runtime.start(container_id)
            status = self.runtime.wait(container_id, timeout)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(self.runtime.logs(container_id))
        except DockyardError as exc:
            error = exc
        except Exception as exc:  # a bug or an unexpected engine answer: fail the attempt
            error = DockyardError(f"{type(exc).__name__}: {exc}")
        finally:
            if container_id is not None:
                try:
                    self.runtime.remove(container_id)
                except DockyardError as exc:
                    error = error or exc
            self.results.put(_Result(iid, attempt, container_id, status, error, self.clock()))

    def _apply(self, graph: Graph, pool: Capacity, result: _Result) -> None:
        iid, name = result.instance, str(result.instance)
        if isinstance(result.error, EngineUnavailable):
            raise result.error
        outcome = _outcome(result)
        staging = self._staging(iid, result.attempt)
        fields: dict[str, Any] = {
            "container_id": result.container_id,
            "ended_at": result.ended_at,
            "exit_code": outcome.exit_code,
            "reason": outcome.reason.value,
            "detail": outcome.detail or None,
        }
        if outcome.ok:
            committed = commit(staging, self.outputs_dir)
            with self.store.transaction():
                self.store.record_output(
                    committed.digest,
                    str(committed.path),
                    committed.size,
                    committed.files,
                    result.ended_at,
                )
                self.store.end_attempt(
                    self.run_id, name, result.attempt, state="succeeded", **fields
                )
                self.store.set_instance(
                    self.run_id, name, state="succeeded", output=committed.digest, reason=None
                )
            self.outputs[iid] = committed.path
            self.observed[iid] = replace(self.observed[iid], phase=Phase.SUCCEEDED, reason=None)
            self.report(Event("succeeded", result.ended_at, name, {"output": committed.digest}))
            return
        discard(staging)
        seen = after_attempt(graph.instances[iid], self.observed[iid], outcome, self.clock(), pool)
        self.observed[iid] = seen
        final = seen.phase is Phase.FAILED
        with self.store.transaction():
            self.store.end_attempt(self.run_id, name, result.attempt, state="failed", **fields)
            self.store.set_instance(
                self.run_id, name, state="failed" if final else "pending", reason=_describe(outcome)
            )
        detail = {
            "attempt": result.attempt,
            "reason": outcome.reason.value,
            "exit_code": outcome.exit_code,
            "message": _describe(outcome),
        }
        self.report(Event("failed" if final else "retrying", result.ended_at, name, detail))

    # -- helpers ------------------------------------------------------------------------------

    def _staging(self, iid: InstanceId, attempt: int) -> Path:
        return self.state_dir / "work" / self.run_id / f"{_safe(str(iid))}.{attempt}" / "out"

    def _binds(self, instance: Instance, staging: Path) -> tuple[Bind, ...]:
        if staging.exists():
            discard(staging)
        staging.mkdir(parents=True)
        staging.chmod(0o777)  # the image may run as any user; the parent stays private
        staging.parent.parent.chmod(0o700)
        binds = [Bind(str(staging), "/out", readonly=False)]
        for mount in instance.upstream:
            binds.append(Bind(str(self.outputs[mount.source]), mount.target))
        for name, rel in instance.inputs:
            binds.append(Bind(str((self.pf.root / rel).resolve()), f"/in/{name}"))
        return tuple(binds)

    def _remove_leftovers(self) -> None:
        """However the loop ended, no container of this run may remain."""
        try:
            for container in self.runtime.list({LABEL_RUN: self.run_id}):
                self.runtime.remove(container.id)
        except DockyardError:
            pass

    def _drain_after_abort(self) -> None:
        for iid, seen in self.observed.items():
            if seen.phase is Phase.RUNNING:
                self.store.set_instance(self.run_id, str(iid), state="interrupted")
                self.store.end_attempt(
                    self.run_id, str(iid), seen.attempts, state="interrupted", ended_at=self.clock()
                )
        work = self.state_dir / "work" / self.run_id
        if work.exists():
            discard(work)


def _outcome(result: _Result) -> Outcome:
    if result.error is not None or result.status is None:
        return Outcome(None, Reason.ENGINE, str(result.error or "no exit status"))
    status = result.status
    if status.timed_out:
        return Outcome(status.exit_code, Reason.TIMEOUT, "stopped after its timeout")
    if status.oom_killed:
        return Outcome(status.exit_code, Reason.OOM, "killed by the kernel: memory limit")
    if status.exit_code is None:
        return Outcome(None, Reason.LOST, status.error or "the container disappeared")
    return Outcome(status.exit_code, Reason.EXITED, status.error or "")


def _describe(outcome: Outcome) -> str:
    if outcome.reason is Reason.EXITED:
        return f"exited with status {outcome.exit_code}"
    if outcome.reason is Reason.OOM:
        return "out of memory: killed by the kernel at its memory limit"
    if outcome.reason is Reason.TIMEOUT:
        return "timed out"
    return outcome.detail or outcome.reason.value


_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def _safe(text: str) -> str:
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _container_name(pipeline: str, run_id: str, instance: str, attempt: int) -> str:
    return f"dockyard-{pipeline}-{run_id}-{_safe(instance)}-{attempt}"


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clear_work(state_dir: Path) -> None:
    shutil.rmtree(state_dir / "work", ignore_errors=True)
