"""Concluding attempts: what an ended attempt's result means, and carrying out what the
planner decided about it — commit its output and make it a cache entry, or discard it and
record the failure — in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.disk.kept import Staging
from dockyard.disk.sealing import note_changes
from dockyard.execution.attempts import Result, outcome
from dockyard.execution.journal import RunJournal
from dockyard.execution.ports import OutputStore
from dockyard.execution.resolution import Known
from dockyard.execution.run_volumes import RunVolumes
from dockyard.lifecycles import ATTEMPT, AttemptEvent, AttemptState, advance
from dockyard.planning.actions import Commit, Fail, Outcome, Reason, Retry, committable
from dockyard.planning.graph import Graph, InstanceId
from dockyard.state.hashing import InputHasher


@dataclass
class _InFlight:
    staging: Staging
    log: Path
    result: Result | None = None
    outcome: Outcome | None = None


class Conclusion:
    def __init__(
        self,
        graph: Graph,
        outputs: OutputStore,
        journal: RunJournal,
        volumes: RunVolumes,
        hasher: InputHasher,
        known: Known,
    ):
        self.graph = graph
        self.outputs = outputs
        self.journal = journal
        self.volumes = volumes
        self.hasher = hasher
        self.known = known
        self.flight: dict[tuple[InstanceId, int], _InFlight] = {}

    def expect(self, iid: InstanceId, attempt: int, staging: Staging, log: Path) -> None:
        """An attempt has begun: this is where its output and logs go."""
        self.flight[(iid, attempt)] = _InFlight(staging, log)

    def ended(self, result: Result) -> Outcome:
        """What the attempt's end means; an output that could be committed but whose folder
        is gone makes the attempt lost."""
        held = self.flight[(result.instance, result.attempt)]
        seen = outcome(result)
        success = self.graph.instances[result.instance].success_codes
        if committable(seen, last=False, success=success) and result.sealed is None:
            seen = Outcome(seen.exit_code, Reason.LOST, "its output folder is gone")
        held.result, held.outcome = result, seen
        return seen

    def commit(self, action: Commit) -> tuple[str, int | None]:
        """Commit the attempt's output; its digest and the exit status it had."""
        held = self.flight.pop((action.instance, action.attempt))
        assert held.result is not None and held.outcome is not None
        assert held.result.sealed is not None  # (only what could be committed is)
        stored = self.outputs.commit(held.staging, held.result.sealed)
        note_changes(held.log, stored.changes)
        self.known.outputs[action.instance] = stored.digest
        instance = self.graph.instances[action.instance]
        cache = None
        if instance.cacheable:
            left = self.volumes.written_by(instance, self.hasher)
            cache = (self.known.keys[action.instance], left)
        self.journal.succeeded(
            action.instance,
            action.attempt,
            _fields(held.result, held.outcome),
            (stored.digest, stored.location, stored.size, stored.files),
            cache,
        )
        return stored.digest, held.outcome.exit_code

    def give_up_or_retry(self, action: Retry | Fail) -> None:
        held = self.flight.pop((action.instance, action.attempt))
        assert held.result is not None
        self.outputs.discard(held.staging)
        lost = action.outcome.reason is Reason.LOST  # not held against its retries
        event = AttemptEvent.LOST if lost else AttemptEvent.FAILED
        self.journal.ended_badly(
            action.instance,
            action.attempt,
            advance(ATTEMPT, AttemptState.RUNNING, event),
            _fields(held.result, action.outcome),
            final=isinstance(action, Fail),
            message=action.message,
        )

    def running(self) -> list[tuple[InstanceId, int]]:
        """The attempts that have not been concluded."""
        return list(self.flight)


def _fields(result: Result, seen: Outcome) -> dict[str, Any]:
    return {
        "container_id": result.container_id,
        "ended_at": result.ended_at,
        "exit_code": seen.exit_code,
        "reason": seen.reason.value,
        "detail": seen.detail or None,
        "cpu_seconds": result.usage.cpu_seconds,
        "peak_memory": result.usage.peak_memory,
        "io_read": result.usage.io_read,
        "io_write": result.usage.io_write,
    }
