"""The units ready to start, for :class:`~dockyard.planning.planner.Planner`: grouped by
what they need, so that picking the best one that fits a node costs the number of distinct
needs (a handful), not the number of ready units. Pure."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping

from dockyard.planning.graph import InstanceId
from dockyard.planning.schedule import Capacity

# A unit's (required node, preferred node), either None.
Placing = Callable[[InstanceId], tuple[str | None, str | None]]
Entry = tuple[int, str, int, InstanceId]  # (-priority, name, push count, head)
LOOK_AHEAD = 64  # units looked at past one that must wait for its node


class Ready:
    """Units ready to start, by what they need: picking the best one that fits costs the
    number of distinct needs (a handful), not the number of ready units."""

    def __init__(self) -> None:
        self.by_need: dict[Capacity, list[Entry]] = {}
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

    def pop_fitting(
        self, free: Mapping[str, Capacity], place: Placing | None = None
    ) -> tuple[InstanceId, Capacity, str] | None:
        """The highest-priority unit that fits a node, and the node (the fullest that fits:
        packing, so that big work finds room later). ``place`` may tie a unit to a node
        (it then waits for room there, and units behind it with the same need go first:
        up to :data:`LOOK_AHEAD` of them) or name the node it prefers when that has room."""
        best: tuple[Entry, Capacity, str] | None = None
        for need, heap in self.by_need.items():
            while heap and self.entries.get(heap[0][3]) != heap[0][2]:
                heapq.heappop(heap)  # (stale)
            nodes = [n for n, room in free.items() if room.fits(need)]
            if not heap or not nodes:
                continue
            found = self._placeable(heap, nodes, free, place)
            if found is not None and (best is None or found[0][:2] < best[0][:2]):
                best = (found[0], need, found[1])
        if best is None:
            return None
        entry, need, node = best
        head = entry[3]
        if self.by_need[need][0] is entry:
            heapq.heappop(self.by_need[need])
        del self.entries[head]  # (an entry deeper in its heap goes stale)
        return head, need, node

    def _placeable(
        self,
        heap: list[Entry],
        nodes: list[str],
        free: Mapping[str, Capacity],
        place: Placing | None,
    ) -> tuple[Entry, str] | None:
        """The first entry of ``heap`` that may go to one of ``nodes``, and that node."""
        for entry in _candidates(heap, deeper=place is not None):
            if self.entries.get(entry[3]) != entry[2]:
                continue  # (stale)
            required, preferred = place(entry[3]) if place is not None else (None, None)
            allowed = [n for n in nodes if required is None or n == required]
            if allowed:
                node = min(allowed, key=lambda n: (free[n].millicpus, free[n].memory, n))
                return entry, preferred if preferred in allowed else node
        return None

    def __len__(self) -> int:
        return len(self.entries)


def _candidates(heap: list[Entry], *, deeper: bool) -> Iterator[Entry]:
    """The heap's first entry; then (only if asked for) the next ones, in order."""
    yield heap[0]
    if deeper:
        yield from heapq.nsmallest(LOOK_AHEAD, heap)[1:]
