"""A run's collaborators, made and wired together once the run exists (see
:mod:`dockyard.execution.run` for what comes before and after)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockyard.events import Event
from dockyard.execution.attempts import AttemptRunner
from dockyard.execution.conclusion import Conclusion
from dockyard.execution.dispatch import Dispatch
from dockyard.execution.journal import RunJournal
from dockyard.execution.launcher import Launcher, RunIdentity
from dockyard.execution.loop import RunLoop
from dockyard.execution.recovery import Recovery
from dockyard.execution.resolution import Known, Resolver
from dockyard.execution.run_volumes import RunVolumes
from dockyard.execution.services import Services
from dockyard.planning.graph import Graph
from dockyard.planning.packing import Packing
from dockyard.planning.planner import Planner
from dockyard.planning.preflight import RunPool
from dockyard.runtime.base import LABEL_PIPELINE, LABEL_PROJECT
from dockyard.spec.paths import InputPaths
from dockyard.state.hashing import InputHasher

FED_WORKERS = 512  # threads start only when needed

if TYPE_CHECKING:
    from dockyard.execution.run import Executor


@dataclass
class Parts:
    """One run's collaborators."""

    identity: RunIdentity
    journal: RunJournal
    services: Services
    hasher: InputHasher
    planner: Planner
    launcher: Launcher
    conclusion: Conclusion
    dispatch: Dispatch
    loop: RunLoop
    recovery: Recovery


def assemble(
    run: Executor,
    identity: RunIdentity,
    graph: Graph,
    pool: RunPool,
    images: dict[str, str],
    volumes: RunVolumes,
    journal: RunJournal,
) -> Parts:
    run_id = identity.run_id
    services = Services(
        run.runtime,
        run.pf.pipeline.services,
        images,
        run.ports.volumes.mount,
        identity.labels(),
        prefix=f"dockyard-{identity.pipeline}-{run_id}",
        sleep=run.sleep,
        clock=run.clock,
        engine_away_since=lambda since: run.guard.away_between(since, run.clock()),
        node=None if pool.one_machine else pool.services_node,
        move=None if pool.one_machine else pool.move_services,
        note=lambda message: journal.report(
            Event("service", run.clock(), detail={"message": message})
        ),
    )
    known = Known()
    hasher = InputHasher(run.store, run.clock())

    resolver = Resolver(
        graph,
        images,
        hasher,
        volumes,
        run.store,
        run.ports.outputs,
        known,
        InputPaths(run.pf.root, fresh=False, must_exist=False),
    )
    launcher = Launcher(
        identity,
        graph,
        images,
        known,
        (run.ports.workspace, run.ports.outputs),
        volumes,
        services,
        run.runtime,
        InputPaths(run.pf.root, fresh=True),  # resolved again when mounted
    )
    conclusion = Conclusion(graph, run.ports.outputs, journal, volumes, hasher, known)
    runner = AttemptRunner(
        run.runtime,
        run.guard,
        (run.ports.workspace, run.ports.outputs),
        run.results,
        run.clock,
        run.ports.volumes,
    )
    # (work handed over while the run goes on: as many threads as may ever run at once)
    workers = len(graph.order) + 1 if run.feed is None else FED_WORKERS
    dispatch = Dispatch(runner, run.results, workers=workers)
    planner = Planner(
        graph,
        pool.first,
        # Whoever feeds the run decides what a failure stops (it may hand over no more).
        keep_going=run.options.keep_going or run.feed is not None,
        no_cache=run.options.no_cache,
        packing=Packing(run.store.cpus_used),
    )
    loop = RunLoop(
        planner,
        resolver,
        launcher,
        conclusion,
        dispatch,
        journal,
        run.clock,
        cache=not run.options.no_cache,
        nodes=None if pool.one_machine else pool.now,
        node_names=pool.names,
        feed=run.feed,
    )
    labels = {LABEL_PIPELINE: identity.pipeline, LABEL_PROJECT: identity.project}
    recovery = Recovery(run.runtime, run.store, journal, labels)
    return Parts(
        identity,
        journal,
        services,
        hasher,
        planner,
        launcher,
        conclusion,
        dispatch,
        loop,
        recovery,
    )
