"""What the planner decides, as values the tests compare: each action is carried out by the
run loop's collaborators (see :mod:`dockyard.planning.planner`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dockyard.lifecycles import Phase
from dockyard.planning.graph import Instance, InstanceId
from dockyard.planning.schedule import Capacity
from dockyard.runtime.base import LOCAL_NODE
from dockyard.units import format_memory

MAX_LOST = 5
LOST_BACKOFF = 1.0  # seconds before the second rerun of a lost instance; doubled after
SIGPIPE_EXIT = 128 + 13  # a producer's exit when its consumer stopped reading: fine


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
    node: str = LOCAL_NODE  # where it runs (on one engine, its one node)
    reserved: float | None = None  # the CPUs it takes from the pool (None: its cpus)
    basis: str = "declared"  # what that is worked out from (planning.packing.Basis)


@dataclass(frozen=True, order=True)
class Block:
    instance: InstanceId
    because: InstanceId


def committable(outcome: Outcome, *, last: bool = True, success: tuple[int, ...] = (0,)) -> bool:
    """Whether an attempt that ended so may have its output committed: the one place this
    is decided. A success; or, for a member of a streamed chain that is not its ``last``, an
    exit by SIGPIPE after its consumer left, as in a shell. ``last=False`` asks whether it
    could be (what the worker seals before the planner has seen the whole chain).
    ``success``: the exit statuses that mean success (a CWL tool's ``successCodes``)."""
    if outcome.reason is Reason.EXITED and outcome.exit_code in success:
        return True
    return not last and outcome.reason is Reason.EXITED and outcome.exit_code == SIGPIPE_EXIT


def memory_for(instance: Instance, seen: Observed) -> int:
    return seen.memory if seen.memory is not None else instance.memory


@dataclass(frozen=True)
class Orphan:
    """A container of an earlier, dead run that carries an instance's current cache key."""

    container_id: str
    run_id: str
    attempt: int
    running: bool
    node: str = LOCAL_NODE


@dataclass(frozen=True)
class Resolution:
    """What the loop found for a unit whose upstreams all succeeded."""

    reusable: bool  # every member has a committed output under its key (and may reuse it)
    orphans: Mapping[InstanceId, Orphan]  # members with a dead run's container to adopt


@dataclass(frozen=True, order=True)
class Reuse:
    instance: InstanceId


@dataclass(frozen=True)
class Adopt:
    instance: InstanceId
    orphan: Orphan


@dataclass(frozen=True, order=True)
class Kill:
    """A stream partner failed: stop this member, which may wait on the pipe forever."""

    instance: InstanceId
    attempt: int


@dataclass(frozen=True, order=True)
class Commit:
    instance: InstanceId
    attempt: int


@dataclass(frozen=True)
class Retry:
    instance: InstanceId
    attempt: int
    outcome: Outcome
    message: str
    at: float


@dataclass(frozen=True)
class Fail:
    instance: InstanceId
    attempt: int
    outcome: Outcome
    message: str


Action = Start | Block | Reuse | Adopt | Kill | Commit | Retry | Fail


def describe(outcome: Outcome, memory: int) -> str:
    """How an attempt ended, in words."""
    if outcome.reason is Reason.EXITED:
        return f"exited with status {outcome.exit_code}"
    if outcome.reason is Reason.OOM:
        return (
            f"out of memory: killed by the kernel at its {format_memory(memory)} limit "
            f"(exit {outcome.exit_code})"
        )
    if outcome.reason is Reason.TIMEOUT:
        return "timed out"
    return outcome.detail or outcome.reason.value


__all__ = [
    "Action",
    "Adopt",
    "Block",
    "Commit",
    "Fail",
    "Kill",
    "Orphan",
    "Resolution",
    "Retry",
    "Reuse",
    "Start",
    "describe",
]


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
