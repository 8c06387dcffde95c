"""Where a run's volumes are written, for placing the units that write them (pure).

On one machine every writer of a volume mounts the same folder. On a cluster a volume is
mounted read-write on one node at a time (its lease), so a unit that writes a volume that
a running unit writes too must go to that unit's node, or wait for room there. A unit that
writes a volume nobody writes now prefers the node it was last written on (its *home*:
the data is there) when that node has room, and else goes where it fits: moving a volume
costs one increment over the pre-copy (see ``docs/swarm.md``), less than waiting for a
busy node. Readers bind a snapshot and go anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.planning.graph import Graph, InstanceId

NOWHERE = ""  # a unit whose volumes are written on two nodes at once: it waits


class VolumeHomes:
    def __init__(self, graph: Graph):
        self.writes: dict[InstanceId, frozenset[str]] = {}  # head -> the volumes its unit writes
        for iid in graph.order:
            head = graph.group(iid)[0]
            written = {v for v, _, readonly in graph.instances[iid].volumes if not readonly}
            if written:
                self.writes[head] = self.writes.get(head, frozenset()) | written
        self.homes: dict[str, str] = {}  # volume -> the node that wrote it last in this run

    def place(
        self, head: InstanceId, running: Mapping[InstanceId, tuple[str, Any]]
    ) -> tuple[str | None, str | None]:
        """(the node ``head``'s unit must run on, the node it prefers), either None."""
        written = self.writes.get(head)
        if not written:
            return None, None
        busy = {
            node
            for other, (node, _) in running.items()
            if self.writes.get(other, frozenset()) & written
        }
        if len(busy) > 1:
            return NOWHERE, None
        if busy:
            return busy.pop(), None
        homes = [self.homes[v] for v in sorted(written) if v in self.homes]
        return None, homes[0] if homes else None

    def started(self, head: InstanceId, node: str) -> None:
        for volume in self.writes.get(head, ()):
            self.homes[volume] = node


__all__ = ["NOWHERE", "VolumeHomes"]
