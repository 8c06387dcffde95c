"""The Swarm adapter's view of the nodes: read from the manager, fresh within
:data:`NODES_FRESH_SECONDS` (every waiting thread asks), and the one view the agents'
addresses and the volumes' managers come from (:meth:`SwarmNodes.known_nodes`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from dockyard.backends.swarm.networks import SwarmNetworks
from dockyard.backends.swarm.tasks import node_of
from dockyard.errors import DockyardError
from dockyard.runtime.base import HostCapacity, Node

NODES_FRESH_SECONDS = 1.0  # node states read at most this often (every waiting thread asks)


class SwarmNodes(SwarmNetworks):
    # (set by the runtime)
    clock: Callable[[], float]
    _lock: threading.Lock
    _nodes: tuple[float, list[Node]] | None
    _failed_at: float | None

    # -- nodes ------------------------------------------------------------------------------

    def shares_host_cgroups(self) -> bool:
        return False  # the containers run on other machines' engines

    def nodes(self) -> list[Node]:
        with self._translated("listing the swarm's nodes"):
            found = self.api.nodes()
        nodes = [node_of(n) for n in found]
        with self._lock:
            self._nodes = (self.clock(), nodes)
        return sorted(nodes, key=lambda n: (n.name, n.id))

    def capacity(self) -> HostCapacity:
        ready = [n.capacity for n in self.nodes() if n.ready]
        return HostCapacity(sum(c.cpus for c in ready), sum(c.memory for c in ready))

    def known_nodes(self) -> list[Node]:
        """The nodes as seen at most :data:`NODES_FRESH_SECONDS` ago: the one view of the
        nodes that the agents' addresses and the volumes' managers are read from. While
        the manager does not answer (a restart, an election), the newest answer holds and
        it is asked again once a second at most: the agents do not need the manager (with
        no answer yet, its error). Node-loss detection never reads a held answer: it asks
        again."""
        with self._lock:
            failed, cached = self._failed_at, self._nodes
        if (
            cached is not None
            and failed is not None
            and self.clock() - failed < NODES_FRESH_SECONDS
        ):
            return sorted(cached[1], key=lambda n: (n.name, n.id))
        try:
            nodes = sorted(self._node_states().values(), key=lambda n: (n.name, n.id))
        except DockyardError:
            with self._lock:
                cached = self._nodes
                if cached is None:
                    raise
                self._failed_at = self.clock()
            return sorted(cached[1], key=lambda n: (n.name, n.id))
        with self._lock:
            self._failed_at = None
        return nodes

    def _node_states(self) -> dict[str, Node]:
        with self._lock:
            cached = self._nodes
        if cached is None or self.clock() - cached[0] > NODES_FRESH_SECONDS:
            self.nodes()
            with self._lock:
                assert self._nodes is not None
                cached = self._nodes
        return {n.id: n for n in cached[1]}
