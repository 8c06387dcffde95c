"""The units ready to start, for :class:`~dockyard.planning.planner.Planner`: grouped by
what they need, so that picking the best one that fits a node costs the number of distinct
needs (a handful), not the number of ready units. Pure."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from dockyard.planning.graph import InstanceId
from dockyard.planning.schedule import Capacity


class Ready:
    """Units ready to start, by what they need: picking the best one that fits costs the
    number of distinct needs (a handful), not the number of ready units."""

    def __init__(self) -> None:
        self.by_need: dict[Capacity, list[tuple[int, str, int, InstanceId]]] = {}
        self.entries: dict[InstanceId, int] = {}  # head -> its live entry (others are stale)
        self.pushed = 0

    def push(self, need: Capacity, priority: int, head: InstanceId) -> None:
        self.pushed += 1
        self.entries[head] = self.pushed
        entry = (-priority, str(head), self.pushed, head)
        heapq.heappush(self.by_need.setdefault(need, []), entry)

    def discard(self, head: InstanceId) -> None:
        """No longer ready (what it reads must be made again); its entry goes stale."""
        self.entries.pop(head, None)

    def pop_fitting(self, free: Mapping[str, Capacity]) -> tuple[InstanceId, Capacity, str] | None:
        """The highest-priority unit that fits a node, and the node (the fullest that fits:
        packing, so that big work finds room later)."""
        best: tuple[tuple[int, str], Capacity, str] | None = None
        for need, heap in self.by_need.items():
            while heap and self.entries.get(heap[0][3]) != heap[0][2]:
                heapq.heappop(heap)  # (stale)
            if not heap:
                continue
            nodes = [n for n, room in free.items() if room.fits(need)]
            if not nodes:
                continue
            rank = heap[0][:2]
            if best is None or rank < best[0]:
                node = min(nodes, key=lambda n: (free[n].millicpus, free[n].memory, n))
                best = (rank, need, node)
        if best is None:
            return None
        _, need, node = best
        head = heapq.heappop(self.by_need[need])[3]
        del self.entries[head]
        return head, need, node

    def __len__(self) -> int:
        return len(self.entries)
