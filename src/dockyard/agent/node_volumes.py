"""The volumes an agent keeps on its node, and what a mount and an unmount do to them.

Each node keeps its copy of a volume in a :class:`~dockyard.disk.volumes.VolumeStore`
under ``ROOT/NODE/volumes/NAME`` (a live folder that containers mount, and snapshots with
uuids that are the same on every node). The volume's *content* is the snapshot its lease
names (:mod:`dockyard.agent.leases`); a node's live folder is trusted only while this
node's record (``node.json``) says it equals that snapshot and nothing mounted it since.

- **Mount** (the first on this node): take the lease (a new epoch), then make the live
  folder the published snapshot: nothing to do when it is already that; from a local
  snapshot when this node has it (a replica, or a pre-copy: only what differs is copied);
  else fetched from a node that keeps it, as an increment over the newest snapshot both
  have. Planned moves pre-copy first (:meth:`NodeVolumes.pull`), so that no full copy
  happens inside Docker's two-minute ``Mount``.
- **Unmount** (the last on this node): mark the lease releasing and return; then, in the
  background (:mod:`dockyard.agent.releasing`), snapshot the live folder and publish it with
  the epoch the mount took (a node that was fenced meanwhile is refused, and its live
  folder is no longer trusted), and replicate it to :attr:`replicas` other nodes (the
  increment over what each has). A mount elsewhere waits for the publish.

A hand-off costs what changed, not the volume: the release walks the live folder once
(its index tells what changed, :mod:`dockyard.disk.live_index`) and copies only that; the
node that mounts next, whose live folder is the snapshot before, receives the increment
and applies it to its live folder as it is. Both keep the new snapshot as its changes
and build its full tree in the background after (:meth:`NodeVolumes.settle`), with the
pruning of old snapshots.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.agent.fetching import Fetcher, Peers
from dockyard.agent.leases import Lease, LeaseAccess, LeaseError, NoSuchVolume, Releasing
from dockyard.agent.publishing import Publisher
from dockyard.agent.quietlog import to_stderr
from dockyard.agent.refused import Refused
from dockyard.agent.releasing import Releaser, unpublished_writes
from dockyard.agent.replication import Replicator
from dockyard.agent.settling import KEEP_SNAPSHOTS, Settler
from dockyard.agent.volume_records import Records, fresh_state
from dockyard.disk.volumes import Snapshot, VolumeStore, check_name

MOUNT_DEADLINE = 100.0  # seconds: a mount that took longer is refused (Docker waits 120)
RELEASE_WAIT = 60.0  # seconds a mount waits for another node to publish what it releases


@dataclass
class NodeVolumes:
    node: str
    store: VolumeStore  # as the agent reaches it
    host_root: Path  # the store's ``volumes`` folder as the node's engine sees it
    leases: LeaseAccess
    peers: Peers
    replicas: int = 1
    log: Callable[[str], None] = to_stderr  # (escaped: names and errors may be a peer's)

    def __post_init__(self) -> None:
        self.records = Records(self.store)
        self.fetcher = Fetcher(self.node, self.store, self.peers)
        self.replicator = Replicator(self.node, self.leases, self.peers, self.replicas, self.log)
        self.settler = Settler(self.store, self.records, self.log)
        self.publisher = Publisher(self.leases, self.records, self.replicator, self.log)
        self.releaser = Releaser(
            self.store,
            self.records,
            self.leases,
            self.publisher,
            self.replicator,
            lambda name: self.settle_later(name),  # (as they are then: tests change them)
            lambda text: self.log(text),
        )

    # -- Docker's calls -----------------------------------------------------------------------

    def create(self, name: str) -> None:
        check = _checked(name)
        self.leases.create(check)
        with self.records.lock(check):
            self.store.ensure(check)

    def mount(self, name: str, mount_id: str) -> str:
        name = _checked(name)
        began = time.monotonic()
        with self.records.lock(name):
            state = self.records.state(name)
            if state.get("releasing"):  # (a container here ended a moment ago)
                self.releaser.release_locked(name, state)
                state = self.records.state(name)
            if state["mounts"]:
                self._refuse_if_taken_over(name, state)
            lease, nodes = self._take(name, began)
            taken = time.monotonic()
            if state["mounts"] and lease.epoch == state["epoch"]:  # (it shares the lease)
                if time.monotonic() - began > MOUNT_DEADLINE:  # (Docker gave up on it)
                    raise Refused(f"volume {name!r}: the mount waited too long; try again")
                state["mounts"].append(mount_id)
                self.records.save(name, state)
                return self.mountpoint(name)
            ours = brought = False
            try:
                if state.get("incarnation") not in (None, lease.incarnation):
                    self.store.remove(name)  # a removed volume's copy, not this one's
                    state = fresh_state()
                # Still held by this node under its epoch (its publish did not get
                # through): the live folder is what it left, newer than the published one.
                ours = state["epoch"] == lease.epoch and unpublished_writes(state)
                if not ours and (
                    state.get("clean") != lease.snapshot or not self.store.exists(name)
                ):
                    self.records.save(name, {**state, "clean": None})  # (until it is)
                    self.fetcher.bring(name, lease, nodes, state.get("clean"))
                    brought = True
                if time.monotonic() - began > MOUNT_DEADLINE:
                    raise Refused(
                        f"volume {name!r}: the mount took over {MOUNT_DEADLINE:g} s (Docker "
                        "gives up at 120 s); the node has the volume now: mount it again"
                    )
            except BaseException:
                if not ours:  # (else it keeps what waits to be published: still its own)
                    with contextlib.suppress(Exception):
                        self.leases.give_back(name, lease.epoch)
                raise
            self.records.save(
                name,
                {
                    "epoch": lease.epoch,
                    "mounts": [mount_id],
                    "clean": None,
                    "incarnation": lease.incarnation,
                    "holders": list(lease.holders),  # (they keep the snapshot before)
                },
            )
        done = time.monotonic()
        if not brought:
            how = "the live folder was the snapshot"
        elif lease.snapshot:
            how = f"brought to snapshot {lease.snapshot[:12]} in {done - taken:.3f} s"
        else:
            how = f"made empty in {done - taken:.3f} s"  # (nothing published yet)
        self.log(f"mount of {name}: {done - began:.3f} s (lease {taken - began:.3f} s, {how})")
        if brought:
            self.settle_later(name)  # (a tree received as changes, the index, pruning)
        return self.mountpoint(name)

    def _take(self, name: str, began: float) -> tuple[Lease, dict[str, str]]:
        """The lease, once a node that is releasing it has published (a planned move's
        mount comes a moment after the unmount elsewhere): waited for up to
        :data:`RELEASE_WAIT` seconds."""
        while True:
            try:
                return self.leases.take(name)
            except Releasing:
                waited = time.monotonic() - began
                if waited > RELEASE_WAIT:
                    raise
            time.sleep(0.025 if waited < 2.0 else 0.25)  # (a walk takes a moment, or long)

    def _refuse_if_taken_over(self, name: str, state: dict[str, Any]) -> None:
        """Refused while a container of an epoch another node took over may still write
        this node's live folder (a node cut off, not dead): its mounts must end first."""
        lease, _ = self.leases.get(name)
        if lease is not None and (lease.held, lease.owner, lease.epoch) != (
            True,
            self.node,
            state["epoch"],
        ):
            raise Refused(
                f"volume {name!r}: this node still has {len(state['mounts'])} mount(s) of "
                f"lease epoch {state['epoch']}, which node {lease.owner[:12]} took over; they "
                "must end before the volume is mounted here again"
            )

    def unmount(self, name: str, mount_id: str) -> None:
        name = _checked(name)
        with self.records.lock(name):
            state = self.records.state(name)
            if mount_id not in state["mounts"]:
                return
            state["mounts"].remove(mount_id)
            if state["mounts"]:
                self.records.save(name, state)
                return
            self.releaser.unmounted(name, state)  # (the snapshot: in the background)

    def void_mounts(self) -> None:
        """Forget the mounts this node recorded: the engine that made them is gone (Docker
        activates a plugin when it starts; its containers died with the old engine). The
        leases they held go back unpublished: what those containers wrote is discarded."""
        for name in self.records.names():
            with self.records.lock(name):
                state = self.records.state(name)
                if not state["mounts"]:
                    continue
                self.log(f"{name}: {len(state['mounts'])} mount(s) of a past engine are void")
                with contextlib.suppress(Exception):
                    self.leases.give_back(name, state["epoch"])
                self.records.save(name, {**state, "mounts": [], "clean": None})

    def resume(self) -> None:
        """Take the snapshots and publish what an agent that stopped could not (at the
        agent's start)."""
        self.releaser.resume()
        self.publisher.resume()

    def mountpoint(self, name: str) -> str:
        return str(self.host_root / check_name(name) / "live")

    def mounted(self, name: str) -> bool:
        return bool(self.records.state(_checked(name))["mounts"])

    def forget(self, name: str) -> None:
        """Docker's ``Remove`` on this node: forget this node's copy, never the swarm's
        volume (``docker volume prune`` on one node must not destroy a volume the cluster
        uses; ``dockyard volume rm --backend swarm`` removes it). Refused while it is
        mounted here, and while this node keeps the only copy of its latest snapshot."""
        name = _checked(name)
        with self.records.lock(name):
            state = self.records.state(name)
            if state["mounts"] or unpublished_writes(state):
                raise Refused(
                    f"volume {name!r} is in use on this node (mounted, or what was written "
                    "here waits to be published): stop what uses it first"
                )
            try:
                self.leases.unhold(name)
            except NoSuchVolume:
                pass
            except LeaseError as exc:  # (the only copy of its latest snapshot, say)
                raise Refused(str(exc)) from None
            if self.store.exists(name):
                self.store.remove(name)

    def drop(self, name: str) -> None:
        """Forget this node's copy (the volume was removed)."""
        with self.records.lock(name):
            if self.store.exists(name) and not self.records.state(name)["mounts"]:
                self.store.remove(name)

    # -- between nodes ------------------------------------------------------------------------

    def have(self, name: str) -> list[Snapshot]:
        """The snapshots this node keeps of ``name``, oldest first."""
        return self.fetcher.have(_checked(name))

    def sender(self, name: str, snapshot: str, have: list[str]) -> Callable[[BinaryIO], object]:
        """What writes ``snapshot`` as a stream (the increment over the newest snapshot that
        ``have`` names); refused here, before anything is written, if this node lacks it."""
        from dockyard.disk.volume_stream import send

        name = _checked(name)
        target = self.fetcher.find(name, snapshot)
        if target is None:
            raise Refused(f"this node does not keep snapshot {snapshot[:12]} of {name!r}")
        bases = [s for s in self.store.snapshots(name) if s.uuid in have and s.id < target.id]
        base = str(bases[-1].id) if bases else None
        first = bases[-1].id if bases else target.id  # (and those between: a chain of changes)
        used = [s.uuid for s in self.store.snapshots(name) if first <= s.id <= target.id]

        def write(out: BinaryIO) -> object:
            with self.settler.busy.hold(name, used):  # (not pruned while it is sent)
                return send(self.store, name, out, base, str(target.id))

        return write

    def pull(self, name: str, snapshot: str, sources: dict[str, str]) -> Snapshot:
        """Keep ``snapshot`` of ``name`` here, fetched from one of ``sources`` (node: agent
        address) unless this node has it: a replica, or a pre-copy before a move. Where the
        volume is not mounted, its live folder becomes that snapshot too (the next mount
        here then copies nothing); where it is, the live folder is left alone."""
        name = _checked(name)
        with self.records.lock(name):
            state = self.records.state(name)
            found = self.fetcher.find(name, snapshot)
            if found is not None:
                return found
            idle = not state["mounts"] and not unpublished_writes(state)  # (live/ is free)
            if idle:
                self.records.save(name, {**state, "clean": None})  # (until it is the new one)
            snap = self.fetcher.fetch(
                name, snapshot, sources, live=idle, live_is=state.get("clean")
            )
            self.store.sync(name, snap)  # (on the disk before this node says it keeps it)
            if idle:
                self.records.save(name, {**state, "clean": snap.uuid})
        self.settle_later(name)
        return snap

    def read(self, name: str, snapshot: str, sources: dict[str, str]) -> Path:
        """Where ``snapshot`` is on the node's disk, for a container to bind read-only
        (fetched first when this node lacks it; kept from pruning for a day after)."""
        snap = self.pull(name, snapshot, sources)
        tree = self.store.tree(name, snap)
        (tree.parent / "read").touch()
        os.chmod(tree, 0o555)  # (a container's user of any uid reads it; nobody writes it)
        return self.host_root / name / "snapshots" / str(snap.id) / "tree"

    def seed(self, name: str, tree: Path) -> Snapshot:
        """Make a new volume's first content ``tree`` (a folder kept on this node), and
        publish it, unless the volume was used already."""
        name = _checked(name)
        with self.records.lock(name):
            current, _ = self.leases.get(name)
            state = self.records.state(name)
            if self.store.exists(name) and current is not None:
                if state.get("incarnation") == current.incarnation:
                    raise Refused(f"volume {name!r} has content on this node already")
                self.store.remove(name)  # (a copy of a volume of that name that was removed)
            self.store.ensure(name, tree)
            try:
                snap = self.store.snapshot(name)
                self.store.sync(name, snap)
                lease = self.leases.seeded(name, snap.uuid)
            except BaseException:
                self.store.remove(name)  # (so that seeding may be tried again)
                raise
            self.records.save(
                name,
                {**fresh_state(), "clean": snap.uuid, "incarnation": lease.incarnation},
            )
            return snap

    # -- inside -------------------------------------------------------------------------------

    def settle_later(self, name: str) -> None:
        """Build the trees, write the index and prune, in the background."""
        self.settler.later(name)

    def settle(self, name: str) -> None:
        self.settler.settle(name)


def _checked(name: str) -> str:
    try:
        return check_name(name)
    except Exception as exc:
        raise Refused(str(exc)) from None


__all__ = ["KEEP_SNAPSHOTS", "NodeVolumes", "Peers", "Refused"]
