"""Volume leases: which node may mount a volume read-write, under which epoch.

At most one node holds a volume's lease at a time. A node takes it when the volume is first
mounted there and gives it back after the last unmount, publishing the snapshot it left
(the volume's content from then on); each take raises the epoch. Between the unmount and
the publish the lease is *releasing* (:func:`releasing`): still held, but a mount on
another node waits for it rather than being refused, and a mount on the holder takes it
back under its epoch (:mod:`dockyard.agent.releasing`). A node that did not give the
lease back can lose it in one way only: Swarm declares it ``down``, and another node takes
the lease with the next epoch. When the old node comes back, everything it tries under its
old epoch (publishing what its killed container wrote, say) is refused: it is *fenced*,
and its next mount starts from the published snapshot, never from what it had.

The records live in Swarm's own Raft store (:mod:`dockyard.agent.swarm_leases`), as one
Swarm *config* per volume whose labels hold the lease: the managers replicate it, and an
update carries the version index it was read at, so two updates that race are a compare-
and-swap (the engine refuses the loser, "update out of sequence", and it reads again).
This is a store dockyard did not write, that survives the loss of any worker (and of a
minority of managers when there are three or more), and it needs nothing deployed beside
Swarm (etcd would be a second Raft cluster to run, secure and upgrade). Only the agents on
manager nodes reach it, through their engine's socket; the other agents ask them
(:mod:`dockyard.agent.volume_routes`).

The rules are pure functions of a record (:func:`taken`, :func:`released`, ...) that move
its hold by the lease table (:data:`dockyard.lifecycles.LEASE`) once they have checked who
asks (the owner, under which epoch); the store only reads and swaps records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from dockyard.errors import AgentFailure
from dockyard.lifecycles import LEASE, LeaseEvent, LeaseHold, advance

SWAP_TRIES = 20


class LeaseError(AgentFailure):
    """A lease that cannot be had or used: said to the user as it is."""


class Held(LeaseError):
    pass


class Releasing(Held):
    """Held by a node whose last mount ended and that takes the snapshot to publish: a
    mount elsewhere waits for it (a moment), where it is refused for any other holder."""


class Fenced(LeaseError):
    pass


class NoSuchVolume(LeaseError):
    pass


@dataclass(frozen=True)
class Lease:
    volume: str
    epoch: int = 0
    owner: str = ""  # the node that holds it, or held it last ("" for nobody yet)
    held: bool = False
    snapshot: str = ""  # the published snapshot's uuid ("" for an empty volume)
    holders: tuple[str, ...] = ()  # the nodes that keep that snapshot
    published: float = 0.0
    incarnation: str = ""  # made anew with the record: a volume removed and made again
    releasing: bool = False  # (held:) its owner takes the snapshot to publish (:func:`releasing`)
    version: int = field(default=0, compare=False)  # the store's, for the swap

    def to_json(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["holders"] = list(self.holders)
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Lease:
        return cls(
            volume=str(fields["volume"]),
            epoch=int(fields["epoch"]),
            owner=str(fields["owner"]),
            held=bool(fields["held"]),
            snapshot=str(fields["snapshot"]),
            holders=tuple(str(h) for h in fields["holders"]),
            published=float(fields["published"]),
            incarnation=str(fields.get("incarnation", "")),
            releasing=bool(fields.get("releasing", False)),
            version=int(fields.get("version", 0)),
        )


# -- the rules ------------------------------------------------------------------------------


def taken(lease: Lease, node: str, owner_gone: bool) -> Lease:
    """``lease`` once ``node`` has taken it (unchanged when it holds it already; taken back,
    under its epoch, when it was releasing it); from a holder that Swarm declared down
    (``owner_gone``) too. A holder that is releasing it is waited for (:class:`Releasing`)."""
    if lease.held and lease.owner == node:
        return _to(lease, LeaseEvent.TAKEN_BACK) if lease.releasing else lease
    if lease.held and not owner_gone:
        if lease.releasing:
            raise Releasing(
                f"volume {lease.volume!r} is being released by node {lease.owner[:12]} (lease "
                f"epoch {lease.epoch}), which takes the snapshot to publish"
            )
        raise Held(
            f"volume {lease.volume!r} is mounted read-write on node {lease.owner[:12]} "
            f"(lease epoch {lease.epoch}); it can be mounted here once it is unmounted there "
            "(or once Swarm declares that node down)"
        )
    event = LeaseEvent.TAKEN_OVER if lease.held else LeaseEvent.TAKEN
    return replace(_to(lease, event), epoch=lease.epoch + 1, owner=node)


def releasing(lease: Lease, node: str, epoch: int) -> Lease:
    """``lease`` once ``node``, which holds it under ``epoch`` and whose last mount ended,
    takes the snapshot it will publish (unchanged when that was said already)."""
    _check_holder(lease, node, epoch)
    return lease if lease.releasing else _to(lease, LeaseEvent.RELEASING)


def released(lease: Lease, node: str, epoch: int, snapshot: str, now: float) -> Lease:
    """``lease`` given back by ``node``, which held it under ``epoch`` and left ``snapshot``
    (unchanged when that was done already: a call tried again)."""
    if (lease.held, lease.owner, lease.epoch, lease.snapshot) == (False, node, epoch, snapshot):
        return lease
    _check_holder(lease, node, epoch)
    return replace(
        _to(lease, LeaseEvent.RELEASED), snapshot=snapshot, holders=(node,), published=now
    )


def _check_holder(lease: Lease, node: str, epoch: int) -> None:
    if not lease.held or lease.owner != node or lease.epoch != epoch:
        raise Fenced(
            f"volume {lease.volume!r}: this node's lease (epoch {epoch}) is stale: the volume "
            f"is {'held' if lease.held else 'kept'} by node {lease.owner[:12]} under epoch "
            f"{lease.epoch}; what this node wrote is discarded"
        )


def given_back(lease: Lease, node: str, epoch: int) -> Lease:
    """``lease`` given back unchanged by ``node`` (a mount that failed, a snapshot that could
    not be taken, or mounts that were void): nothing is published. Unchanged when ``node``
    does not hold it under ``epoch`` any more."""
    if lease.held and lease.owner == node and lease.epoch == epoch:
        return _to(lease, LeaseEvent.GIVEN_BACK)
    return lease


def with_holder(lease: Lease, snapshot: str, node: str) -> Lease:
    """``lease`` once ``node`` keeps ``snapshot`` too (unchanged when that is not the
    published snapshot any more)."""
    if lease.snapshot != snapshot or node in lease.holders:
        return lease
    return replace(lease, holders=(*lease.holders, node))


def without_holder(lease: Lease, node: str) -> Lease:
    """``lease`` once ``node`` keeps its published snapshot no more: refused when no other
    node would keep it, or while ``node`` holds the lease."""
    if lease.held and lease.owner == node:
        raise Held(f"volume {lease.volume!r} is mounted on this node")
    if node not in lease.holders:
        return lease
    if lease.snapshot and set(lease.holders) <= {node}:
        raise LeaseError(
            f"this node keeps the only copy of volume {lease.volume!r}'s latest snapshot; "
            "`dockyard volume rm --backend swarm` removes the volume from the swarm"
        )
    return replace(lease, holders=tuple(h for h in lease.holders if h != node))


def seeded(lease: Lease, node: str, snapshot: str, now: float) -> Lease:
    """A new volume's first content, kept by ``node``: refused once the volume was used."""
    if lease.epoch or lease.held or lease.snapshot:
        raise LeaseError(f"volume {lease.volume!r} was used already: its seed is not copied in")
    return replace(
        _to(lease, LeaseEvent.SEEDED), owner=node, snapshot=snapshot, holders=(node,), published=now
    )


def handed(lease: Lease, node: str) -> Lease:
    """``lease`` handed to ``node`` without a mount (a planned move): refused while held."""
    if lease.held:
        raise Held(
            f"volume {lease.volume!r} is mounted on node {lease.owner[:12]}; it moves once "
            "it is unmounted there"
        )
    if lease.snapshot and node not in lease.holders:
        raise LeaseError(
            f"node {node[:12]} does not keep the latest snapshot of {lease.volume!r} yet"
        )
    return replace(_to(lease, LeaseEvent.HANDED), epoch=lease.epoch + 1, owner=node)


def hold(lease: Lease) -> LeaseHold:
    if not lease.held:
        return LeaseHold.FREE
    return LeaseHold.RELEASING if lease.releasing else LeaseHold.MOUNTED


def _to(lease: Lease, event: LeaseEvent) -> Lease:
    """``lease`` once ``event`` happened to it, as to mounting it, by the lease table."""
    after = advance(LEASE, hold(lease), event)
    return replace(lease, held=after is not LeaseHold.FREE, releasing=after is LeaseHold.RELEASING)


# -- the store ------------------------------------------------------------------------------


class LeaseStore(Protocol):
    def get(self, volume: str) -> Lease | None: ...

    def all(self) -> list[Lease]: ...

    def create(self, volume: str) -> Lease: ...

    def swap(self, lease: Lease, new: Lease) -> Lease | None:
        """Write ``new`` over ``lease`` if the record is still at ``lease.version``; the
        record written, or None when another writer came first."""

    def remove(self, volume: str) -> None: ...

    def gone(self, node: str) -> bool:
        """Whether Swarm declares ``node`` down, or it left the swarm (a node whose state
        is not known yet, as after a manager restarts, is not gone)."""

    def nodes(self) -> dict[str, str]:
        """The nodes that are up, by id: their addresses."""


class LeaseAccess(Protocol):
    """The one lease interface: the leases as one node reaches them, directly on a manager
    (:class:`~dockyard.agent.volume_routes.LocalLeases`), else through a manager's agent
    (:class:`~dockyard.agent.volume_routes.RemoteLeases`)."""

    def take(self, volume: str) -> tuple[Lease, dict[str, str]]:
        """Take the lease for this node; also the nodes that are up (id: agent address)."""

    def give_back(self, volume: str, epoch: int) -> Lease:
        """Give the lease back unchanged (a mount that failed)."""

    def releasing(self, volume: str, epoch: int) -> Lease:
        """This node's last mount ended: it takes the snapshot it will publish."""

    def release(self, volume: str, epoch: int, snapshot: str) -> Lease: ...

    def holder(self, volume: str, snapshot: str, node: str) -> Lease: ...

    def hand(self, volume: str, node: str) -> Lease:
        """Hand the lease to ``node`` without a mount (a planned move)."""

    def unhold(self, volume: str) -> Lease:
        """This node keeps the volume's published snapshot no more (it forgets its copy)."""

    def get(self, volume: str) -> tuple[Lease | None, dict[str, str]]: ...

    def all(self) -> list[Lease]: ...

    def create(self, volume: str) -> Lease: ...

    def seeded(self, volume: str, snapshot: str) -> Lease:
        """Publish a new volume's first content, kept on this node."""

    def remove(self, volume: str) -> None: ...


def change(store: LeaseStore, volume: str, rule: Callable[[Lease], Lease]) -> Lease:
    """Apply ``rule`` to the volume's record until the swap succeeds (read, apply, swap)."""
    for attempt in range(SWAP_TRIES):
        lease = store.get(volume)
        if lease is None:
            raise NoSuchVolume(f"no volume {volume!r} on this swarm")
        new = rule(lease)
        if new == lease:
            return lease
        written = store.swap(lease, new)
        if written is not None:
            return written
        time.sleep(0.005 * (attempt + 1))
    raise LeaseError(f"volume {volume!r}: its lease changed {SWAP_TRIES} times while updating")


__all__ = [
    "Fenced",
    "Held",
    "Lease",
    "LeaseAccess",
    "LeaseError",
    "LeaseStore",
    "NoSuchVolume",
    "Releasing",
    "change",
    "given_back",
    "handed",
    "hold",
    "released",
    "releasing",
    "seeded",
    "taken",
    "with_holder",
    "without_holder",
]
