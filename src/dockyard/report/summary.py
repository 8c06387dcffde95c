"""One run summary, read from the store, that status, --json and reports all render."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dockyard.lifecycles import AttemptState
from dockyard.state.rows import AttemptRow, InstanceRow, RunRow
from dockyard.state.store import Store


@dataclass(frozen=True)
class InstanceSummary:
    row: InstanceRow
    attempts: list[AttemptRow]

    @property
    def duration(self) -> float | None:
        ends = [a.ended_at - a.started_at for a in self.attempts if a.ended_at is not None]
        return sum(ends) if ends else None


@dataclass(frozen=True)
class Outage:
    """A time the container engine did not answer during the run."""

    at: float
    seconds: float | None  # None: it had not come back when the run ended


@dataclass(frozen=True)
class RunSummary:
    run: RunRow
    instances: list[InstanceSummary]
    outages: list[Outage] = field(default_factory=list)

    @property
    def lost_attempts(self) -> int:
        """Attempts lost to the engine (or a vanished container) and rerun without a retry."""
        return sum(1 for i in self.instances for a in i.attempts if a.state == AttemptState.LOST)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances:
            counts[inst.row.state] = counts.get(inst.row.state, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        run = asdict(self.run)
        run["params"] = json.loads(self.run.params) if self.run.params else {}
        run["duration"] = (self.run.ended_at - self.run.started_at) if self.run.ended_at else None
        return {
            "run": run,
            "counts": self.counts(),
            "engine_outages": [asdict(o) for o in self.outages],
            "lost_attempts": self.lost_attempts,
            "instances": [
                {
                    **asdict(i.row),
                    "duration": i.duration,
                    "attempts": [asdict(a) for a in i.attempts],
                }
                for i in self.instances
            ],
        }


def load_summary(store: Store, run_id: str | None = None) -> RunSummary:
    run = store.run(run_id)
    attempts: dict[str, list[AttemptRow]] = {}
    for attempt in store.attempts(run.id):
        attempts.setdefault(attempt.instance, []).append(attempt)
    instances = [
        InstanceSummary(row, attempts.get(row.instance, [])) for row in store.instances(run.id)
    ]
    return RunSummary(run, instances, _outages(store, run.id))


def _outages(store: Store, run_id: str) -> list[Outage]:
    """From the engine events: each "away" with its "back", if one came."""
    found: list[Outage] = []
    for at, kind, _, detail in store.events(run_id):
        state = json.loads(detail).get("state") if kind == "engine" and detail else None
        if state == "away":
            found.append(Outage(at, None))
        elif state == "back" and found and found[-1].seconds is None:
            found[-1] = Outage(found[-1].at, at - found[-1].at)
    return found
