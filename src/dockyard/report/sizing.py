"""Right-sizing: per step, what it declared against what its attempts used and reserved
(``dockyard status --resources``, ``status --json``'s ``steps``, the report)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dockyard.report.summary import RunSummary
from dockyard.state.rows import AttemptRow

NEAR_LIMIT = 0.9  # peak memory at or above this share of the limit: raise it
OVER_ASKED = 0.25  # use below this share of what was asked: ask for less
MEMORY_MARGIN = 1.25  # a suggested memory limit is the peak plus a quarter
MIB = 1024**2


@dataclass(frozen=True)
class StepSizing:
    step: str
    ran: int  # attempts that ran (0: every instance was cached)
    cpus: float | None  # declared (its limit), of the last attempt
    reserved: float | None  # what its attempts took from the pool, on average
    used: float | None  # CPU time over wall time, all its measured attempts together
    memory: int | None  # the largest memory limit it ran with
    peak: int | None  # the largest peak memory of its attempts
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.step,
            "attempts": self.ran,
            "cpus": self.cpus,
            "cpus_reserved": self.reserved,
            "cpus_used": self.used,
            "memory": self.memory,
            "peak_memory": self.peak,
            "notes": self.notes,
        }


def step_sizing(summary: RunSummary) -> list[StepSizing]:
    """Each step's sizing, in the run's order."""
    by_step: dict[str, list[AttemptRow]] = {}
    for inst in summary.instances:
        by_step.setdefault(inst.row.step, []).extend(inst.attempts)
    return [_sizing(step, attempts) for step, attempts in by_step.items()]


def _sizing(step: str, attempts: list[AttemptRow]) -> StepSizing:
    if not attempts:
        return StepSizing(step, 0, None, None, None, None, None, ["cached: nothing ran"])
    cpus, memory = attempts[-1].cpus, max(a.memory for a in attempts)
    measured = [a for a in attempts if a.cpu_seconds is not None and a.ended_at]
    busy = sum(a.cpu_seconds or 0 for a in measured)
    wall = sum((a.ended_at or 0) - a.started_at for a in measured)
    used = busy / wall if wall > 0 else None
    reserved = sum(a.cpus if a.reserved_cpus is None else a.reserved_cpus for a in attempts)
    peaks = [a.peak_memory for a in attempts if a.peak_memory is not None]
    peak = max(peaks) if peaks else None
    notes = []
    if peak is not None and peak >= NEAR_LIMIT * memory:
        notes.append(f"memory near its limit: ask for {_suggest_memory(peak)}")
    elif peak is not None and peak < OVER_ASKED * memory:
        notes.append(f"memory over-asked: {_suggest_memory(peak)} would do")
    if used is not None and used < OVER_ASKED * cpus:
        notes.append(f"CPU over-asked: it used {used:.2f} of {cpus:g}")
    return StepSizing(
        step, len(attempts), cpus, reserved / len(attempts), used, memory, peak, notes
    )


def _suggest_memory(peak: int) -> str:
    mib = max(6, math.ceil(peak * MEMORY_MARGIN / MIB))
    return f"{mib}m"
