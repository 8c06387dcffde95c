"""The planner: from (instance graph, observed state) to the next actions. Pure.

Instance lifecycle, as a table of (phase, event) -> phase, applied by
:func:`after_attempt` and :func:`plan`::

    PENDING   --ready and fits------------> RUNNING           (action Start)
    PENDING   --an upstream failed--------> BLOCKED           (action Block)
    RUNNING   --exit 0, output committed--> SUCCEEDED
    RUNNING   --failed, retries left------> PENDING (retry_at = now + backoff)
    RUNNING   --failed, no retries left---> FAILED
    RUNNING   --lost (container vanished)--> PENDING at once (then after 1, 2, 4 s), not
                                             counted as a retry
    SUCCEEDED, FAILED, BLOCKED are final for the run.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dockyard.planning.graph import Graph, Instance, InstanceId
from dockyard.planning.schedule import Capacity, Request, fit, in_use

MAX_LOST = 5
LOST_BACKOFF = 1.0  # seconds before the second rerun of a lost instance; doubled after
SIGPIPE_EXIT = 128 + 13  # a producer's exit when its consumer stopped reading: fine


class Phase(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    INTERRUPTED = "interrupted"  # the run ended (a signal, the engine away) before it did

    @property
    def final(self) -> bool:
        return self is not Phase.PENDING and self is not Phase.RUNNING


class Reason(enum.StrEnum):
    EXITED = "exited"
    OOM = "out-of-memory"
    TIMEOUT = "timed-out"
    ENGINE = "engine-error"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Observed:
    phase: Phase = Phase.PENDING
    attempts: int = 0
    memory: int | None = None
    retry_at: float | None = None
    reason: str | None = None
    lost: int = 0  # attempts lost to the engine (container gone): not held against retries


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    exit_code: int | None
    reason: Reason = Reason.EXITED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason is Reason.EXITED


@dataclass(frozen=True, order=True)
class Start:
    instance: InstanceId
    attempt: int
    memory: int
    node: str | None = None  # where it runs (None: the only node there is)


@dataclass(frozen=True, order=True)
class Block:
    instance: InstanceId
    because: InstanceId


Action = Start | Block


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    finished: bool
    wake_at: float | None = None


def memory_for(instance: Instance, seen: Observed) -> int:
    return seen.memory if seen.memory is not None else instance.memory


def plan(
    graph: Graph,
    observed: Mapping[InstanceId, Observed],
    pool: Capacity,
    now: float,
    *,
    keep_going: bool = False,
) -> Plan:
    """The actions to take now. ``finished`` is true when nothing is running or can start."""
    state = {iid: observed.get(iid, Observed()) for iid in graph.order}
    running = [iid for iid, s in state.items() if s.phase is Phase.RUNNING]
    any_failed = any(s.phase is Phase.FAILED for s in state.values())
    actions: list[Action] = []
    ready: list[Request] = []
    wake_at: float | None = None
    for iid in graph.order:
        unit = graph.group(iid)  # a streamed chain is planned as one unit, at its producer
        if unit[0] != iid or any(state[m].phase is not Phase.PENDING for m in unit):
            continue
        sources = [m.source for member in unit for m in graph.instances[member].upstream]
        ups = [state[source] for source in sources]
        bad = next(
            (
                src
                for src, u in zip(sources, ups, strict=True)
                if u.phase in (Phase.FAILED, Phase.BLOCKED)
            ),
            None,
        )
        if bad is not None:
            for member in unit:
                actions.append(Block(member, bad))
                state[member] = replace(state[member], phase=Phase.BLOCKED)
            continue
        if not all(u.phase is Phase.SUCCEEDED for u in ups):
            continue
        retry_at = max((state[m].retry_at or 0.0) for m in unit)
        if retry_at > now:
            wake_at = retry_at if wake_at is None else min(wake_at, retry_at)
            continue
        need = in_use(
            Capacity.of(graph.instances[m].cpus, memory_for(graph.instances[m], state[m]))
            for m in unit
        )
        ready.append(Request(str(iid), need, max(graph.priority[m] for m in unit)))

    if any_failed and not keep_going:
        ready = []
        wake_at = None
    used = in_use(
        Capacity.of(graph.instances[i].cpus, memory_for(graph.instances[i], state[i]))
        for i in running
    )
    by_key = {str(iid): iid for iid in graph.order}
    for request in fit(ready, pool - used):
        for member in graph.group(by_key[request.key]):
            seen = state[member]
            actions.append(
                Start(member, seen.attempts + 1, memory_for(graph.instances[member], seen))
            )
    starts = any(isinstance(a, Start) for a in actions)
    finished = not running and not starts and wake_at is None
    return Plan(tuple(actions), finished, wake_at)


def after_attempt(
    instance: Instance, seen: Observed, outcome: Outcome, now: float, pool: Capacity
) -> Observed:
    """The observed state of an instance once an attempt has ended without success."""
    memory = memory_for(instance, seen)
    policy = instance.retries
    if outcome.reason is Reason.LOST:
        if seen.lost >= MAX_LOST:
            return replace(seen, phase=Phase.FAILED, reason=outcome.reason.value)
        # At once the first time (its node is gone: another takes it), then a little later
        # each time (a node that is up but cannot take it now, e.g. its agent restarting).
        wait = LOST_BACKOFF * 2 ** (seen.lost - 1) if seen.lost else 0.0
        return replace(
            seen,
            phase=Phase.PENDING,
            lost=seen.lost + 1,
            retry_at=now + wait,
            reason=outcome.reason.value,
        )
    if seen.attempts - seen.lost > policy.max:
        return replace(seen, phase=Phase.FAILED, reason=outcome.reason.value)
    if outcome.reason is Reason.OOM and policy.memory_factor > 1:
        memory = int(memory * policy.memory_factor)
        if memory > pool.memory:
            return replace(seen, phase=Phase.FAILED, reason=outcome.reason.value)
    return replace(
        seen,
        phase=Phase.PENDING,
        memory=memory,
        retry_at=now + policy.backoff,
        reason=outcome.reason.value,
    )
