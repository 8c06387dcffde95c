"""How much CPU a unit of work reserves in the pool: what it used before (pure).

Memory cannot be shared, so it is reserved as declared. CPU can: a container never uses
more than its declared ``cpus`` (that stays its limit), but most use less (a sorter
reading a pipe, a tool waiting on its disk), and reserving the declared amount leaves
cores idle. So a unit reserves:

- for an instance whose step ran before with the same image, command and declared
  ``cpus`` (its ``usage_key``: the step's command before interpolation with the
  parameters it uses, so another sample of the same step counts), the CPU it used then:
  CPU time over wall time, the largest of its last few successful attempts that were not
  themselves packed by history (so that use measured while crowded does not shrink the
  next reservation, and that one the next), never more than declared and never less
  than :data:`MIN_RESERVED`;
- for the members of a streamed chain that have no such history, together, the largest
  of their declared CPUs, shared out in proportion to what each declares: the stages of
  a pipe run at the pace of the slowest and take turns on the CPU (Snakemake counts an
  ``aligner | sorter`` rule as one job) — the next run reserves what they used;
- otherwise its declared ``cpus``, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from dockyard.planning.graph import Graph, InstanceId

MIN_RESERVED = 0.05  # CPUs: a step that used nearly none still takes a little

# (usage key, declared cpus) -> CPUs used before with that limit, or None
History = Callable[[str, float], float | None]
Basis = Literal["declared", "history", "chain"]


class Reservation(NamedTuple):
    cpus: float
    basis: Basis  # what it is worked out from


class Packing:
    """Reservations from what earlier attempts used (``history``, asked once per key)."""

    def __init__(self, history: History):
        self.history = history

        self.known: dict[tuple[str, float], float | None] = {}

    def used_before(self, key: str, cpus: float) -> float | None:
        if not key:
            return None
        if (key, cpus) not in self.known:
            self.known[(key, cpus)] = self.history(key, cpus)
        return self.known[(key, cpus)]

    def reserve(self, graph: Graph, unit: Sequence[InstanceId]) -> dict[InstanceId, Reservation]:
        """What each member of ``unit`` reserves; never more than its declared ``cpus``."""
        reserved: dict[InstanceId, Reservation] = {}
        unknown: list[InstanceId] = []
        for member in unit:
            instance = graph.instances[member]
            used = self.used_before(instance.usage_key, instance.cpus)
            if used is None:
                unknown.append(member)
            else:
                cpus = min(instance.cpus, max(MIN_RESERVED, used))
                reserved[member] = Reservation(cpus, "history")
        if len(unit) > 1 and len(unknown) > 1:
            declared = [graph.instances[m].cpus for m in unknown]
            share = max(declared) / sum(declared)
            for member, cpus in zip(unknown, declared, strict=True):
                reserved[member] = Reservation(min(cpus, max(MIN_RESERVED, cpus * share)), "chain")
        else:
            for member in unknown:
                reserved[member] = Reservation(graph.instances[member].cpus, "declared")
        return reserved
