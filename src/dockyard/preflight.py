"""Checks and facts established before a run starts anything (no side effects)."""

from __future__ import annotations

import hashlib

from dockyard.errors import PlanError
from dockyard.graph import Graph, expand
from dockyard.runtime.base import Runtime
from dockyard.schedule import ZERO, Capacity, in_use
from dockyard.spec.loader import PipelineFile
from dockyard.units import format_memory


def graph_of(pf: PipelineFile) -> Graph:
    return expand(pf.pipeline, pf.scatter)


def pool_of(runtime: Runtime, max_cpus: float | None, max_memory: int | None) -> Capacity:
    """The host's CPUs and memory, or less when the user says so."""
    host = runtime.capacity()
    cpus = min(host.cpus, max_cpus) if max_cpus else host.cpus
    memory = min(host.memory, max_memory) if max_memory else host.memory
    return Capacity.of(cpus, memory)


def project_id(pf: PipelineFile) -> str:
    return hashlib.sha256(str(pf.state_dir.resolve()).encode()).hexdigest()[:16]


def check_fits(graph: Graph, pool: Capacity, services: Capacity = ZERO) -> None:
    """Every instance (and streamed chain) must fit beside the services the run uses."""
    pool = pool - services
    for instance in graph.instances.values():
        need = Capacity.of(instance.cpus, instance.memory)
        unit = graph.group(instance.id)
        if len(unit) > 1 and instance.id == unit[-1]:
            together = in_use(
                Capacity.of(graph.instances[m].cpus, graph.instances[m].memory) for m in unit
            )
            if not pool.fits(together):
                raise PlanError(
                    f"the streamed chain {' | '.join(map(str, unit))} runs all at once and needs "
                    f"{together.cpus:g} CPUs and {format_memory(together.memory)}, but the pool "
                    f"has {pool.cpus:g} CPUs and {format_memory(pool.memory)}",
                    pipeline=graph.pipeline,
                    step=instance.step,
                )
        if not pool.fits(need):
            raise PlanError(
                f"step {instance.step!r} asks for {instance.cpus:g} CPUs and "
                f"{format_memory(instance.memory)} of memory, but the pool has "
                f"{pool.cpus:g} CPUs and {format_memory(pool.memory)}; lower its resources or "
                "raise --max-cpus/--max-memory",
                pipeline=graph.pipeline,
                step=instance.step,
            )
