"""Fit ready work into the pool (pure). CPU is counted in millicores to stay exact."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar


def millicores(cpus: float) -> int:
    return max(1, round(cpus * 1000))


@dataclass(frozen=True)
class Capacity:
    millicpus: int
    memory: int

    @classmethod
    def of(cls, cpus: float, memory: int) -> Capacity:
        return cls(millicores(cpus), memory)

    def fits(self, need: Capacity) -> bool:
        return need.millicpus <= self.millicpus and need.memory <= self.memory

    def __sub__(self, other: Capacity) -> Capacity:
        return Capacity(self.millicpus - other.millicpus, self.memory - other.memory)

    def __add__(self, other: Capacity) -> Capacity:
        return Capacity(self.millicpus + other.millicpus, self.memory + other.memory)

    @property
    def cpus(self) -> float:
        return self.millicpus / 1000


ZERO = Capacity(0, 0)


@dataclass(frozen=True)
class Request:
    """One unit of work that must be placed whole (an instance, or a streamed group)."""

    key: str
    need: Capacity
    priority: int


R = TypeVar("R", bound=Request)


def in_use(needs: Iterable[Capacity]) -> Capacity:
    total = ZERO
    for need in needs:
        total = total + need
    return total


def fit(ready: Sequence[R], free: Capacity) -> list[R]:
    """Choose which ready requests start now.

    Highest priority (longest critical path) first; a request that does not fit
    is skipped so that smaller ones can fill the gap (backfilling, as in Tetris).
    The sum of what is chosen never exceeds ``free``.
    """
    chosen: list[R] = []
    for request in sorted(ready, key=lambda r: (-r.priority, r.key)):
        if free.fits(request.need):
            chosen.append(request)
            free = free - request.need
        if free.millicpus <= 0 or free.memory <= 0:
            break
    return chosen
