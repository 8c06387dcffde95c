"""The run journal: everything a run writes about itself, in one place.

Rows go to the state store and events to the store and, at once, to the reporter (the
live progress). Rows are buffered and written in one transaction per turn of the loop
(:meth:`RunJournal.flush`), and rows of one kind for one table together (one
``executemany``): at 100,000 instances one statement, let alone one commit, per row would
dominate the run. Each table keeps its rows in order; tables need no order among
themselves. The loop flushes before it lets a worker remove a container, so a committed
result is on disk before the container that made it is gone; a crash in between loses at
most a turn's rows, never a result that can no longer be found again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dockyard.events import Event, Reporter
from dockyard.lifecycles import (
    ATTEMPT,
    INSTANCE,
    AttemptEvent,
    AttemptState,
    InstanceEvent,
    Phase,
    RunState,
    advance,
)
from dockyard.planning.graph import InstanceId
from dockyard.state.rows import RunRow
from dockyard.state.store import Store

Clock = Callable[[], float]
SUCCEEDED = advance(ATTEMPT, AttemptState.RUNNING, AttemptEvent.SUCCEEDED).value
INTERRUPTED = advance(ATTEMPT, AttemptState.RUNNING, AttemptEvent.RUN_STOPPED).value


class _Table:
    """One table's rows waiting to be written: runs of rows of one kind, in order."""

    def __init__(self) -> None:
        self.runs: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []

    def add(self, kind: tuple[str, ...], row: tuple[Any, ...]) -> None:
        if self.runs and self.runs[-1][0] == kind:
            self.runs[-1][1].append(row)
        else:
            self.runs.append((kind, [row]))


class RunJournal:
    def __init__(self, store: Store, reporter: Reporter, clock: Clock):
        self.store = store
        self.reporter = reporter
        self.clock = clock
        self.run_id = ""
        self.instances = _Table()  # kind: the columns an update sets
        self.attempts = _Table()  # kind: ("start",), or the columns an update sets
        self.events: list[tuple[float, str, str | None, dict[str, Any] | None]] = []
        self.outputs: list[tuple[str, str, int, int, float]] = []
        self.cache: list[tuple[str, str, str, str, float, Mapping[str, str] | None]] = []
        # each instance's state as written (those not here are pending: the run's start)
        self.phases: dict[InstanceId, Phase] = {}

    # -- the run --------------------------------------------------------------------------------

    def open(
        self, run: RunRow, instances: Iterable[tuple[str, str]], notes: Iterable[Event]
    ) -> None:
        """Create the run's rows (its instances pending) and record what came before it."""
        self.store.create_run(run, list(instances))
        self.run_id = run.id
        for note in notes:
            self.store.event(run.id, note.at, note.kind, note.instance, note.detail or None)

    def added(self, iid: InstanceId) -> None:
        """An instance handed over while the run goes on: pending, written at once (the
        rows of what happens to it come after)."""
        self.store.add_instances(self.run_id, [(str(iid), iid.step)])

    def finish(self, state: RunState, message: str | None) -> None:
        now = self.clock()
        self.flush()
        self.store.finish_run(self.run_id, state.value, now, message)
        self.report(Event("run-ended", now, detail={"run": self.run_id, "state": state.value}))
        self.flush()

    def close_dead(self, run_id: str, message: str) -> None:
        """A run found running without a living process: it is over."""
        self.store.mark_interrupted(run_id, self.clock(), message)
        self.report(Event("recovered", self.clock(), detail={"run": run_id}))

    def report(self, event: Event) -> None:
        """Record an event (once the run exists) and show it now."""
        if self.run_id:
            detail = {k: v for k, v in event.detail.items() if k != "run"} or None
            self.events.append((event.at, event.kind, event.instance, detail))
        self.reporter(event)

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written."""
        return bool(
            self.instances.runs or self.attempts.runs or self.events or self.outputs or self.cache
        )

    def flush(self) -> None:
        """Write what was buffered, in one transaction."""
        if not self.pending:
            return
        store, run_id = self.store, self.run_id
        with store.transaction():  # (rolled back whole if it fails: the rows stay buffered)
            store.record_outputs(self.outputs)
            for kind, rows in self.attempts.runs:
                if kind == ("start",):
                    store.insert_attempts(run_id, rows)
                else:
                    store.update_attempts(run_id, kind, rows)
            for kind, rows in self.instances.runs:
                store.update_instances(run_id, kind, rows)
            store.put_cache_entries(self.cache)
            store.add_events(run_id, self.events)
        self.attempts.runs, self.instances.runs = [], []
        self.outputs, self.cache, self.events = [], [], []

    # -- instances ------------------------------------------------------------------------------

    def keyed(self, iid: InstanceId, key: str) -> None:
        self._instance(iid, cache_key=key)

    def cached(self, iid: InstanceId, key: str, output: str) -> None:
        """The cache answered ``iid``: its row says so, which is all a later reader needs;
        the event only goes to the reporter (a rerun of 100,000 would store 100,000)."""
        self._move(iid, InstanceEvent.REUSED, cache_key=key, cached=1, output=output)
        self.reporter(Event("cached", self.clock(), str(iid), {"output": output}))

    def blocked(self, iid: InstanceId, because: InstanceId) -> None:
        self._move(iid, InstanceEvent.UPSTREAM_FAILED, reason=f"upstream {because} failed")
        self.report(Event("blocked", self.clock(), str(iid), {"because": str(because)}))

    def never_fitted(self, iid: InstanceId) -> None:
        self._move(iid, InstanceEvent.NEVER_FITS, reason="never fitted into the pool")

    def started(
        self,
        iid: InstanceId,
        attempt: int,
        cpus: float,
        memory: int,
        log_path: str,
        node: str,
        adopted_from: str | None = None,
        node_name: str | None = None,
        usage_key: str | None = None,
        reserved: float | None = None,
        basis: str = "declared",
    ) -> None:
        """An attempt started (or was adopted) on ``node`` (``node_name``: what people call
        it, on a cluster), taking ``reserved`` CPUs from the pool (None: its ``cpus``)."""
        now, name = self.clock(), str(iid)
        packed = reserved is not None and basis != "declared"
        row = (name, attempt, cpus, memory, now, log_path, node, usage_key or None)
        self.attempts.add(("start",), (*row, *((reserved, basis) if packed else (None, None))))
        started = InstanceEvent.STARTED if adopted_from is None else InstanceEvent.ADOPTED
        self._move(iid, started, attempts=attempt)
        detail: dict[str, Any] = {"attempt": attempt, "node": node}
        if node_name is not None:
            detail["node_name"] = node_name
        if adopted_from is None:
            self.report(Event("started", now, name, detail))
        else:
            self.report(Event("adopted", now, name, {**detail, "from": adopted_from}))

    def succeeded(
        self,
        iid: InstanceId,
        attempt: int,
        ended: Mapping[str, Any],
        output: tuple[str, str, int, int],
        cache: tuple[str, Mapping[str, str]] | None,
    ) -> None:
        """An attempt succeeded and its output (digest, where, bytes, files) is committed;
        with ``cache``, its (key, what it left in volumes) answers that key from now on."""
        name, at = str(iid), float(ended["ended_at"])
        digest, where, size, files = output
        self.outputs.append((digest, where, size, files, at))
        self._attempt(iid, attempt, state=SUCCEEDED, **ended)
        self._move(iid, InstanceEvent.COMMITTED, output=digest, reason=None)
        if cache is not None:
            self.cache.append((cache[0], digest, self.run_id, name, at, cache[1]))
        self.report(Event("succeeded", at, name, {"output": digest}))

    def ended_badly(
        self,
        iid: InstanceId,
        attempt: int,
        state: AttemptState,
        ended: Mapping[str, Any],
        *,
        final: bool,
        message: str,
    ) -> None:
        """An attempt failed or was lost: the instance fails, or waits for its next try."""
        self._attempt(iid, attempt, state=state.value, **ended)
        self._move(iid, InstanceEvent.GAVE_UP if final else InstanceEvent.RETRY, reason=message)
        detail = {
            "attempt": attempt,
            "reason": ended["reason"],
            "exit_code": ended["exit_code"],
            "message": message,
        }
        self.report(Event("failed" if final else "retrying", self.clock(), str(iid), detail))

    def output_lost(self, iid: InstanceId) -> None:
        """``iid``'s committed output was kept only on nodes that are down: it runs again."""
        reason = "its output was kept only on a node that is down: made again"
        self._move(iid, InstanceEvent.OUTPUT_LOST, output=None, reason=reason)
        self.report(Event("output-lost", self.clock(), str(iid), {"message": reason}))

    def interrupted(self, running: Iterable[tuple[InstanceId, int]]) -> None:
        """The run ends while these attempts still run."""
        now = self.clock()
        for iid, attempt in running:
            self._move(iid, InstanceEvent.RUN_STOPPED)
            self._attempt(iid, attempt, state=INTERRUPTED, ended_at=now)

    def _move(self, iid: InstanceId, event: InstanceEvent, **fields: Any) -> None:
        """``iid``'s state moves by ``event``, as the instance lifecycle says (a move the
        table does not allow fails loudly), with ``fields`` beside it."""
        state = advance(INSTANCE, self.phases.get(iid, Phase.PENDING), event)
        self.phases[iid] = state
        self._instance(iid, state=state.value, **fields)

    def _instance(self, iid: InstanceId, **fields: Any) -> None:
        self.instances.add(tuple(fields), (*fields.values(), str(iid)))

    def _attempt(self, iid: InstanceId, attempt: int, **fields: Any) -> None:
        self.attempts.add(tuple(fields), (*fields.values(), str(iid), attempt))
