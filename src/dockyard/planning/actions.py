"""What the planner decides, as values the tests compare: each action is carried out by the
run loop's collaborators (see :mod:`dockyard.planning.planner`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dockyard.planning.graph import InstanceId
from dockyard.planning.plan import Block, Outcome, Reason, Start
from dockyard.runtime.base import LOCAL_NODE
from dockyard.units import format_memory


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
