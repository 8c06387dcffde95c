"""One run summary, read from the store, that status, --json and reports all render."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dockyard.store import AttemptRow, InstanceRow, RunRow, Store


@dataclass(frozen=True)
class InstanceSummary:
    row: InstanceRow
    attempts: list[AttemptRow]

    @property
    def duration(self) -> float | None:
        ends = [a.ended_at - a.started_at for a in self.attempts if a.ended_at is not None]
        return sum(ends) if ends else None


@dataclass(frozen=True)
class RunSummary:
    run: RunRow
    instances: list[InstanceSummary]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances:
            counts[inst.row.state] = counts.get(inst.row.state, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        run = asdict(self.run)
        run["duration"] = (self.run.ended_at - self.run.started_at) if self.run.ended_at else None
        return {
            "run": run,
            "counts": self.counts(),
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
    return RunSummary(run, instances)
