"""The incremental planner: what to do next, from what has happened. Deterministic, no I/O.

:func:`dockyard.planning.plan.plan` answers the same question from scratch, walking every instance;
done on every turn of the loop that is quadratic in the number of instances. This planner
keeps what that walk would find up to date as things happen instead — a count per unit of
the upstream instances it still waits for, the units ready to start grouped by what they
need, a heap of retries by time — so each event and each start costs about the same at
100,000 instances as at ten. A property test holds the two to the same answers.

The loop tells it what it observed and applies the actions it returns::

    resolvable()                 units whose upstreams all succeeded: compute their keys
    resolved(unit, resolution)   -> Reuse | Adopt actions (or the unit becomes ready)
    next(now)                    -> Plan of Block and Start actions, finished, wake_at
    ended(instance, attempt, outcome, now)
                                 -> Kill (stream partners), then, once the whole unit has
                                    ended, Commit, or Retry / Fail with their messages

A unit is an instance, or a streamed chain of instances that start, fail and retry together.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from dockyard.lifecycles import INSTANCE, InstanceEvent, Phase, advance
from dockyard.planning.actions import (
    Action,
    Adopt,
    Block,
    Commit,
    Fail,
    Kill,
    Observed,
    Outcome,
    Reason,
    Resolution,
    Retry,
    Reuse,
    Start,
    after_attempt,
    committable,
    describe,
)
from dockyard.planning.graph import Graph, Instance, InstanceId
from dockyard.planning.packing import Packing, Reservation
from dockyard.planning.plan import Plan
from dockyard.planning.ready import Ready
from dockyard.planning.schedule import ZERO, Capacity, in_use
from dockyard.planning.volume_homes import VolumeHomes
from dockyard.runtime.base import LOCAL_NODE
from dockyard.units import format_memory

Unit = tuple[InstanceId, ...]


class Planner:
    def __init__(
        self,
        graph: Graph,
        pool: Capacity | Mapping[str, Capacity],
        *,
        keep_going: bool = False,
        no_cache: bool = False,
        packing: Packing | None = None,
    ):
        self.graph = graph
        self.packing = packing
        self.reserved: dict[InstanceId, Reservation] = {}  # where packing was asked
        self.nodes = dict(pool) if isinstance(pool, Mapping) else {LOCAL_NODE: pool}
        self.largest = max(self.nodes.values(), key=lambda c: (c.memory, c.millicpus))
        self.keep_going = keep_going
        self.no_cache = no_cache
        self.position: dict[InstanceId, int] = {}
        self.observed: dict[InstanceId, Observed] = {}
        self.heads: list[InstanceId] = []
        # Per unit (by its head): the upstream instances it still waits for; per instance:
        # the units that wait for it.
        # Invariant: for a pending unit, ``waiting`` counts its sources not succeeded (while
        # a unit runs or is done it is not kept up: it is counted again when it retries).
        self.waiting: dict[InstanceId, int] = {}
        self.sources: dict[InstanceId, frozenset[InstanceId]] = {}
        self.dependents: dict[InstanceId, list[InstanceId]] = {}
        self.to_resolve: deque[InstanceId] = deque()
        for iid in graph.order:
            self._track(iid)
        self.ready = Ready()
        self.retries: list[tuple[float, int, InstanceId]] = []  # (retry_at, position, head)
        self.retry_due: dict[InstanceId, float] = {}  # head -> its live entry (others: stale)
        self.remade: set[InstanceId] = set()  # made again after their output was lost
        self.blocks: list[Block] = []
        self.running: dict[InstanceId, tuple[str, Capacity]] = {}  # head -> (node, need)
        self.volumes = VolumeHomes(graph)
        self.used = dict.fromkeys(self.nodes, ZERO)
        self.ended_so_far: dict[tuple[InstanceId, int], dict[InstanceId, Outcome]] = {}
        self.killed: set[tuple[InstanceId, int]] = set()
        self.failed = False

    def add(self, instance: Instance) -> None:
        """Plan one more instance, handed over while the run goes on (see
        :meth:`Graph.add`): it is resolved at the next turn."""
        self.graph.add(instance)
        self._track(instance.id)

    def _track(self, iid: InstanceId) -> None:
        """Plan ``iid`` (in the graph's order): its place, and for the head of a unit what
        the unit waits for (a unit that waits for nothing is resolvable at once)."""
        self.position[iid] = len(self.position)
        self.observed[iid] = Observed()
        unit = self.graph.group(iid)
        if unit[0] != iid:
            return
        self.heads.append(iid)
        instances = self.graph.instances
        sources = frozenset(m.source for member in unit for m in instances[member].upstream)
        self.sources[iid] = sources
        self.waiting[iid] = len(sources)
        for source in sources:
            self.dependents.setdefault(source, []).append(iid)
        if not sources:
            self.to_resolve.append(iid)

    # -- resolution: keys, cache, adoption --------------------------------------------------

    def resolvable(self) -> list[Unit]:
        """The units whose upstreams have all succeeded since the last call."""
        found = []
        while self.to_resolve:
            found.append(self.graph.group(self.to_resolve.popleft()))
        return found

    def resolved(self, unit: Unit, resolution: Resolution) -> list[Action]:
        """Reuse a unit that the cache answers whole, adopt one whose every member has a
        dead run's container, or make it ready to start."""
        cacheable = all(self.graph.instances[m].cacheable for m in unit)
        if resolution.reusable and cacheable and not self.no_cache:
            actions: list[Action] = []
            for member in unit:
                actions.append(Reuse(member))
                self._succeeded(member, InstanceEvent.REUSED)
            return actions
        if all(m in resolution.orphans for m in unit):
            need = self._need(unit)
            node = resolution.orphans[unit[0]].node
            if node not in self.nodes:  # a node that is gone: its room is nobody's now
                self.nodes[node] = ZERO
                self.used[node] = ZERO
            self.running[unit[0]] = (node, need)
            self.used[node] = self.used[node] + need
            actions = []
            for member in unit:
                memory = self.graph.instances[member].memory
                self._move(member, InstanceEvent.ADOPTED, attempts=1, memory=memory)
                actions.append(Adopt(member, resolution.orphans[member]))
            return actions
        self._make_ready(unit[0])
        return []

    # -- the pool ---------------------------------------------------------------------------

    def nodes_changed(self, pool: Mapping[str, Capacity]) -> None:
        """The pool as it is now: a node that is gone or down takes no new work (what still
        runs there is reported lost by those who watch it, and its room is given back as it
        ends), and a node that came back or joined takes work again."""
        for node in self.nodes:
            if node not in pool:
                self.nodes[node] = ZERO
        for node, room in pool.items():
            self.nodes[node] = room
            self.used.setdefault(node, ZERO)
        if pool:  # (the largest node bounds a memory retry; none at all says nothing)
            self.largest = max(pool.values(), key=lambda c: (c.memory, c.millicpus))

    def waiting_for_room(self) -> bool:
        """Whether ready work is left that no node has room for now (on a cluster, a node
        that is down may come back)."""
        return len(self.ready) > 0 and not self.running

    # -- the next actions ---------------------------------------------------------------------

    def next(self, now: float) -> Plan:
        actions: list[Start | Block] = sorted(self.blocks, key=lambda b: self.position[b.instance])
        self.blocks = []
        stopping = self.failed and not self.keep_going
        self._drop_stale_retries()
        while self.retries and self.retries[0][0] <= now and not stopping:
            head = heapq.heappop(self.retries)[2]
            del self.retry_due[head]
            self._make_ready(head)
            self._drop_stale_retries()
        if not stopping:
            free = {n: self.nodes[n] - self.used[n] for n in self.nodes}
            while (picked := self.ready.pop_fitting(free, self._place)) is not None:
                head, need, node = picked
                self.volumes.started(head, node)
                free[node] = free[node] - need
                self.used[node] = self.used[node] + need
                self.running[head] = (node, need)
                for member in self.graph.group(head):
                    attempt, memory = self.observed[member].attempts + 1, self._memory(member)
                    self._move(
                        member,
                        InstanceEvent.STARTED,
                        attempts=attempt,
                        memory=memory,
                        retry_at=None,
                    )
                    reserved = self.reserved.get(member)
                    actions.append(
                        Start(member, attempt, memory, node, *(reserved or (None, "declared")))
                    )
        wake_at = None if stopping or not self.retries else self.retries[0][0]
        starts = any(isinstance(a, Start) for a in actions)
        finished = not self.running and not starts and wake_at is None and not self.to_resolve
        return Plan(tuple(actions), finished, wake_at)

    # -- an attempt ended ---------------------------------------------------------------------

    def ended(
        self, instance: InstanceId, attempt: int, outcome: Outcome, now: float
    ) -> list[Action]:
        unit = self.graph.group(instance)
        key = (unit[0], attempt)
        bucket = self.ended_so_far.setdefault(key, {})
        bucket[instance] = outcome
        actions: list[Action] = []
        if len(unit) > 1 and not self._fine(unit, instance, outcome):
            for member in unit:
                if member not in bucket and (member, attempt) not in self.killed:
                    self.killed.add((member, attempt))
                    actions.append(Kill(member, attempt))
        if len(bucket) < len(unit):
            return actions  # a streamed chain is concluded once all of it has ended
        del self.ended_so_far[key]
        node, need = self.running.pop(unit[0])
        self.used[node] = self.used[node] - need
        if all(self._fine(unit, m, bucket[m]) for m in unit):
            for member in unit:
                actions.append(Commit(member, attempt))
                self._succeeded(member, InstanceEvent.COMMITTED)
            return actions
        actions += self._failed(unit, attempt, bucket, now)
        for member in unit:
            self.killed.discard((member, attempt))
        return actions

    def _failed(
        self, unit: Unit, attempt: int, outcomes: Mapping[InstanceId, Outcome], now: float
    ) -> list[Action]:
        # The cause is the first member that failed on its own, not one stopped for it.
        failing = [m for m in unit if not self._fine(unit, m, outcomes[m])]
        cause = next((m for m in failing if (m, attempt) not in self.killed), failing[0])
        instance, before = self.graph.instances[cause], self.observed[cause]
        seen = after_attempt(instance, before, outcomes[cause], now, self.largest)
        final = seen.phase is Phase.FAILED
        message = describe(outcomes[cause], before.memory or instance.memory)
        if (
            final
            and outcomes[cause].reason is Reason.OOM
            and instance.retries.memory_factor > 1
            and seen.attempts - seen.lost <= instance.retries.max
        ):
            wanted = int((before.memory or instance.memory) * instance.retries.memory_factor)
            message += (
                f"; the retry would need {format_memory(wanted)}, more than the pool's "
                f"{format_memory(self.largest.memory)}"
            )
        actions: list[Action] = []
        for member in unit:
            own = (
                message
                if member == cause
                else f"stopped: its stream partner {cause} failed ({message})"
            )
            self._move(
                member,
                InstanceEvent.GAVE_UP if final else InstanceEvent.RETRY,
                retry_at=seen.retry_at,
                lost=seen.lost,
                reason=seen.reason,
                memory=seen.memory if member == cause else self.observed[member].memory,
            )
            if final:
                actions.append(Fail(member, attempt, outcomes[member], own))
            else:
                assert seen.retry_at is not None
                actions.append(Retry(member, attempt, outcomes[member], own, seen.retry_at))
        if final:
            self.failed = True
            self._block_downstream(unit)
        else:
            assert seen.retry_at is not None
            head = unit[0]
            if not self._counted_again(head):
                pass  # what it reads is being made again (it waits), or never will be
            elif self.remade & self.sources[head]:
                self.to_resolve.append(head)  # its key is computed again from what it reads
            else:
                self.retry_due[head] = seen.retry_at
                heapq.heappush(self.retries, (seen.retry_at, self.position[head], head))
        return actions

    def _drop_stale_retries(self) -> None:
        while self.retries and self.retry_due.get(self.retries[0][2]) != self.retries[0][0]:
            heapq.heappop(self.retries)

    # -- outputs that are gone ------------------------------------------------------------------

    def outputs_lost(self, instances: Iterable[InstanceId]) -> list[InstanceId]:
        """Committed outputs that no node keeps any more (their node is gone): their units
        run again (not held against their retries), and the pending units that read them
        wait for them again (a running one that could not get them waits once it retries:
        tell this before its end). Returns the instances that will run again."""
        again: list[InstanceId] = []
        for iid in instances:
            unit = self.graph.group(iid)
            if any(self.observed[m].phase is not Phase.SUCCEEDED for m in unit):
                continue  # (already being made again, or not made at all)
            for member in unit:
                lost = self.observed[member].lost + 1
                self._move(member, InstanceEvent.OUTPUT_LOST, lost=lost, retry_at=None)
                again.append(member)
                self.remade.add(member)
                for head in self.dependents.get(member, ()):
                    if self.observed[head].phase is not Phase.PENDING:
                        continue  # (counted again if it retries)
                    if not self.waiting[head]:  # resolvable, ready or waiting to retry
                        with contextlib.suppress(ValueError):
                            self.to_resolve.remove(head)
                        self.ready.discard(head)
                        self.retry_due.pop(head, None)
                    self.waiting[head] += 1
            if self._counted_again(unit[0]):  # (its own sources may be being made again)
                self.to_resolve.append(unit[0])
        return again

    def _counted_again(self, head: InstanceId) -> bool:
        """Count anew what a unit that is pending again waits for; block it (and what
        waits for it) when one of its sources can no longer succeed. Whether it can go on
        at once."""
        unit = self.graph.group(head)
        phases = [self.observed[s].phase for s in self.sources[head]]
        if any(phase in (Phase.FAILED, Phase.BLOCKED) for phase in phases):
            because = _first_bad(self.graph, unit, self.observed)
            for member in unit:
                self._move(member, InstanceEvent.UPSTREAM_FAILED)
                self.blocks.append(Block(member, because))
            self._block_downstream(unit)
            return False
        self.waiting[head] = sum(phase is not Phase.SUCCEEDED for phase in phases)
        return not self.waiting[head]

    # -- queries --------------------------------------------------------------------------------

    def _place(self, head: InstanceId) -> tuple[str | None, str | None]:
        return self.volumes.place(head, self.running)

    def in_phase(self, phase: Phase) -> list[InstanceId]:
        return [iid for iid in self.graph.order if self.observed[iid].phase is phase]

    # -- bookkeeping ----------------------------------------------------------------------------

    def _move(self, member: InstanceId, event: InstanceEvent, **changes: object) -> None:
        """Change an instance's phase only as the lifecycle table says (and its other fields)."""
        seen = self.observed[member]
        phase = advance(INSTANCE, seen.phase, event)
        self.observed[member] = replace(seen, phase=phase, **changes)  # type: ignore[arg-type]

    def _succeeded(self, member: InstanceId, event: InstanceEvent) -> None:
        self._move(member, event, reason=None)
        for head in self.dependents.get(member, ()):
            if self.observed[head].phase is not Phase.PENDING:
                continue  # (one that read an output made before, which was lost since)
            self.waiting[head] -= 1
            if not self.waiting[head]:
                self.to_resolve.append(head)

    def _make_ready(self, head: InstanceId) -> None:
        unit = self.graph.group(head)
        priority = max(self.graph.priority[m] for m in unit)
        self.ready.push(self._need(unit), priority, head)

    def _need(self, unit: Sequence[InstanceId]) -> Capacity:
        """What ``unit`` takes from the pool: its memory, and the CPUs it reserves."""
        if self.packing is None:
            cpus = {m: self.graph.instances[m].cpus for m in unit}
        else:
            reserved = self.packing.reserve(self.graph, unit)
            self.reserved.update(reserved)
            cpus = {m: r.cpus for m, r in reserved.items()}
        return in_use(Capacity.of(cpus[m], self._memory(m)) for m in unit)

    def _memory(self, member: InstanceId) -> int:
        seen = self.observed[member]
        return seen.memory if seen.memory is not None else self.graph.instances[member].memory

    def _block_downstream(self, unit: Unit) -> None:
        """Every unit that waits, directly or not, on a failed one can never run."""
        queue = deque(unit)
        while queue:
            bad = queue.popleft()
            for head in self.dependents.get(bad, ()):
                members = self.graph.group(head)
                if any(self.observed[m].phase is not Phase.PENDING for m in members):
                    continue
                because = _first_bad(self.graph, members, self.observed)
                for member in members:
                    self._move(member, InstanceEvent.UPSTREAM_FAILED)
                    self.blocks.append(Block(member, because))
                    queue.append(member)

    def _fine(self, unit: Unit, iid: InstanceId, outcome: Outcome) -> bool:
        success = self.graph.instances[iid].success_codes
        return committable(outcome, last=iid == unit[-1], success=success)


def _first_bad(
    graph: Graph, members: Iterable[InstanceId], observed: Mapping[InstanceId, Observed]
) -> InstanceId:
    sources = [m.source for member in members for m in graph.instances[member].upstream]
    return next(s for s in sources if observed[s].phase in (Phase.FAILED, Phase.BLOCKED))


__all__ = ["Planner"]
