"""Every lifecycle table covers every (state, event) pair: a transition, or impossible."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import pytest

from dockyard.lifecycles import (
    ATTEMPT,
    ATTEMPT_IMPOSSIBLE,
    HOLD,
    HOLD_IMPOSSIBLE,
    INSTANCE,
    INSTANCE_IMPOSSIBLE,
    LEASE,
    LEASE_IMPOSSIBLE,
    RUN,
    RUN_IMPOSSIBLE,
    SERVICE,
    SERVICE_IMPOSSIBLE,
    AttemptEvent,
    AttemptState,
    Hold,
    HoldEvent,
    IllegalTransition,
    InstanceEvent,
    LeaseEvent,
    LeaseHold,
    Phase,
    RunEvent,
    RunState,
    ServiceEvent,
    ServiceState,
    advance,
)

TABLES = [
    ("instance", INSTANCE, INSTANCE_IMPOSSIBLE, Phase, InstanceEvent),
    ("attempt", ATTEMPT, ATTEMPT_IMPOSSIBLE, AttemptState, AttemptEvent),
    ("run", RUN, RUN_IMPOSSIBLE, RunState, RunEvent),
    ("service", SERVICE, SERVICE_IMPOSSIBLE, ServiceState, ServiceEvent),
    ("volume hold", HOLD, HOLD_IMPOSSIBLE, Hold, HoldEvent),
    ("cluster volume lease", LEASE, LEASE_IMPOSSIBLE, LeaseHold, LeaseEvent),
]


@pytest.mark.parametrize(
    ("table", "impossible", "states", "events"),
    [t[1:] for t in TABLES],
    ids=[t[0] for t in TABLES],
)
def test_every_state_and_event_pair_is_a_transition_or_impossible(
    table: Mapping[tuple[enum.Enum, enum.Enum], enum.Enum],
    impossible: frozenset[tuple[enum.Enum, enum.Enum]],
    states: type[enum.Enum],
    events: type[enum.Enum],
) -> None:
    pairs = {(s, e) for s in states for e in events}
    assert set(table) | impossible == pairs
    assert not set(table) & impossible


def test_a_transition_no_table_allows_fails_loudly() -> None:
    with pytest.raises(IllegalTransition, match="'committed' cannot happen to something 'pending'"):
        advance(INSTANCE, Phase.PENDING, InstanceEvent.COMMITTED)


def test_only_a_running_instance_can_succeed_fail_or_retry() -> None:
    assert advance(INSTANCE, Phase.RUNNING, InstanceEvent.COMMITTED) is Phase.SUCCEEDED
    assert advance(INSTANCE, Phase.RUNNING, InstanceEvent.RETRY) is Phase.PENDING
    assert advance(INSTANCE, Phase.RUNNING, InstanceEvent.GAVE_UP) is Phase.FAILED


def test_every_final_phase_is_final() -> None:
    """Final: nothing but the loss of a committed output (its node gone) moves it on."""
    leaving = {state for (state, event) in INSTANCE if event is not InstanceEvent.OUTPUT_LOST}
    finals = {s for s in Phase if s not in leaving}
    assert finals == {p for p in Phase if p.final}
    assert {(s, e) for (s, e) in INSTANCE if e is InstanceEvent.OUTPUT_LOST} == {
        (Phase.SUCCEEDED, InstanceEvent.OUTPUT_LOST)
    }
