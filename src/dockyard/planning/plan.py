"""The reference planner: from (instance graph, observed state) to the next actions,
answered from scratch on every call. Pure. The live planner
(:mod:`dockyard.planning.planner`) is held to it by a property test; both speak the
vocabulary of :mod:`dockyard.planning.actions`.

Instance lifecycle, as a table of (phase, event) -> phase, applied by
:func:`~dockyard.planning.actions.after_attempt` and :func:`plan`::

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

from collections.abc import Mapping
from dataclasses import dataclass, replace

from dockyard.lifecycles import Phase
from dockyard.planning.actions import Block, Observed, Start, memory_for
from dockyard.planning.graph import Graph, InstanceId
from dockyard.planning.schedule import Capacity, Request, fit, in_use

Action = Start | Block


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    finished: bool
    wake_at: float | None = None


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
