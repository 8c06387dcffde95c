"""``dockyard run``: everything around the loop — what is checked before a run exists, the
collaborators it gets, and how it ends whatever happens.

Before the run exists (so that a refusal leaves no trace): the engine must answer, the
pipeline must fit the pool, its images must be there or be made, and its volumes must be
free to hold. Then the run is recorded, dead runs are closed and their containers offered
for adoption, services start, and the loop runs. However the loop ends — done, a failure,
a signal, the engine away for too long — no container of the run remains, the run's
record says how it ended, and the volumes it wrote are snapshotted.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.collector import paused
from dockyard.errors import DockyardError, EngineUnavailable, InvalidInput, RunFailed
from dockyard.events import Event, Reporter, ignore
from dockyard.execution import cgroups
from dockyard.execution.assembly import Parts, assemble
from dockyard.execution.attempts import Notice, Result
from dockyard.execution.feed import Feed, Wake
from dockyard.execution.journal import RunJournal
from dockyard.execution.launcher import RunIdentity
from dockyard.execution.ports import Ports
from dockyard.execution.run_volumes import RunVolumes
from dockyard.execution.services import LABEL_KEEP
from dockyard.images.resolve import packages_of, resolve_images
from dockyard.lifecycles import RUN, Phase, RunEvent, RunState, advance
from dockyard.planning.graph import Graph
from dockyard.planning.preflight import RunPool, check_fits, graph_of, pool_from, project_id
from dockyard.planning.schedule import ZERO, Capacity
from dockyard.runtime.base import LABEL_RUN, Runtime
from dockyard.runtime.patient import EngineGuard, PatientRuntime
from dockyard.spec.loader import PipelineFile
from dockyard.state.lock import RunLock
from dockyard.state.rows import RunRow
from dockyard.state.store import Store
from dockyard.units import parse_duration

Clock = Callable[[], float]
DEFAULT_PATIENCE = 300.0


def patience_from_environment() -> float:
    """How long a run waits for an engine that stopped answering: DOCKYARD_ENGINE_PATIENCE
    (seconds, or a duration like 5m), 300 s unless set."""
    raw = os.environ.get("DOCKYARD_ENGINE_PATIENCE")
    if raw is None or not raw.strip():
        return DEFAULT_PATIENCE
    try:
        return float(raw) if raw.replace(".", "", 1).isdigit() else parse_duration(raw)
    except ValueError as exc:
        raise InvalidInput(f"DOCKYARD_ENGINE_PATIENCE: {exc}") from None


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
    """One run of a pipeline on ``runtime``, its bytes through ``ports`` (a backend's: on
    one machine, ``dockyard.backends.local.ports.local_ports(pf)``; a backend's by name,
    ``dockyard.backends.choice.choose(name).ports``)."""

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
        engine_patience: float | None = None,
        ports: Ports,
        feed: Feed | None = None,
    ):
        self.pf = pf
        self.engine = runtime  # as it is: before the run exists, an engine away is exit 3
        self.store = store
        self.options = options or RunOptions()
        self.reporter = reporter
        self.clock = clock
        self.new_id = new_id
        self.sleep = sleep
        self.ports = ports
        # Work handed over while the run goes on (its graph starts empty, and the run ends
        # once nothing runs and the feed is closed); None: the pipeline file's steps.
        self.feed = feed
        self.results: queue.Queue[Result | Notice | Wake] = queue.Queue()
        self.guard = EngineGuard(
            runtime.ping,
            engine_patience if engine_patience is not None else patience_from_environment(),
            clock=clock,
            sleep=sleep,
            notify=lambda event: self.results.put(Notice(event)),
        )
        # Once the run exists, every engine call waits out an engine that restarts.
        self.runtime: Runtime = PatientRuntime(runtime, self.guard)

    # -- before the run exists ------------------------------------------------------------------

    def run(self) -> str:
        """Run the pipeline to completion; return the run id or raise :class:`RunFailed`."""
        self.engine.ping()
        with paused():
            graph = (
                graph_of(self.pf)
                if self.feed is None
                else Graph(self.pf.pipeline.name, {}, [], {})  # (it grows as work comes)
            )
        nodes = self.engine.nodes()
        pool = pool_from(nodes, self.options.max_cpus, self.options.max_memory)
        services = sorted({name for i in graph.instances.values() for name in i.services})
        # Reserved for the whole run, so that starting one never over-commits the pool.
        reserved = ZERO
        for name in services:
            resources = self.pf.pipeline.services[name].resources
            reserved = reserved + Capacity.of(resources.cpus, resources.memory)
        check_fits(graph, pool, reserved)
        # Asked before the run exists: nothing between opening the journal and the run's
        # own clean-up may fail on the engine.
        own_cgroups = self.engine.shares_host_cgroups()
        journal = RunJournal(self.store, self.reporter, self.clock)
        notes: list[Event] = []
        one_at_a_time = threading.Lock()  # images are made by several threads

        def note(message: str) -> None:  # shown now, recorded once the run exists
            with one_at_a_time:
                notes.append(Event("image", self.clock(), detail={"message": message}))
                journal.report(notes[-1])

        images = resolve_images(
            self.pf,
            [i.image for i in graph.instances.values()]
            + [self.pf.pipeline.services[name].image for name in services],
            self.engine,
            note,
        )
        live = images
        if self.feed is not None:
            live = self.feed.images  # (filled in as work is handed over, on another thread)
            images = dict(live)  # (what the run's record says: what was resolved by now)
        volumes = RunVolumes(self.pf, self.ports.volumes)
        with RunLock(self.pf.state_dir), contextlib.ExitStack() as held:
            volumes.take(graph, held, wait=self.options.wait_for_volumes)
            run_id = self.new_id()
            total = sum(pool.values(), ZERO)
            journal.open(
                RunRow(
                    run_id,
                    graph.pipeline,
                    hashlib.sha256(self.pf.path.read_bytes()).hexdigest(),
                    RunState.RUNNING.value,
                    self.clock(),
                    None,
                    total.cpus,
                    total.memory,
                    None,
                    json.dumps(images, sort_keys=True),
                    json.dumps(packages_of(images, self.engine)),
                    json.dumps(dict(self.pf.params), sort_keys=True),
                ),
                [(str(iid), iid.step) for iid in graph.order],
                notes,
            )
            detail = {
                "run": run_id,
                "instances": len(graph.order),
                "cpus": total.cpus,
                "memory": total.memory,
            }
            journal.report(Event("run-started", self.clock(), detail=detail))
            for event in volumes.snapshot_written("before", self.clock()):
                journal.report(event)
            journal.flush()
            with paused():
                parts = assemble(
                    self,
                    RunIdentity(self.pf.pipeline.name, project_id(self.pf), run_id, own_cgroups),
                    graph,
                    # (read again during the run: through the runtime that waits out an outage)
                    RunPool(
                        self.runtime,
                        self.options.max_cpus,
                        self.options.max_memory,
                        reserved,
                        nodes,
                    ),
                    live,
                    volumes,
                    journal,
                )
            # The graph and the planner live as long as the run: out of the cyclic
            # collector's way, or each of its passes walks every instance again.
            gc.freeze()
            try:
                return self._run(parts, graph, volumes)
            finally:
                gc.unfreeze()

    # -- the run ------------------------------------------------------------------------------

    def _run(self, parts: Parts, graph: Graph, volumes: RunVolumes) -> str:
        run_id = parts.identity.run_id
        try:
            parts.recovery.close_dead_runs(run_id)
            parts.loop.resolver.orphans = parts.recovery.orphans(run_id)
            with paused():  # (what the cache answers: most of a rerun's objects)
                parts.loop.settle()
            gc.freeze()
            # Services of steps the cache did not answer start now, without waiting: a
            # database initialises while the steps before its users work.
            # What a dead run left and no unit adopted goes first: a kept service of an
            # earlier run must be gone before this run's own starts on the same volumes.
            parts.recovery.sweep(run_id, parts.launcher.adopted)
            parts.loop.resolver.orphans = {}
            pending = parts.planner.in_phase(Phase.PENDING)
            wanted = {name for iid in pending for name in graph.instances[iid].services}
            parts.services.start(tuple(sorted(wanted)))
            parts.loop.run()
        except Abandon:
            self.guard.give_up()
            parts.dispatch.close(abandon=True)
            raise
        except KeyboardInterrupt:
            self.guard.give_up()  # clean up what can be, but never wait for an engine again
            self._finish(parts, volumes, RunEvent.STOPPED, "interrupted by a signal")
            raise
        except EngineUnavailable as exc:
            self.guard.give_up()
            self._finish(parts, volumes, RunEvent.STOPPED, exc.message)
            raise
        except BaseException as exc:
            self.guard.give_up()
            self._finish(parts, volumes, RunEvent.ERROR, str(exc))
            raise
        failed = parts.planner.in_phase(Phase.FAILED)
        if not failed:
            # Nothing failed, yet the planner had nothing left it could start: that work can
            # never fit. (check_fits makes this unreachable today; never report it as success.)
            failed = parts.planner.in_phase(Phase.PENDING)
            for iid in failed:
                parts.journal.never_fitted(iid)
        if failed:
            self._finish(parts, volumes, RunEvent.SOME_FAILED, f"{len(failed)} instance(s) failed")
            raise RunFailed(run_id, [str(i) for i in failed], pipeline=graph.pipeline)
        self._finish(parts, volumes, RunEvent.ALL_SUCCEEDED, None)
        return run_id

    # -- the end of a run ---------------------------------------------------------------------

    def _finish(
        self, parts: Parts, volumes: RunVolumes, event: RunEvent, message: str | None
    ) -> None:
        """End the run whatever happens on the way: each step is tried on its own, the run's
        end state is always written, and the first thing that failed is raised after."""
        failures: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:  # (a step that fails must not cost the run's record)
                failures.append(exc)

        # What the loop concluded goes to disk before any container of it is removed.
        attempt(parts.journal.flush)
        removed = self._remove_leftovers(parts)
        try:
            attempt(parts.services.stop)
            attempt(lambda: parts.journal.interrupted(parts.conclusion.running()))
            if removed:  # else containers may still run (the engine is away): next run adopts
                attempt(self.ports.workspace.clear)  # the run lock is held: nobody else works
            if parts.identity.own_cgroups:
                attempt(lambda: cgroups.sweep(f"{parts.identity.project}-"))
            if self.feed is not None:  # (its images were resolved as its work came)
                attempt(lambda: self._record_images(parts.identity.run_id))
            attempt(parts.hasher.flush)

            def after() -> None:  # what the run produced
                for snapshot in volumes.snapshot_written("after", self.clock()):
                    parts.journal.report(snapshot)

            attempt(after)
        finally:
            parts.dispatch.close(abandon=not removed)
            state = advance(RUN, RunState.RUNNING, event)
            if failures and event is RunEvent.ALL_SUCCEEDED:
                state = advance(RUN, RunState.RUNNING, RunEvent.ERROR)
                message = f"ending the run failed: {failures[0]}"
            parts.journal.finish(state, message)
        if failures and event is RunEvent.ALL_SUCCEEDED:
            raise failures[0]

    def _record_images(self, run_id: str) -> None:
        assert self.feed is not None
        images = dict(self.feed.images)
        try:
            packages = packages_of(images, self.engine)
        except DockyardError:  # (the engine away as the run ends: the images still count)
            packages = {}
        self.store.set_run_images(
            run_id, json.dumps(images, sort_keys=True), json.dumps(packages, sort_keys=True)
        )

    def _remove_leftovers(self, parts: Parts) -> bool:
        """However the loop ended, no container of this run (or adopted by it) may remain.
        False when some may (the engine did not answer, or refused to remove one)."""
        removed = True
        try:
            found = [
                c.id
                for c in self.runtime.list({LABEL_RUN: parts.identity.run_id})
                if c.labels.get(LABEL_KEEP) != "true"  # Services.stop decides those
            ]
        except DockyardError:
            return False
        for container_id in [*found, *parts.launcher.adopted]:
            try:
                self.runtime.remove(container_id)
            except DockyardError:
                removed = False  # (the others are still removed)
        return removed
