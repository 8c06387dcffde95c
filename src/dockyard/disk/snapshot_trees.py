"""The full trees of snapshots kept as their changes (:mod:`.snapshot_delta`): built oldest
first, each from its parent's tree, and never a parent dropped while a child still needs
it. One builder at a time per volume (an ``flock`` beside its snapshots: the agent's
background threads and a command may both ask)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.disk import durable, safefs, snapshot_delta
from dockyard.disk.snapshot_delta import TREE
from dockyard.disk.volume_names import Snapshot
from dockyard.errors import DockyardError

if TYPE_CHECKING:
    from dockyard.disk.volumes import VolumeStore


def settle(store: VolumeStore, name: str, upto: Snapshot | None = None) -> None:
    """Build the trees of the snapshots kept as changes: all of them, or those ``upto``'s
    needs (its own, then its parent's, and so on), oldest first."""
    with building(store, name):
        _settle(store, name, upto)


def drop(store: VolumeStore, name: str, snap: Snapshot, *, later: bool) -> Path | None:
    """Rename one snapshot away (its children kept as changes get their trees first), then
    remove it, or return where it is with ``later``."""
    folder = store.folder(name) / "snapshots"
    trash = folder / f".dropping-{snap.id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with building(store, name):
        for child in store.snapshots(name):
            if child.parent == snap.uuid:
                _settle(store, name, child)
                # (its tree on the disk before the changes it was built from go with snap)
                durable.sync_tree(store.snapshot_folder(name, child) / TREE, files=False)
        os.rename(folder / str(snap.id), trash)
    if later:
        return trash
    safefs.rmtree(trash)
    return None


def _settle(store: VolumeStore, name: str, upto: Snapshot | None) -> None:
    snaps = store.snapshots(name)
    by_uuid = {s.uuid: s for s in snaps if s.uuid}
    pending = [s for s in snaps if not store.has_tree(name, s)]
    if upto is not None:
        chain, at = [], next((s for s in pending if s.id == upto.id), None)
        while at is not None:
            chain.append(at)
            at = next((s for s in pending if s.uuid == at.parent), None)
        pending = chain[::-1]
    for snap in pending:
        parent = by_uuid.get(snap.parent)
        if not snap.parent or parent is None:
            raise DockyardError(
                f"snapshot {snap.id} of volume {name!r} is kept as the changes since a "
                "snapshot this host does not have; drop it "
                f"(`dockyard volume snapshots {name}`)"
            )
        snapshot_delta.build(
            store.snapshot_folder(name, snap), store.snapshot_folder(name, parent) / TREE
        )


@contextlib.contextmanager
def building(store: VolumeStore, name: str) -> Iterator[None]:
    """Held while a volume's snapshot trees are built, or snapshots dropped, or the volume
    removed."""
    from dockyard.disk.volumes import private_dir

    folder = private_dir(store.folder(name) / "snapshots")
    fd = os.open(folder / ".build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


__all__ = ["building", "drop", "settle"]
