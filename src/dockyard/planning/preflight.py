"""Checks and facts established before a run starts anything, and the pool a run fills
(read from the runtime's nodes)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from dockyard.errors import PlanError
from dockyard.planning.graph import Graph, expand
from dockyard.planning.schedule import ZERO, Capacity, in_use
from dockyard.runtime.base import LOCAL_NODE, Node, Nodes
from dockyard.spec.loader import PipelineFile
from dockyard.spec.params import texts
from dockyard.units import format_memory


def graph_of(pf: PipelineFile) -> Graph:
    return expand(pf.pipeline, pf.scatter, sheets=pf.sheets, params=texts(pf.params))


def pool_of(runtime: Nodes, max_cpus: float | None, max_memory: int | None) -> dict[str, Capacity]:
    """Each ready node's CPUs and memory, or less on each when the user says so."""
    return pool_from(runtime.nodes(), max_cpus, max_memory)


def pool_from(
    nodes: list[Node], max_cpus: float | None, max_memory: int | None
) -> dict[str, Capacity]:
    """:func:`pool_of` for nodes already read."""
    pool = {}
    for node in nodes:
        if node.ready:
            host = node.capacity
            cpus = min(host.cpus, max_cpus) if max_cpus else host.cpus
            memory = min(host.memory, max_memory) if max_memory else host.memory
            pool[node.id] = Capacity.of(cpus, memory)
    return pool


class RunPool:
    """The room a run's planner may fill: each ready node's, less the services' reservation
    on the node they run on (the first); as it was when the run started (``first``) and as
    it is ``now`` (a cluster's nodes go down and come back)."""

    def __init__(
        self,
        runtime: Nodes,
        max_cpus: float | None,
        max_memory: int | None,
        reserved: Capacity,
        nodes: list[Node],
    ):
        self.runtime = runtime  # read again for ``now``
        self.limits = (max_cpus, max_memory)
        found = pool_from(nodes, max_cpus, max_memory)
        self.services_node = next(iter(found))
        self.reserved = reserved
        self.first = self._after(found)
        # Node names for people (a Swarm node's id is 25 random characters); none on one machine.
        self.names = {} if self.one_machine else {n.id: n.name for n in nodes}

    @property
    def one_machine(self) -> bool:
        return set(self.first) == {LOCAL_NODE}

    def now(self) -> dict[str, Capacity]:
        return self._after(pool_of(self.runtime, *self.limits))

    def move_services(self, lost: str) -> str | None:
        """The services' node ``lost`` is down: the first node that is up and has room for
        them takes them (and their reservation); None when there is none."""
        for node, room in pool_of(self.runtime, *self.limits).items():
            if node != lost and room.fits(self.reserved):
                self.services_node = node
                return node
        return None

    def _after(self, pool: dict[str, Capacity]) -> dict[str, Capacity]:
        node = self.services_node
        return {n: room - self.reserved if n == node else room for n, room in pool.items()}


def project_id(pf: PipelineFile) -> str:
    return hashlib.sha256(str(pf.state_dir.resolve()).encode()).hexdigest()[:16]


def check_fits(graph: Graph, pool: Mapping[str, Capacity], services: Capacity = ZERO) -> None:
    """Every instance (and streamed chain) must fit a node, the first one beside the
    services the run uses (they run there)."""
    rooms = [room - services if n == 0 else room for n, room in enumerate(pool.values())]
    largest = max(rooms, key=lambda c: (c.memory, c.millicpus), default=ZERO)
    seen: set[tuple[str, ...]] = set()
    for iid in graph.order:
        unit = graph.group(iid)
        instance = graph.instances[iid]
        shape = (instance.step, str(len(unit)), str(unit.index(iid)))
        if shape in seen:  # every instance of a step asks for the same: check it once
            continue
        seen.add(shape)
        if len(unit) > 1 and iid == unit[-1]:
            together = in_use(
                Capacity.of(graph.instances[m].cpus, graph.instances[m].memory) for m in unit
            )
            if not any(room.fits(together) for room in rooms):
                raise PlanError(
                    f"the streamed chain {' | '.join(map(str, unit))} runs all at once and needs "
                    f"{together.cpus:g} CPUs and {format_memory(together.memory)}, but the pool "
                    f"has {_room(largest)}",
                    pipeline=graph.pipeline,
                    step=instance.step,
                )
        if not any(room.fits(Capacity.of(instance.cpus, instance.memory)) for room in rooms):
            raise PlanError(
                f"step {instance.step!r} asks for {instance.cpus:g} CPUs and "
                f"{format_memory(instance.memory)} of memory, but the pool has "
                f"{_room(largest)}; lower its resources or raise --max-cpus/--max-memory",
                pipeline=graph.pipeline,
                step=instance.step,
            )


def _room(capacity: Capacity) -> str:
    return f"{capacity.cpus:g} CPUs and {format_memory(capacity.memory)}"
