"""The reconcile loop: the only place where a run has side effects.

Each turn it (1) settles instances whose result is already known (cache hits),
(2) asks the pure planner what to start, (3) hands each attempt to a worker
thread (create, start, wait, keep logs), and (4) applies finished attempts in the
loop's own thread, which alone writes the state store. A worker removes its
container only after the loop has committed the result, so a crash at any
moment leaves either a committed output or a container that the next run adopts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from dockyard import cgroups
from dockyard.attempts import AttemptRunner, Notice, Result, describe, outcome
from dockyard.cache import InputHasher, cache_key
from dockyard.errors import DockyardError, EngineUnavailable, PlanError, RunFailed
from dockyard.events import Event, Reporter, ignore
from dockyard.graph import Graph, Instance, InstanceId
from dockyard.images import image_key, packages_of, resolve_images
from dockyard.lock import RunLock
from dockyard.outputs import commit, discard, note_changes
from dockyard.plan import Block, Observed, Outcome, Phase, Reason, Start, after_attempt, plan
from dockyard.preflight import check_fits, graph_of, pool_of, project_id
from dockyard.run_volumes import RunVolumes
from dockyard.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_INSTANCE,
    LABEL_KEY,
    LABEL_PIPELINE,
    LABEL_PROJECT,
    LABEL_RUN,
    Bind,
    ContainerInfo,
    ContainerSpec,
    Runtime,
)
from dockyard.runtime.patient import EngineGuard, PatientRuntime
from dockyard.schedule import Capacity
from dockyard.services import LABEL_KEEP, Services
from dockyard.spec.loader import PipelineFile
from dockyard.spec.paths import resolve_input
from dockyard.store import RunRow, Store
from dockyard.stream import HELPER, SIGPIPE_EXIT, STREAM_DIR, helper_binary, make_fifos, wrap
from dockyard.units import format_memory

Clock = Callable[[], float]
T = TypeVar("T")
ENGINE_PATIENCE = float(os.environ.get("DOCKYARD_ENGINE_PATIENCE", "300"))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class Abandon(BaseException):
    """Stop at once as if the process had been killed: nothing is cleaned up.

    Crash tests raise it (from a reporter) to leave containers and the store exactly
    as SIGKILL would, then check that the next run recovers.
    """


@dataclass(frozen=True)
class RunOptions:
    max_cpus: float | None = None
    max_memory: int | None = None
    no_cache: bool = False
    keep_going: bool = False
    wait_for_volumes: bool = False


class Executor:
    def __init__(
        self,
        pf: PipelineFile,
        runtime: Runtime,
        store: Store,
        *,
        options: RunOptions | None = None,
        reporter: Reporter = ignore,
        clock: Clock = time.time,
        new_id: Callable[[], str] = new_run_id,
        sleep: Callable[[float], None] = time.sleep,
        engine_patience: float = ENGINE_PATIENCE,
    ):
        self.pf = pf
        self.engine = runtime  # as it is: before the run exists, an engine away is exit 3
        self.store = store
        self.options = options or RunOptions()
        self.reporter = reporter
        self.clock = clock
        self.new_id = new_id
        self.sleep = sleep
        self.state_dir = pf.state_dir
        self.outputs_dir = self.state_dir / "outputs"
        self.project = project_id(pf)
        self.results: queue.Queue[Result | Notice] = queue.Queue()
        self.observed: dict[InstanceId, Observed] = {}
        self.digests: dict[InstanceId, str] = {}
        self.paths: dict[InstanceId, Path] = {}
        self.keys: dict[InstanceId, str] = {}
        self.staging: dict[tuple[InstanceId, int], Path] = {}
        self.unresolved: list[InstanceId] = []
        self.futures: list[Future[None]] = []
        self.adopted: list[str] = []
        self.held: dict[tuple[InstanceId, int], dict[InstanceId, Result]] = {}
        self.killed: dict[tuple[InstanceId, int], InstanceId] = {}
        self.image_commands: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.cpu_pools: dict[tuple[InstanceId, int], str | None] = {}
        self.own_cgroups = False  # may dockyard make cgroups for the engine's containers?
        self.volumes = RunVolumes(pf)
        self.service_need = Capacity(0, 0)
        self.services: Services | None = None
        self.guard = EngineGuard(
            runtime.ping,
            engine_patience,
            clock=clock,
            sleep=sleep,
            notify=lambda event: self.results.put(Notice(event)),
        )
        # Once the run exists, every engine call waits out an engine that restarts.
        self.runtime: Runtime = PatientRuntime(runtime, self.guard)
        self.runner = AttemptRunner(self.runtime, self.guard, self.results, clock)
        self.run_id = ""

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> str:
        """Run the pipeline to completion; return the run id or raise :class:`RunFailed`."""
        self.engine.ping()
        self.own_cgroups = self.engine.shares_host_cgroups()
        graph = graph_of(self.pf)
        pool = pool_of(self.engine, self.options.max_cpus, self.options.max_memory)
        services = self._services_used(graph)
        check_fits(graph, pool, self.service_need)
        notes: list[Event] = []
        one_at_a_time = threading.Lock()  # images are made by several threads

        def note(message: str) -> None:  # shown now, recorded once the run exists
            with one_at_a_time:
                notes.append(Event("image", self.clock(), detail={"message": message}))
                self.report(notes[-1])

        images = resolve_images(
            self.pf,
            [i.image for i in graph.instances.values()]
            + [self.pf.pipeline.services[name].image for name in services],
            self.engine,
            note,
        )
        with RunLock(self.state_dir), contextlib.ExitStack() as held:
            # Before the run exists: a refusal leaves no trace.
            self.volumes.take(graph, held, wait=self.options.wait_for_volumes)
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
                    json.dumps(images, sort_keys=True),
                    json.dumps(packages_of(images, self.engine)),
                ),
                [(str(iid), iid.step) for iid in graph.order],
            )
            for event in notes:
                self.store.event(self.run_id, event.at, event.kind, None, event.detail)
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
            for event in self.volumes.snapshot_written("before", self.clock()):
                self.report(event)
            return self._run_locked(graph, pool, images)

    def _services_used(self, graph: Graph) -> list[str]:
        names = sorted({name for i in graph.instances.values() for name in i.services})
        for name in names:
            resources = self.pf.pipeline.services[name].resources
            # Reserved for the whole run, so that starting one never over-commits the pool.
            self.service_need = self.service_need + Capacity.of(resources.cpus, resources.memory)
        return names

    def _run_locked(self, graph: Graph, pool: Capacity, images: dict[str, str]) -> str:
        self.services = Services(
            self.runtime,
            self.pf.pipeline.services,
            images,
            self.volumes.live,
            {
                LABEL_PIPELINE: self.pf.pipeline.name,
                LABEL_PROJECT: self.project,
                LABEL_RUN: self.run_id,
            },
            prefix=f"dockyard-{self.pf.pipeline.name}-{self.run_id}",
            sleep=self.sleep,
            clock=self.clock,
            engine_away_since=lambda since: self.guard.away_between(since, self.clock()),
        )
        self.observed = {iid: Observed() for iid in graph.order}
        self.unresolved = list(graph.order)
        self.hasher = InputHasher(self.store, self.clock())
        # One thread per running container (threads start only when needed): never fewer
        # than what may run at once, or a streamed chain could wait on a queued partner.
        workers = ThreadPoolExecutor(
            max_workers=len(graph.order) + 1, thread_name_prefix="dockyard-attempt"
        )
        self.workers = workers
        try:
            orphans = self._recover()
            self._resolve(graph, images)
            self._start_services_early(graph)
            self._adopt(graph, orphans)
            self._loop(graph, pool, images)
        except Abandon:
            self.runner.abandoned = True
            self.guard.give_up()
            self._release_workers()
            workers.shutdown(wait=True)
            raise
        except KeyboardInterrupt:
            self.guard.give_up()  # clean up what can be, but never wait for an engine again
            self._finish("interrupted", "interrupted by a signal")
            raise
        except EngineUnavailable as exc:
            self.guard.give_up()
            self._finish("interrupted", exc.message)
            raise
        except BaseException as exc:
            self.guard.give_up()
            self._finish("failed", str(exc))
            raise
        failed = [str(i) for i, s in self.observed.items() if s.phase is Phase.FAILED]
        if not failed:
            # Nothing failed, yet the planner had nothing left it could start: that work can
            # never fit. (check_fits makes this unreachable today; never report it as success.)
            stuck = [i for i, s in self.observed.items() if s.phase is Phase.PENDING]
            for iid in stuck:
                self.store.set_instance(
                    self.run_id, str(iid), state="failed", reason="never fitted into the pool"
                )
            failed = [str(i) for i in stuck]
        self._finish(
            "failed" if failed else "succeeded",
            f"{len(failed)} instance(s) failed" if failed else None,
        )
        if failed:
            raise RunFailed(self.run_id, failed, pipeline=graph.pipeline)
        return self.run_id

    def _start_services_early(self, graph: Graph) -> None:
        """Start the services of steps that the cache did not answer, without waiting: a
        database initialises while the steps before its users work."""
        assert self.services is not None
        wanted = {
            name
            for iid, instance in graph.instances.items()
            if self.observed[iid].phase is Phase.PENDING
            for name in instance.services
        }
        self.services.start(tuple(sorted(wanted)))

    def _loop(self, graph: Graph, pool: Capacity, images: dict[str, str]) -> None:
        while True:
            self._resolve(graph, images)
            step = plan(
                graph,
                self.observed,
                pool - self.service_need,
                self.clock(),
                keep_going=self.options.keep_going,
            )
            for action in step.actions:
                if isinstance(action, Block):
                    self._block(action)
                elif isinstance(action, Start):
                    self._launch(graph, action, images)
            if step.finished:
                return
            timeout = None if step.wake_at is None else max(0.0, step.wake_at - self.clock())
            try:
                item = self.results.get(timeout=timeout)
            except queue.Empty:
                continue
            self._apply(graph, pool, item)
            while True:  # apply everything else that is already done before replanning
                try:
                    self._apply(graph, pool, self.results.get_nowait())
                except queue.Empty:
                    break

    def report(self, event: Event) -> None:
        """Record an event in the store and pass it to the reporter (loop thread only)."""
        if self.run_id:
            detail = {k: v for k, v in event.detail.items() if k != "run"} or None
            self.store.event(self.run_id, event.at, event.kind, event.instance, detail)
        self.reporter(event)

    # -- settling what is already known -------------------------------------------------------

    def _recover(self) -> list[ContainerInfo]:
        """Close the records of runs whose process died; return their containers."""
        for old in self.store.unfinished_runs():
            if old.id != self.run_id:
                self.store.mark_interrupted(
                    old.id,
                    self.clock(),
                    f"dockyard stopped without finishing; recovered by run {self.run_id}",
                )
                self.report(Event("recovered", self.clock(), detail={"run": old.id}))
        found = self.runtime.list(
            {LABEL_PIPELINE: self.pf.pipeline.name, LABEL_PROJECT: self.project}
        )
        return [c for c in found if c.labels.get(LABEL_RUN) != self.run_id]

    def _resolve(self, graph: Graph, images: dict[str, str]) -> None:
        """Compute the cache keys of units whose inputs are all known; reuse hits."""
        if not self.unresolved:
            return
        still: list[InstanceId] = []
        # One pass in topological order settles a whole chain of cache hits.
        with self.store.transaction():
            for iid in self.unresolved:
                unit = graph.group(iid)  # a streamed chain is settled as a unit, at its producer
                if unit[0] != iid:
                    continue
                ups = [
                    self.observed[m.source].phase
                    for member in unit
                    for m in graph.instances[member].upstream
                ]
                if all(p is Phase.SUCCEEDED for p in ups):
                    self._settle(graph, unit, images)
                elif not any(p in (Phase.FAILED, Phase.BLOCKED) for p in ups):
                    still.append(iid)  # (a unit with a failed upstream is blocked)
        self.unresolved = still
        self.hasher.flush()

    def _settle(self, graph: Graph, unit: tuple[InstanceId, ...], images: dict[str, str]) -> None:
        for iid in unit:
            instance = graph.instances[iid]
            inputs = [(n, self.hasher.digest(self._input_path(rel))) for n, rel in instance.inputs]
            upstream = [(m.target, self.digests[m.source]) for m in instance.upstream]
            upstream += self.volumes.read_keys(instance, self.hasher)
            if instance.stdin is not None:  # what streams in is known only by its key
                upstream.append(("stdin", self.keys[instance.stdin]))
            self.keys[iid] = cache_key(
                instance, images[image_key(instance.image)], inputs, upstream
            )
        hits: dict[InstanceId, tuple[str, str]] = {}
        if not self.options.no_cache and all(graph.instances[i].cacheable for i in unit):
            for iid in unit:
                hit = self.store.cache_get(self.keys[iid])
                if (
                    hit is not None
                    and Path(hit.path).is_dir()
                    and self.volumes.hold(hit.volumes, self.hasher)
                ):
                    hits[iid] = (hit.output, hit.path)
        if len(hits) < len(unit):  # a streamed chain is reused whole or not at all
            for iid in unit:
                self.store.set_instance(self.run_id, str(iid), cache_key=self.keys[iid])
            return
        for iid in unit:
            digest, path = hits[iid]
            self.store.set_instance(
                self.run_id,
                str(iid),
                cache_key=self.keys[iid],
                state="succeeded",
                cached=1,
                output=digest,
            )
            self.digests[iid], self.paths[iid] = digest, Path(path)
            self.observed[iid] = replace(self.observed[iid], phase=Phase.SUCCEEDED)
            self.report(Event("cached", self.clock(), str(iid), {"output": digest}))

    def _adopt(self, graph: Graph, orphans: list[ContainerInfo]) -> None:
        """Wait for the containers of a dead run that are still what this run needs."""
        by_key: dict[str, list[ContainerInfo]] = {}
        for container in orphans:
            if container.started:  # one that never started has nothing to wait for
                by_key.setdefault(container.labels.get(LABEL_KEY, ""), []).append(container)
        for head in graph.order:
            unit = graph.group(head)
            keys = [self.keys.get(iid) for iid in unit]
            if (
                unit[0] != head
                or any(k is None or k not in by_key for k in keys)
                or any(self.observed[iid].phase is not Phase.PENDING for iid in unit)
            ):
                continue  # a streamed chain is adopted whole or not at all
            for iid, key in zip(unit, keys, strict=True):
                assert key is not None
                candidates = sorted(by_key.pop(key), key=lambda c: int(c.labels[LABEL_ATTEMPT]))
                container = candidates.pop()
                instance = graph.instances[iid]
                old_run = container.labels[LABEL_RUN]
                old_attempt = int(container.labels[LABEL_ATTEMPT])
                staging = self._staging_path(old_run, iid, old_attempt)
                self._begin(instance, 1, instance.memory, staging, adopted_from=old_run)
                self.adopted.append(container.id)
                self._submit(
                    iid, 1, None, container.id, instance.timeout, exited=not container.running
                )
        adopted = set(self.adopted)
        for container in orphans:  # steps no longer needed, and earlier runs' services
            if container.id not in adopted:
                self.runtime.remove(container.id)
        for network in self.runtime.networks(
            {LABEL_PIPELINE: self.pf.pipeline.name, LABEL_PROJECT: self.project}
        ):
            if self.run_id not in network:
                with contextlib.suppress(DockyardError):  # still used by an adopted step
                    self.runtime.remove_network(network)

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

    def _launch(self, graph: Graph, action: Start, images: dict[str, str]) -> None:
        iid, name = action.instance, str(action.instance)
        instance = graph.instances[iid]
        network = None if instance.network else "none"
        if instance.services:
            assert self.services is not None
            failure = self.services.ensure(instance.services)
            if failure is not None:  # fail this attempt without a container
                staging = self._staging_path(self.run_id, iid, action.attempt)
                staging.mkdir(parents=True, exist_ok=True)
                self._begin(instance, action.attempt, action.memory, staging)
                self.results.put(
                    Result(
                        iid,
                        action.attempt,
                        None,
                        None,
                        DockyardError(failure),
                        self.clock(),
                        None,
                        threading.Event(),
                        cgroups.Usage(),
                    )
                )
                return
            network = self.services.network
        image = images[image_key(instance.image)]
        staging = self._staging_path(self.run_id, iid, action.attempt)
        binds = self._binds(instance, staging)
        entrypoint, command, pool = None, instance.command, None
        unit = graph.group(iid)
        if len(unit) > 1:
            pool = self._cpu_pool(graph, unit, action.attempt)
            folder = self._stream_folder(unit, action.attempt)
            make_fifos(folder, [_safe(str(m)) for m in unit[:-1]])
            binds += (
                Bind(str(folder), STREAM_DIR, readonly=False),
                Bind(str(helper_binary()), HELPER),
            )
            entrypoint = (HELPER,)
            command = wrap(
                self._argv(instance, image),
                reads=_safe(str(instance.stdin)) if instance.stdin is not None else None,
                writes=_safe(name) if iid != unit[-1] else None,
            )
        spec = ContainerSpec(
            image=image,
            command=command,
            entrypoint=entrypoint,
            network=network,
            cgroup_parent=self._accounting_parent(iid, action.attempt, pool),
            cpus=None if pool else instance.cpus,
            memory=action.memory,
            # Like Nextflow's task.attempt; not part of the cache key.
            env={**dict(instance.env), "DOCKYARD_ATTEMPT": str(action.attempt)},
            binds=binds,
            labels={
                LABEL_PIPELINE: self.pf.pipeline.name,
                LABEL_PROJECT: self.project,
                LABEL_RUN: self.run_id,
                LABEL_INSTANCE: name,
                LABEL_ATTEMPT: str(action.attempt),
                LABEL_KEY: self.keys[iid],
            },
            name=_container_name(self.pf.pipeline.name, self.run_id, name, action.attempt),
            pids=instance.pids,
            cap_add=instance.cap_add,
        )
        self._begin(instance, action.attempt, action.memory, staging)
        self._submit(iid, action.attempt, spec, None, instance.timeout)

    def _cpu_pool(self, graph: Graph, unit: tuple[InstanceId, ...], attempt: int) -> str | None:
        """One CPU quota for a whole streamed chain, where the engine's cgroups are ours."""
        key = (unit[-1], attempt)
        if key not in self.cpu_pools:
            cpus = sum(graph.instances[m].cpus for m in unit)
            name = f"{self.project}-{self.run_id}-{_safe(str(unit[-1]))}-{attempt}"
            self.cpu_pools[key] = cgroups.create_pool(name, cpus) if self.own_cgroups else None
        return self.cpu_pools[key]

    def _accounting_parent(self, iid: InstanceId, attempt: int, pool: str | None) -> str | None:
        if not self.own_cgroups:
            return None
        if pool is not None:
            return cgroups.attempt_parent(_safe(str(iid)), pool)
        return cgroups.attempt_parent(f"{self.project}-{self.run_id}-{_safe(str(iid))}-{attempt}")

    def _argv(self, instance: Instance, image: str) -> tuple[str, ...]:
        """What the container would run: the image's ENTRYPOINT, then the command or CMD."""
        if image not in self.image_commands:
            self.image_commands[image] = self.runtime.image_command(image)
        entrypoint, cmd = self.image_commands[image]
        argv = entrypoint + (instance.command if instance.command is not None else cmd)
        if not argv:
            raise PlanError(
                f"{instance.id} has no command and its image none either", step=instance.step
            )
        return argv

    def _begin(
        self,
        instance: Instance,
        attempt: int,
        memory: int,
        staging: Path,
        adopted_from: str | None = None,
    ) -> None:
        iid, name = instance.id, str(instance.id)
        now = self.clock()
        self.staging[(iid, attempt)] = staging
        self.store.start_attempt(
            self.run_id,
            name,
            attempt,
            instance.cpus,
            memory,
            now,
            str(self._log_path(iid, attempt)),
        )
        self.observed[iid] = replace(
            self.observed[iid], phase=Phase.RUNNING, attempts=attempt, memory=memory, retry_at=None
        )
        if adopted_from is None:
            self.report(Event("started", now, name, {"attempt": attempt}))
        else:
            self.report(Event("adopted", now, name, {"attempt": attempt, "from": adopted_from}))

    def _submit(
        self,
        iid: InstanceId,
        attempt: int,
        spec: ContainerSpec | None,
        container_id: str | None,
        timeout: float | None,
        *,
        exited: bool = False,
    ) -> None:
        self.futures.append(
            self.workers.submit(
                self.runner.run,
                iid,
                attempt,
                spec,
                container_id,
                timeout,
                self._log_path(iid, attempt),
                exited,
            )
        )

    def _apply(self, graph: Graph, pool: Capacity, item: Result | Notice) -> None:
        if isinstance(item, Notice):
            self.report(item.event)
            return
        if isinstance(item.error, EngineUnavailable):
            item.ack.set()
            raise item.error
        unit = graph.group(item.instance)
        bucket = self.held.setdefault((unit[-1], item.attempt), {})
        bucket[item.instance] = item
        if len(unit) > 1 and not self._fine(unit, item.instance, outcome(item)):
            self._stop_partners(unit, item, bucket)
        if len(bucket) < len(unit):
            return  # a streamed chain is concluded when all of it has ended
        del self.held[(unit[-1], item.attempt)]
        try:
            self._conclude(graph, pool, unit, item.attempt, [bucket[m] for m in unit])
        finally:
            for result in bucket.values():
                result.ack.set()  # now the workers may remove their containers

    @staticmethod
    def _fine(unit: tuple[InstanceId, ...], iid: InstanceId, outcome: Outcome) -> bool:
        """Success, or (as in a shell) a producer ended by SIGPIPE after its consumer left."""
        if outcome.ok:
            return True
        return (
            iid != unit[-1]
            and outcome.reason is Reason.EXITED
            and outcome.exit_code == SIGPIPE_EXIT
        )

    def _stop_partners(
        self, unit: tuple[InstanceId, ...], failed: Result, bucket: dict[InstanceId, Result]
    ) -> None:
        """One side of a stream failed: kill the rest, which may wait on the pipe forever."""
        for member in unit:
            if member in bucket or (member, failed.attempt) in self.killed:
                continue
            self.killed[(member, failed.attempt)] = failed.instance
            labels = {
                LABEL_RUN: self.run_id,
                LABEL_INSTANCE: str(member),
                LABEL_ATTEMPT: str(failed.attempt),
            }
            for container in self.runtime.list(labels):
                self.runner.killed.add(container.id)
                self.runtime.kill(container.id)

    def _conclude(
        self,
        graph: Graph,
        pool: Capacity,
        unit: tuple[InstanceId, ...],
        attempt: int,
        results: list[Result],
    ) -> None:
        outcomes = {r.instance: outcome(r) for r in results}
        for iid in unit:
            if self._fine(unit, iid, outcomes[iid]) and not self.staging[(iid, attempt)].is_dir():
                outcomes[iid] = Outcome(0, Reason.LOST, "its output folder is gone")
        fields = {
            r.instance: {
                "container_id": r.container_id,
                "ended_at": r.ended_at,
                "exit_code": outcomes[r.instance].exit_code,
                "reason": outcomes[r.instance].reason.value,
                "detail": outcomes[r.instance].detail or None,
                "cpu_seconds": r.usage.cpu_seconds,
                "peak_memory": r.usage.peak_memory,
                "io_read": r.usage.io_read,
                "io_write": r.usage.io_write,
            }
            for r in results
        }
        stagings = {iid: self.staging.pop((iid, attempt)) for iid in unit}
        if all(self._fine(unit, iid, outcomes[iid]) for iid in unit):
            committed = {iid: commit(stagings[iid], self.outputs_dir) for iid in unit}
            for iid, out in committed.items():  # e.g. a FIFO dropped, a set-uid bit removed
                note_changes(self._log_path(iid, attempt), out.changes)
            ended = max(r.ended_at for r in results)
            with self.store.transaction():
                for iid, out in committed.items():
                    name = str(iid)
                    self.store.record_output(out.digest, str(out.path), out.size, out.files, ended)
                    self.store.end_attempt(
                        self.run_id, name, attempt, state="succeeded", **fields[iid]
                    )
                    self.store.set_instance(
                        self.run_id, name, state="succeeded", output=out.digest, reason=None
                    )
                    instance = graph.instances[iid]
                    if instance.cacheable:
                        self.store.cache_put(
                            self.keys[iid],
                            out.digest,
                            self.run_id,
                            name,
                            ended,
                            self.volumes.written_by(instance, self.hasher),
                        )
            for iid, out in committed.items():
                self.digests[iid], self.paths[iid] = out.digest, out.path
                self.observed[iid] = replace(self.observed[iid], phase=Phase.SUCCEEDED, reason=None)
                self.report(Event("succeeded", ended, str(iid), {"output": out.digest}))
            return

        for staging in stagings.values():
            discard(staging)
        # The cause is the first member that failed on its own, not one stopped for it.
        failing = [i for i in unit if not self._fine(unit, i, outcomes[i])]
        cause = next((i for i in failing if (i, attempt) not in self.killed), failing[0])
        instance, before = graph.instances[cause], self.observed[cause]
        seen = after_attempt(instance, before, outcomes[cause], self.clock(), pool)
        final = seen.phase is Phase.FAILED
        message = describe(outcomes[cause], before.memory or instance.memory)
        if (
            final
            and outcomes[cause].reason is Reason.OOM
            and instance.retries.memory_factor > 1
            and seen.attempts - seen.lost <= instance.retries.max
        ):
            wanted = int((before.memory or instance.memory) * instance.retries.memory_factor)
            message += (
                f"; the retry would need {format_memory(wanted)}, more than the pool's "
                f"{format_memory(pool.memory)}"
            )
        for iid in unit:
            own = (
                message
                if iid == cause
                else f"stopped: its stream partner {cause} failed ({message})"
            )
            self.observed[iid] = replace(
                self.observed[iid],
                phase=seen.phase,
                retry_at=seen.retry_at,
                lost=seen.lost,
                reason=seen.reason,
                memory=seen.memory if iid == cause else self.observed[iid].memory,
            )
            with self.store.transaction():
                lost = outcomes[iid].reason is Reason.LOST  # not held against its retries
                self.store.end_attempt(
                    self.run_id,
                    str(iid),
                    attempt,
                    state="lost" if lost else "failed",
                    **fields[iid],
                )
                self.store.set_instance(
                    self.run_id, str(iid), state="failed" if final else "pending", reason=own
                )
            detail = {
                "attempt": attempt,
                "reason": outcomes[iid].reason.value,
                "exit_code": outcomes[iid].exit_code,
                "message": own,
            }
            self.report(Event("failed" if final else "retrying", self.clock(), str(iid), detail))

    # -- the end of a run ---------------------------------------------------------------------

    def _finish(self, state: str, message: str | None) -> None:
        removed = self._remove_leftovers()
        self._release_workers()
        self.workers.shutdown(wait=True)
        if self.services is not None:
            self.services.stop()
        now = self.clock()
        for iid, seen in self.observed.items():
            if seen.phase is Phase.RUNNING:
                self.store.set_instance(self.run_id, str(iid), state="interrupted")
                self.store.end_attempt(
                    self.run_id, str(iid), seen.attempts, state="interrupted", ended_at=now
                )
        if removed:  # else containers may still run (the engine is away): the next run adopts
            discard(self.state_dir / "work")  # the run lock is held: nobody else works here
        if self.own_cgroups:
            cgroups.sweep(f"{self.project}-")
        self.hasher.flush()
        for event in self.volumes.snapshot_written("after", now):  # what the run produced
            self.report(event)
        self.store.finish_run(self.run_id, state, now, message)
        self.report(Event("run-ended", now, detail={"run": self.run_id, "state": state}))

    def _remove_leftovers(self) -> bool:
        """However the loop ended, no container of this run (or adopted by it) may remain.
        False when some may (the engine did not answer)."""
        try:
            for container in self.runtime.list({LABEL_RUN: self.run_id}):
                if container.labels.get(LABEL_KEEP) != "true":  # Services.stop decides those
                    self.runtime.remove(container.id)
            for container_id in self.adopted:
                self.runtime.remove(container_id)
        except DockyardError:
            return False
        return True

    def services_healthy(self) -> bool:
        return self.services is not None and all(
            s.failed is None for s in self.services.running.values()
        )

    def _release_workers(self) -> None:
        """Let every worker finish: acknowledge results nobody will apply."""
        for bucket in self.held.values():
            for held in bucket.values():
                held.ack.set()
        while not all(f.done() for f in self.futures):
            try:
                item = self.results.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Result):
                item.ack.set()

    # -- helpers ------------------------------------------------------------------------------

    def _staging_path(self, run_id: str, iid: InstanceId, attempt: int) -> Path:
        return self.state_dir / "work" / run_id / f"{_safe(str(iid))}.{attempt}" / "out"

    def _log_path(self, iid: InstanceId, attempt: int) -> Path:
        return self.state_dir / "logs" / self.run_id / f"{_safe(str(iid))}.{attempt}.log"

    def _stream_folder(self, unit: tuple[InstanceId, ...], attempt: int) -> Path:
        return (
            self.state_dir / "work" / self.run_id / "streams" / f"{_safe(str(unit[-1]))}.{attempt}"
        )

    def _input_path(self, rel: str) -> Path:
        return resolve_input(self.pf.root, rel)

    def _binds(self, instance: Instance, staging: Path) -> tuple[Bind, ...]:
        if staging.exists():
            discard(staging)
        staging.mkdir(parents=True)
        staging.chmod(0o777)  # the image may run as any user; the parents stay private
        (self.state_dir / "work").chmod(0o700)
        binds = [Bind(str(staging), "/out", readonly=False)]
        for mount in instance.upstream:
            binds.append(Bind(str(self.paths[mount.source]), mount.target))
        for name, rel in instance.inputs:
            binds.append(Bind(str(self._input_path(rel)), f"/in/{name}"))
        binds += self.volumes.binds(instance)
        return tuple(binds)


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
