"""Named volumes: host-wide folders under the data root, with cheap snapshots.

Layout under ``$DOCKYARD_HOME`` (default ``~/.local/share/dockyard``)::

    volumes/                          0700: only dockyard's user reaches a volume
    volumes/NAME/volume.json          created, seeded from
    volumes/NAME/live/                what containers mount (0777: any user in them writes)
    volumes/NAME/lock                 flock: shared while mounted read-only, exclusive
                                      while mounted read-write or changed by a command
    volumes/NAME/live.index           what the live folder held when it last equalled a
                                      snapshot (:mod:`dockyard.disk.live_index`)
    volumes/NAME/snapshots/N/tree/    immutable copies; N counts up
    volumes/NAME/snapshots/N/delta/   (a snapshot kept as changes: the files that changed,
    volumes/NAME/snapshots/N/changes.json  and the list, until its tree is built)
    volumes/NAME/snapshots/N/meta.json

A snapshot is built like ``rsync --link-dest``: a file unchanged since the snapshot the
live folder's index describes (same inode, size, mtime, ctime and mode) is a hard link to
that snapshot's copy, any other file is copied. Its cost is one walk of the volume plus
the bytes that changed, not the volume's size (this filesystem, ext4, has no reflinks;
overlay layers would need a mount per container and compaction). The copies are made
first (:mod:`dockyard.disk.snapshot_delta`) and the tree of links after, at once or, for
a node agent handing a volume to another node, once the hand-off is done. Snapshot files
are read-only and never linked to ``live``, so writes to the live volume can never reach
a snapshot. Rollback copies back only the files that differ and deletes the ones the
snapshot does not have.

A live volume is written by containers, possibly while dockyard reads or writes it (a
``keep: true`` service keeps its mounts), so every walk and copy goes through
:mod:`dockyard.disk.safefs`: a link a container made is kept as a link, never followed.
Copies keep only the permission bits: set-uid, set-gid and sticky bits, devices, FIFOs
and sockets do not leave the live folder. Names (volumes, tags, snapshot refs) are
checked here, so that no caller can make a path outside ``volumes/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from dockyard.disk import durable, live_index, safefs, snapshot_delta, snapshot_trees
from dockyard.disk.live_index import LiveIndex
from dockyard.disk.snapshot_delta import DELTA, TREE
from dockyard.disk.volume_copy import copy_tree, mirror
from dockyard.disk.volume_names import (
    SNAPSHOT_ID_RE,
    TAG_RE,
    Snapshot,
    VolumeInfo,
    check_name,
    check_ref,
    check_tag,
)
from dockyard.errors import DockyardError, InvalidInput, PlanError, UnknownReference
from dockyard.home import data_root
from dockyard.names import NAME_RE

SYNCED = "synced"  # (in a snapshot's folder: it is on the disk, VolumeStore.sync)


class VolumeInUse(InvalidInput):
    pass


def private_dir(path: Path) -> Path:
    """Create a folder only its owner can enter, or tighten one found looser (made by an
    older dockyard): the folders above a live volume are what keeps local users out of it.
    (Only dockyard's user writes here, so a link, e.g. ``volumes`` moved to another disk,
    is that user's choice and is followed.)"""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise DockyardError(f"{path} should be a folder of dockyard's; move it away")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


class VolumeStore:
    def __init__(self, root: Path | None = None):
        self.root = (root or data_root()) / "volumes"
        self.indexes = live_index.Indexes()

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def live(self, name: str) -> Path:
        return self.folder(name) / "live"

    def exists(self, name: str) -> bool:
        return self.live(name).is_dir()

    def _private_folder(self, name: str) -> Path:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.root)
        return private_dir(self.folder(name))

    def ensure(self, name: str, seed: Path | None = None) -> Path:
        """Create the volume on first use, copying ``seed`` in once; return its live folder."""
        folder = self._private_folder(name)
        if self.live(name).is_dir():
            return self.live(name)
        staging = folder / f".creating-{os.getpid()}"
        safefs.rmtree(staging)
        os.mkdir(staging, 0o700)
        if seed is not None:
            with safefs.opened(seed) as source, safefs.opened(staging) as target:
                copy_tree(source, target, lambda mode: mode & 0o777)
        os.chmod(staging, 0o777)  # containers may run as any user
        meta = {"created": time.time(), "seed": str(seed) if seed else None}
        (folder / "volume.json").write_text(json.dumps(meta))
        try:
            os.rename(staging, self.live(name))  # atomic: a half-seeded volume is never live
        except OSError:
            safefs.rmtree(staging)  # another process created it first
        return self.live(name)

    def require(self, name: str) -> None:
        if not self.exists(name):
            raise UnknownReference(f"no volume {name!r} under {self.root}")

    # -- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool, wait: bool = False) -> Iterator[None]:
        """Hold the volume: shared for readers, exclusive for writers; fail fast unless
        ``wait``."""
        folder = self._private_folder(name)
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise VolumeInUse(
                    f"volume {name!r} is in use by another run "
                    f"({'writing' if not exclusive else 'using'} it); wait for it to finish "
                    "(`dockyard run --wait-for-volumes` queues behind it)"
                ) from None
            yield
        finally:
            os.close(fd)

    # -- queries ------------------------------------------------------------------------------

    def all(self) -> list[VolumeInfo]:
        if not self.root.is_dir():
            return []
        return [
            self.inspect(p.name)
            for p in sorted(self.root.iterdir())
            if NAME_RE.fullmatch(p.name) and (p / "live").is_dir()
        ]

    def inspect(self, name: str) -> VolumeInfo:
        self.require(name)
        meta = json.loads((self.folder(name) / "volume.json").read_text())
        files = size = 0
        with safefs.opened(self.live(name)) as live:
            for folder in safefs.walk(live):
                for entry in folder.entries:
                    if stat.S_ISREG(entry.info.st_mode):
                        files += 1
                        size += entry.info.st_size
        return VolumeInfo(
            name,
            str(self.live(name)),
            float(meta["created"]),
            files,
            size,
            len(self.snapshots(name)),
        )

    def snapshots(self, name: str) -> list[Snapshot]:
        folder = self.folder(name) / "snapshots"
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            meta = entry / "meta.json"
            if SNAPSHOT_ID_RE.fullmatch(entry.name) and meta.exists():
                found.append(Snapshot(**json.loads(meta.read_text())))
        return sorted(found, key=lambda s: s.id)

    def find(self, name: str, ref: str) -> Snapshot:
        check_name(name)
        check_ref(ref)
        for snap in self.snapshots(name):
            if str(snap.id) == ref or snap.tag == ref:
                return snap
        raise UnknownReference(
            f"volume {name!r} has no snapshot {ref!r} (see `dockyard volume snapshots NAME`)"
        )

    def snapshot_folder(self, name: str, snap: Snapshot) -> Path:
        return self.folder(name) / "snapshots" / str(snap.id)

    def has_tree(self, name: str, snap: Snapshot) -> bool:
        return (self.snapshot_folder(name, snap) / TREE).is_dir()

    def tree(self, name: str, snap: Snapshot) -> Path:
        """The snapshot's full tree (built first if it is kept as changes)."""
        path = self.snapshot_folder(name, snap) / TREE
        if not path.is_dir():
            self.settle(name, snap)
        return path

    def sync(self, name: str, snap: Snapshot) -> None:
        """Put the snapshot on the disk (its files and folders), and the snapshots it is
        kept as the changes since, back to one that is there already: before it is
        published or said to be kept here (:mod:`dockyard.disk.durable`). One kept as its
        changes is a few files, synced without a walk."""
        at: Snapshot | None = snap
        while at is not None:
            folder = self.snapshot_folder(name, at)
            if (folder / SYNCED).exists():
                return
            whole = (folder / TREE).is_dir()  # (a tree holds every file: no parent needed)
            if whole:
                durable.sync_tree(folder)
            else:
                durable.sync_flat(folder, (DELTA,))
            (folder / SYNCED).touch()  # (after: a mark lost in a crash only syncs again)
            if whole or not at.parent:
                return
            at = next((s for s in self.snapshots(name) if s.uuid == at.parent), None)

    def index_path(self, name: str) -> Path:
        return self.folder(name) / "live.index"

    # -- changes ------------------------------------------------------------------------------

    def snapshot(
        self, name: str, tag: str | None = None, *, defer: bool = False, quiet: bool = False
    ) -> Snapshot:
        """Freeze the live volume. The caller holds the volume's exclusive lock. When the
        live folder's index vouches for a snapshot this volume keeps, one walk finds what
        changed since and only that is copied; its tree is built now or, with ``defer``,
        when something needs it (:meth:`tree`, :meth:`settle`, which also writes the index
        then). ``quiet``: nothing writes the live folder meanwhile (no container has it
        mounted), so once the clock moved past the newest change no entry is racy."""
        if tag is not None:
            check_tag(tag)
        self.require(name)
        previous = self.snapshots(name)
        if tag is not None and any(s.tag == tag for s in previous):
            raise PlanError(f"volume {name!r} already has a snapshot tagged {tag!r}")
        index = self.indexes.load(self.index_path(name))
        parent = next((s for s in previous if index and s.uuid == index.snapshot), None)
        number = (previous[-1].id + 1) if previous else 1
        folder = private_dir(self.folder(name) / "snapshots")
        staging = folder / f".{number}-{os.getpid()}"
        safefs.rmtree(staging)
        os.mkdir(staging, 0o700)
        since = live_index.marker(self.folder(name))
        try:
            with safefs.opened(self.live(name)) as live:
                if index is not None and parent is not None:
                    now = live_index.scan(live, since)
                    os.mkdir(staging / DELTA, 0o700)
                    with safefs.opened(staging / DELTA) as delta:
                        found = list(live_index.changes(index, now))
                        steps, copied = snapshot_delta.take(live, delta, found, now)
                    if not quiet:  # (a writer may still be at what was copied: again next time)
                        now.racy.update(s.path for s in steps if s.kind == "F")
                    snapshot_delta.save(staging, parent.uuid, steps)
                    files, total = now.totals()
                else:  # nothing vouches for the live folder: all of it is copied
                    os.mkdir(staging / TREE, 0o700)
                    now = LiveIndex("")
                    with safefs.opened(staging / TREE) as target:
                        files, total, copied = copy_tree(
                            live, target, lambda mode: mode & 0o555, seen=now
                        )
                    now.mark_racy(since)
        except BaseException:
            safefs.rmtree(staging)
            raise
        snap = self.adopt_snapshot(
            name,
            staging,
            uuid.uuid4().hex,
            tag,
            files,
            total,
            parent.uuid if parent is not None else "",
            copied,
        )
        if quiet:
            now.settled(self.folder(name))
        now.snapshot = snap.uuid
        self.indexes.save(self.index_path(name), now, later=defer)
        if not defer:
            self.settle(name, snap)
        return snap

    def settle(self, name: str, upto: Snapshot | None = None) -> None:
        """Build the trees of the snapshots kept as changes: all of them (then write the
        live folder's index, if it was kept in memory), or those ``upto``'s needs."""
        snapshot_trees.settle(self, name, upto)
        if upto is None:
            self.indexes.flush(self.index_path(name))

    def scratch(self) -> Path:
        """A private folder beside the volumes, on their file system (so that it can be
        renamed into one), for building something that may yet be thrown away."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.root)
        path = self.root / f".incoming-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.mkdir(path, 0o700)
        return path

    def adopt_snapshot(
        self,
        name: str,
        staging: Path,
        snapshot_uuid: str,
        tag: str | None,
        files: int,
        total: int,
        parent: str = "",
        copied: int | None = None,
    ) -> Snapshot:
        """Give a tree (``staging/tree``, or with ``parent`` the changes since that snapshot)
        the next number, atomically. The caller holds the volume's exclusive lock."""
        previous = self.snapshots(name)
        number = (previous[-1].id + 1) if previous else 1
        if tag is not None and any(s.tag == tag for s in previous):
            tag = None  # tags are local names; the uuid identifies the snapshot
        snap = Snapshot(
            number,
            tag,
            time.time(),
            files,
            total,
            total if copied is None else copied,
            snapshot_uuid,
            parent,
        )
        (staging / "meta.json").write_text(json.dumps(asdict(snap)))
        folder = private_dir(self.folder(name) / "snapshots")
        os.rename(staging, folder / str(number))
        return snap

    def rollback(self, name: str, snap: Snapshot, *, quiet: bool = False) -> int:
        """Make the live volume equal to ``snap``; return the bytes copied back
        (:func:`dockyard.disk.volume_rollback.rollback`)."""
        from dockyard.disk.volume_rollback import rollback

        return rollback(self, name, snap, quiet=quiet)

    def drop_snapshot(self, name: str, snap: Snapshot, *, later: bool = False) -> Path | None:
        """Delete one snapshot (renamed away first: it is never seen half-deleted; the
        trees kept as changes since it are built first). With ``later``, the renamed
        folder is returned for the caller to remove."""
        return snapshot_trees.drop(self, name, snap, later=later)

    def remove(self, name: str) -> None:
        self.require(name)
        with self.lock(name, exclusive=True), snapshot_trees.building(self, name):
            trash = self.root / f".removing-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(self.folder(name), trash)
            self.indexes.drop(self.index_path(name))
        safefs.rmtree(trash)


__all__ = [
    "SNAPSHOT_ID_RE",
    "TAG_RE",
    "Snapshot",
    "VolumeInUse",
    "VolumeInfo",
    "VolumeStore",
    "check_name",
    "check_ref",
    "check_tag",
    "copy_tree",
    "data_root",
    "mirror",
]
