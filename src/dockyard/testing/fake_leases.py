"""Volume leases in memory, for tests: the compare-and-swap that Swarm's store does
(a record written over one at an older version is refused), and nodes that go down."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

from dockyard.agent.leases import Lease, NoSuchVolume


class MemoryLeases:
    def __init__(self, nodes: dict[str, str]):
        self.records: dict[str, Lease] = {}
        self.addresses = dict(nodes)  # node id: host address
        self.down: set[str] = set()
        self.swaps = 0  # writes that went through
        self.conflicts = 0  # writes refused for their version
        self.away = False  # True: every call fails, as when no manager answers
        self._lock = threading.Lock()

    def _answer(self) -> None:
        if self.away:
            raise ConnectionError("the lease store does not answer")

    def get(self, volume: str) -> Lease | None:
        self._answer()
        with self._lock:
            return self.records.get(volume)

    def all(self) -> list[Lease]:
        with self._lock:
            return sorted(self.records.values(), key=lambda lease: lease.volume)

    def create(self, volume: str) -> Lease:
        with self._lock:
            fresh = Lease(volume, incarnation=uuid.uuid4().hex, version=1)
            return self.records.setdefault(volume, fresh)

    def swap(self, lease: Lease, new: Lease) -> Lease | None:
        self._answer()
        with self._lock:
            current = self.records.get(lease.volume)
            if current is None:
                raise NoSuchVolume(f"no volume {lease.volume!r} on this swarm")
            if current.version != lease.version:
                self.conflicts += 1
                return None
            self.swaps += 1
            written = replace(new, version=current.version + 1)
            self.records[lease.volume] = written
            return written

    def remove(self, volume: str) -> None:
        with self._lock:
            self.records.pop(volume, None)

    def gone(self, node: str) -> bool:
        return node in self.down or node not in self.addresses

    def nodes(self) -> dict[str, str]:
        return {n: a for n, a in self.addresses.items() if n not in self.down}


__all__ = ["MemoryLeases"]
