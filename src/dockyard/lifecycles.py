"""Lifecycles as tables: every state each thing can be in, and what each event makes of it.

Code moves a state on only through :func:`advance`, so a transition that is not in a table
is a bug that fails loudly instead of a silent inconsistency in the store. A test checks
that every (state, event) pair of each table is either a transition or listed as one that
cannot happen (as flocker's ``DATASET_TRANSITIONS``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar


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


class InstanceEvent(enum.StrEnum):
    REUSED = "reused"  # the cache answered its key
    ADOPTED = "adopted"  # a dead run's container carries its key
    STARTED = "started"
    COMMITTED = "committed"  # its attempt succeeded and its output is committed
    RETRY = "retry"  # its attempt failed (or was lost) and it may run again
    GAVE_UP = "gave-up"  # its attempt failed and no retry is left
    UPSTREAM_FAILED = "upstream-failed"
    NEVER_FITS = "never-fits"  # no node of the pool could ever take it
    RUN_STOPPED = "run-stopped"  # the run ended (a signal, the engine away) before it did
    OUTPUT_LOST = "output-lost"  # its committed output was kept only on a node now gone


INSTANCE: Mapping[tuple[Phase, InstanceEvent], Phase] = {
    (Phase.PENDING, InstanceEvent.REUSED): Phase.SUCCEEDED,
    (Phase.PENDING, InstanceEvent.ADOPTED): Phase.RUNNING,
    (Phase.PENDING, InstanceEvent.STARTED): Phase.RUNNING,
    (Phase.PENDING, InstanceEvent.UPSTREAM_FAILED): Phase.BLOCKED,
    (Phase.PENDING, InstanceEvent.NEVER_FITS): Phase.FAILED,
    (Phase.PENDING, InstanceEvent.RUN_STOPPED): Phase.INTERRUPTED,
    (Phase.RUNNING, InstanceEvent.COMMITTED): Phase.SUCCEEDED,
    (Phase.RUNNING, InstanceEvent.RETRY): Phase.PENDING,
    (Phase.RUNNING, InstanceEvent.GAVE_UP): Phase.FAILED,
    (Phase.RUNNING, InstanceEvent.RUN_STOPPED): Phase.INTERRUPTED,
    (Phase.SUCCEEDED, InstanceEvent.OUTPUT_LOST): Phase.PENDING,  # made again when needed
}
# Pairs that cannot happen: the planner never starts, reuses or adopts what is not pending,
# only a running instance has an attempt to end, upstream failures reach only what waits, and
# only a committed output can be lost.
INSTANCE_IMPOSSIBLE = frozenset(
    {
        (Phase.PENDING, e)
        for e in (
            InstanceEvent.COMMITTED,
            InstanceEvent.RETRY,
            InstanceEvent.GAVE_UP,
            InstanceEvent.OUTPUT_LOST,
        )
    }
    | {
        (Phase.RUNNING, e)
        for e in (
            InstanceEvent.REUSED,
            InstanceEvent.ADOPTED,
            InstanceEvent.STARTED,
            InstanceEvent.UPSTREAM_FAILED,
            InstanceEvent.NEVER_FITS,
            InstanceEvent.OUTPUT_LOST,
        )
    }
    | {
        (final, e)
        for final in (Phase.SUCCEEDED, Phase.FAILED, Phase.BLOCKED, Phase.INTERRUPTED)
        for e in InstanceEvent
        if (final, e) != (Phase.SUCCEEDED, InstanceEvent.OUTPUT_LOST)
    }
)


class AttemptState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # counts against the step's retries
    LOST = "lost"  # the engine lost or stopped it: rerun without using a retry
    INTERRUPTED = "interrupted"  # the run ended while it ran


class AttemptEvent(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    RUN_STOPPED = "run-stopped"


ATTEMPT: Mapping[tuple[AttemptState, AttemptEvent], AttemptState] = {
    (AttemptState.RUNNING, AttemptEvent.SUCCEEDED): AttemptState.SUCCEEDED,
    (AttemptState.RUNNING, AttemptEvent.FAILED): AttemptState.FAILED,
    (AttemptState.RUNNING, AttemptEvent.LOST): AttemptState.LOST,
    (AttemptState.RUNNING, AttemptEvent.RUN_STOPPED): AttemptState.INTERRUPTED,
}
ATTEMPT_IMPOSSIBLE = frozenset(
    (state, event)
    for state in AttemptState
    if state is not AttemptState.RUNNING
    for event in AttemptEvent
)


class RunState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an instance failed (or the run itself hit an error)
    INTERRUPTED = "interrupted"  # a signal, the engine away too long, or a dead process


class RunEvent(enum.StrEnum):
    ALL_SUCCEEDED = "all-succeeded"
    SOME_FAILED = "some-failed"
    STOPPED = "stopped"  # SIGINT/SIGTERM, the engine away longer than the patience
    ERROR = "error"  # dockyard itself failed mid-run
    FOUND_DEAD = "found-dead"  # a later run found it running without a living process


RUN: Mapping[tuple[RunState, RunEvent], RunState] = {
    (RunState.RUNNING, RunEvent.ALL_SUCCEEDED): RunState.SUCCEEDED,
    (RunState.RUNNING, RunEvent.SOME_FAILED): RunState.FAILED,
    (RunState.RUNNING, RunEvent.STOPPED): RunState.INTERRUPTED,
    (RunState.RUNNING, RunEvent.ERROR): RunState.FAILED,
    (RunState.RUNNING, RunEvent.FOUND_DEAD): RunState.INTERRUPTED,
}
RUN_IMPOSSIBLE = frozenset(
    (state, event) for state in RunState if state is not RunState.RUNNING for event in RunEvent
)


class ServiceState(enum.StrEnum):
    STARTING = "starting"  # created and started, not yet seen ready
    READY = "ready"  # healthy (or running, without a health check)
    FAILED = "failed"  # could not start, failed its check, or stopped: its steps fail
    REMOVED = "removed"  # the run ended
    KEPT = "kept"  # the run ended and it says keep: true


class ServiceEvent(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed its check, or not healthy in time
    EXITED = "exited"  # stopped on its own
    ENGINE_STOPPED = "engine-stopped"  # stopped by an engine restart: started again
    NODE_LOST = "node-lost"  # its node went down (a cluster): started anew on another
    RUN_ENDED = "run-ended"
    RUN_ENDED_KEEP = "run-ended-keep"


SERVICE: Mapping[tuple[ServiceState, ServiceEvent], ServiceState] = {
    (ServiceState.STARTING, ServiceEvent.HEALTHY): ServiceState.READY,
    (ServiceState.STARTING, ServiceEvent.UNHEALTHY): ServiceState.FAILED,
    (ServiceState.STARTING, ServiceEvent.EXITED): ServiceState.FAILED,
    (ServiceState.STARTING, ServiceEvent.ENGINE_STOPPED): ServiceState.STARTING,
    (ServiceState.STARTING, ServiceEvent.NODE_LOST): ServiceState.STARTING,
    (ServiceState.STARTING, ServiceEvent.RUN_ENDED): ServiceState.REMOVED,
    (ServiceState.STARTING, ServiceEvent.RUN_ENDED_KEEP): ServiceState.KEPT,
    (ServiceState.READY, ServiceEvent.HEALTHY): ServiceState.READY,
    (ServiceState.READY, ServiceEvent.UNHEALTHY): ServiceState.FAILED,
    (ServiceState.READY, ServiceEvent.EXITED): ServiceState.FAILED,
    (ServiceState.READY, ServiceEvent.ENGINE_STOPPED): ServiceState.STARTING,
    (ServiceState.READY, ServiceEvent.NODE_LOST): ServiceState.STARTING,
    (ServiceState.READY, ServiceEvent.RUN_ENDED): ServiceState.REMOVED,
    (ServiceState.READY, ServiceEvent.RUN_ENDED_KEEP): ServiceState.KEPT,
    # A failed service is not kept, whatever it says: the next run starts a new one.
    (ServiceState.FAILED, ServiceEvent.RUN_ENDED): ServiceState.REMOVED,
    (ServiceState.FAILED, ServiceEvent.RUN_ENDED_KEEP): ServiceState.REMOVED,
}
SERVICE_IMPOSSIBLE = frozenset(
    {
        (ServiceState.FAILED, e)
        for e in (
            ServiceEvent.HEALTHY,
            ServiceEvent.UNHEALTHY,
            ServiceEvent.EXITED,
            ServiceEvent.ENGINE_STOPPED,
            ServiceEvent.NODE_LOST,
        )
    }
    | {(s, e) for s in (ServiceState.REMOVED, ServiceState.KEPT) for e in ServiceEvent}
)


class Hold(enum.StrEnum):
    """How a run holds a named volume (``flock`` on this host; a lease on a cluster)."""

    FREE = "free"
    SHARED = "shared"  # held by readers
    EXCLUSIVE = "exclusive"  # held by one writer


class HoldEvent(enum.StrEnum):
    READ = "read"  # a run that only reads it asks
    WRITE = "write"  # a run that writes it asks
    LAST_RELEASED = "last-released"  # the last holder let go (or its process died)
    RELEASED = "released"  # a reader let go, others still hold it


HOLD: Mapping[tuple[Hold, HoldEvent], Hold] = {
    (Hold.FREE, HoldEvent.READ): Hold.SHARED,
    (Hold.FREE, HoldEvent.WRITE): Hold.EXCLUSIVE,
    (Hold.SHARED, HoldEvent.READ): Hold.SHARED,
    (Hold.SHARED, HoldEvent.RELEASED): Hold.SHARED,
    (Hold.SHARED, HoldEvent.LAST_RELEASED): Hold.FREE,
    (Hold.EXCLUSIVE, HoldEvent.LAST_RELEASED): Hold.FREE,
}
# A writer beside readers, or anyone beside a writer, is refused (or queued with
# --wait-for-volumes): never a transition. Nothing is released that is not held.
HOLD_IMPOSSIBLE = frozenset(
    {
        (Hold.SHARED, HoldEvent.WRITE),
        (Hold.EXCLUSIVE, HoldEvent.READ),
        (Hold.EXCLUSIVE, HoldEvent.WRITE),
        (Hold.EXCLUSIVE, HoldEvent.RELEASED),
        (Hold.FREE, HoldEvent.RELEASED),
        (Hold.FREE, HoldEvent.LAST_RELEASED),
    }
)


class LeaseHold(enum.StrEnum):
    """A cluster volume's lease (:mod:`dockyard.agent.leases`), as to mounting it."""

    FREE = "free"  # no node has it mounted (its owner, if any, keeps the published snapshot)
    MOUNTED = "mounted"  # its owner has it mounted read-write
    # Its owner's last mount ended; the owner takes the snapshot to publish (another node's
    # mount waits for that, as for no other holder).
    RELEASING = "releasing"


class LeaseEvent(enum.StrEnum):
    TAKEN = "taken"  # a node mounts it (the next epoch)
    TAKEN_OVER = "taken-over"  # a node mounts it while Swarm declares its holder down
    RELEASED = "released"  # its holder unmounted it and published what it left
    GIVEN_BACK = "given-back"  # its holder gives it back unchanged (a mount that failed)
    HANDED = "handed"  # moved to another node without a mount (the next epoch)
    SEEDED = "seeded"  # a new volume's first content
    RELEASING = "releasing"  # its holder's last mount ended: it takes the snapshot to publish
    TAKEN_BACK = "taken-back"  # its holder mounts it again before it published (its epoch)


LEASE: Mapping[tuple[LeaseHold, LeaseEvent], LeaseHold] = {
    (LeaseHold.FREE, LeaseEvent.TAKEN): LeaseHold.MOUNTED,
    (LeaseHold.MOUNTED, LeaseEvent.TAKEN_OVER): LeaseHold.MOUNTED,
    (LeaseHold.MOUNTED, LeaseEvent.RELEASED): LeaseHold.FREE,
    (LeaseHold.MOUNTED, LeaseEvent.GIVEN_BACK): LeaseHold.FREE,
    (LeaseHold.FREE, LeaseEvent.HANDED): LeaseHold.FREE,
    (LeaseHold.FREE, LeaseEvent.SEEDED): LeaseHold.FREE,
    (LeaseHold.MOUNTED, LeaseEvent.RELEASING): LeaseHold.RELEASING,
    (LeaseHold.RELEASING, LeaseEvent.RELEASED): LeaseHold.FREE,
    (LeaseHold.RELEASING, LeaseEvent.GIVEN_BACK): LeaseHold.FREE,
    (LeaseHold.RELEASING, LeaseEvent.TAKEN_BACK): LeaseHold.MOUNTED,
    (LeaseHold.RELEASING, LeaseEvent.TAKEN_OVER): LeaseHold.MOUNTED,
}
# Refused by the rules, never a transition: a mounted (or releasing) volume is taken by
# another node only from a holder declared down, and is neither handed nor seeded; a free
# one has no holder to take it over from, release it or give it back (a release under a
# stale epoch is fenced); only a mounted one starts releasing, only a releasing one is taken
# back. Who may do what (the owner, its epoch) the rules check beside the table.
LEASE_IMPOSSIBLE = frozenset(
    {
        (LeaseHold.MOUNTED, LeaseEvent.TAKEN),
        (LeaseHold.MOUNTED, LeaseEvent.HANDED),
        (LeaseHold.MOUNTED, LeaseEvent.SEEDED),
        (LeaseHold.FREE, LeaseEvent.TAKEN_OVER),
        (LeaseHold.FREE, LeaseEvent.RELEASED),
        (LeaseHold.FREE, LeaseEvent.GIVEN_BACK),
        (LeaseHold.FREE, LeaseEvent.RELEASING),
        (LeaseHold.FREE, LeaseEvent.TAKEN_BACK),
        (LeaseHold.MOUNTED, LeaseEvent.TAKEN_BACK),
        (LeaseHold.RELEASING, LeaseEvent.TAKEN),
        (LeaseHold.RELEASING, LeaseEvent.HANDED),
        (LeaseHold.RELEASING, LeaseEvent.SEEDED),
        (LeaseHold.RELEASING, LeaseEvent.RELEASING),
    }
)

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class IllegalTransition(AssertionError):
    """A state change no table allows: a bug in dockyard, never a user's mistake."""


def advance(table: Mapping[tuple[S, E], S], state: S, event: E) -> S:
    try:
        return table[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"{event.value!r} cannot happen to something {state.value!r}"
        ) from None
