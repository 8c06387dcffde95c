"""``dockyard volume receive``: apply a stream from another machine, all of it or nothing.

The stream is built into a snapshot in a private scratch folder beside the volumes
(starting from hard links to its base, for an increment); only when its end record checks
out is it renamed into the volume's snapshots and copied to the live folder. Until then
nothing outside the scratch folder changes: a refused stream leaves no volume folder, no
snapshot, and the live volume as it was.

Every record is applied relative to descriptors of folders opened one name at a time
without following links, so a record whose path goes through a link (or a file) that an
earlier record made is refused instead of reaching outside. Modes keep only their
permission bits.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from dockyard.disk import safecopy, safefs, snapshot_delta
from dockyard.disk.live_index import LiveIndex
from dockyard.disk.snapshot_delta import DELTA, Step
from dockyard.disk.volume_stream.format import (
    DirRecord,
    FileRecord,
    GoneRecord,
    Header,
    LinkRecord,
    Reader,
    Record,
    StreamError,
)
from dockyard.disk.volumes import Snapshot, VolumeStore, check_name, copy_tree
from dockyard.errors import DockyardError

MAX_STEPS = 1 << 22  # changes in an increment kept in memory while it is checked


def receive(
    store: VolumeStore,
    name: str,
    inp: BinaryIO,
    *,
    live: bool = True,
    expect: str | None = None,
    live_is: str | None = None,
    quiet: bool = False,
) -> Snapshot:
    """Apply a stream to volume ``name`` (created if absent): all of it, or nothing. The
    live folder becomes the snapshot received, unless ``live`` is False (a copy kept beside
    a live folder that is in use). With ``expect`` (a snapshot's uuid: what was asked of a
    peer), a stream of another snapshot or of another volume is refused before a record is
    applied. ``live_is``: the caller knows the live folder to be that snapshot, untouched
    since (a node agent's record); an increment over it is then kept as the changes and
    applied to the live folder as they are, without a walk of either. ``quiet``: nothing
    else writes the live folder meanwhile (see :meth:`VolumeStore.rollback`)."""
    check_name(name)
    reader = Reader(inp)
    header = reader.header()
    if expect is not None and (header.snapshot, header.volume) != (expect, name):
        raise StreamError(
            f"asked for snapshot {expect[:12]} of volume {name!r}, the stream holds snapshot "
            f"{header.snapshot[:12]} of volume {header.volume!r}"
        )
    base = _base(store, name, header)
    index = _live_index(store, name, header, live_is) if live and base is not None else None
    if index is not None:
        with store.lock(name, exclusive=True):
            return _onto_live(reader, store, name, header, index)
    with contextlib.ExitStack() as held:
        if store.folder(name).is_dir():  # else it is created only once the stream checked out
            held.enter_context(store.lock(name, exclusive=True))
        scratch = store.scratch()
        try:
            os.mkdir(scratch / "tree", 0o700)
            files, total = _build(reader, scratch / "tree", store, name, base)
            if not store.folder(name).is_dir():
                held.enter_context(store.lock(name, exclusive=True))
            _base(store, name, header)  # still true now that the volume is held
            store.ensure(name)
            snap = store.adopt_snapshot(name, scratch, header.snapshot, header.tag, files, total)
        except BaseException:
            safefs.rmtree(scratch)
            raise
        if live:
            store.rollback(name, snap, quiet=quiet)  # the live folder becomes what was received
    return snap


def _base(store: VolumeStore, name: str, header: Header) -> Snapshot | None:
    """The snapshot the stream is an increment over, if any; refuse a stream this volume
    cannot take."""
    snaps = store.snapshots(name) if store.exists(name) else []
    if any(s.uuid == header.snapshot for s in snaps):
        raise StreamError(f"volume {name!r} already has snapshot {header.snapshot}")
    if header.base is None:
        return None
    base = next((s for s in snaps if s.uuid == header.base), None)
    if base is None:
        raise StreamError(
            f"this is an increment over snapshot {header.base}, which volume {name!r} does "
            "not have here; send a full stream first"
        )
    return base


def _live_index(
    store: VolumeStore, name: str, header: Header, live_is: str | None
) -> LiveIndex | None:
    """The live folder's index, if the stream is an increment over the snapshot the live
    folder is known to be and the index describes that snapshot."""
    if live_is is None or header.base != live_is:
        return None
    return store.indexes.load(store.index_path(name), of=live_is)


def _onto_live(
    reader: Reader, store: VolumeStore, name: str, header: Header, index: LiveIndex
) -> Snapshot:
    """Keep the increment as the changes since its base (checked to apply to it as they
    come: the live folder is that base), adopt it once the stream is whole, then apply it
    to the live folder and its index."""
    scratch = store.scratch()
    try:
        os.mkdir(scratch / DELTA, 0o700)
        outcome = snapshot_delta.Outcome(index)
        steps: list[Step] = []
        received = 0
        with safefs.opened(scratch / DELTA) as delta:
            for record in reader.records():
                if len(steps) >= MAX_STEPS:
                    raise StreamError(
                        f"the stream has more than {MAX_STEPS} changes: more than an increment "
                        "applied in place takes (a full stream is applied to a scratch tree)"
                    )
                size = record.size if isinstance(record, FileRecord) else 0
                try:
                    outcome.step(record.kind, record.path, size)
                except snapshot_delta.BrokenSnapshot as exc:
                    raise StreamError(f"the stream is malformed ({exc.message})") from None
                if isinstance(record, FileRecord):
                    fd = safefs.create_file(delta, str(len(steps)))
                    try:
                        _write_file(fd, record, reader)
                    finally:
                        os.close(fd)
                    received += record.size
                    step = Step("F", record.path, record.mode & 0o777, data=len(steps))
                elif isinstance(record, LinkRecord):
                    step = Step("L", record.path, target=record.target)
                elif isinstance(record, DirRecord):
                    step = Step("D", record.path, record.mode & 0o777)
                else:
                    step = Step("X", record.path)
                steps.append(step)
        snapshot_delta.save(scratch, index.snapshot, steps)
        files, total = outcome.totals()
        snap = store.adopt_snapshot(
            name, scratch, header.snapshot, header.tag, files, total, index.snapshot, received
        )
    except BaseException:
        safefs.rmtree(scratch)
        raise
    store.indexes.drop(store.index_path(name))  # (until it describes what the folder becomes)
    noted = snapshot_delta.Noted(index)
    folder = store.snapshot_folder(name, snap)
    with safefs.opened(store.live(name)) as root, safefs.opened(folder / DELTA) as delta:
        snapshot_delta.apply(
            root,
            delta,
            steps,
            snapshot_delta.copy_out,
            lambda mode: mode & 0o777,
            noted,
        )
    index.settled(store.folder(name), noted.finish())  # (nothing else writes it now)
    index.snapshot = snap.uuid
    store.indexes.save(store.index_path(name), index, later=True)  # (see VolumeStore.settle)
    return snap


def _build(
    reader: Reader, tree: Path, store: VolumeStore, name: str, base: Snapshot | None
) -> tuple[int, int]:
    """Apply every record to ``tree``; return its files and bytes once the stream is whole."""
    with safefs.opened(tree) as root:
        if base is not None:  # the base as hard links: records replace, never write through
            with safefs.opened(store.tree(name, base)) as old:
                copy_tree(old, root, lambda mode: mode, link=True)
        staging = _Staging(root)
        try:
            for record in reader.records():
                staging.apply(record, reader)
        finally:
            staging.folders.close()
        return _count(root)


class _Staging:
    def __init__(self, root: int):
        self.folders = safefs.Folders(root)

    def apply(self, record: Record, reader: Reader) -> None:
        parent, name = self._parent(record.path)
        if isinstance(record, DirRecord):
            self._folder(parent, name, record)
        elif isinstance(record, LinkRecord):
            self._clear(parent, name)
            os.symlink(record.target, name, dir_fd=parent)
        elif isinstance(record, GoneRecord):
            self._clear(parent, name)
        elif isinstance(record, FileRecord):
            self._clear(parent, name)
            self._file(parent, name, record, reader)

    def _parent(self, path: str) -> tuple[int, str]:
        """The folder a record's path is in, reached without following a link."""
        *folder, name = path.split("/")
        try:
            return self.folders.open(folder), name
        except FileNotFoundError:
            raise StreamError(
                f"the stream is malformed ({path!r} comes before its folder)"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StreamError(
                    f"the stream names {path!r}, which goes through a symbolic link or a file"
                ) from None
            raise

    def _clear(self, parent: int, name: str) -> None:
        if safefs.remove(parent, name):
            self.folders.reset()  # it may have been one of the open folders

    def _folder(self, parent: int, name: str, record: DirRecord) -> None:
        info = safefs.lstat_at(parent, name)
        if info is not None and not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=parent)
            info = None
        if info is None:
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = safefs.open_dir(parent, name)
        try:
            os.fchmod(fd, (record.mode & 0o777) | 0o700)
        finally:
            os.close(fd)

    def _file(self, parent: int, name: str, record: FileRecord, reader: Reader) -> None:
        fd = safefs.create_file(parent, name)
        try:
            _write_file(fd, record, reader)
        finally:
            os.close(fd)


def _write_file(fd: int, record: FileRecord, reader: Reader) -> None:
    """A file record's data into ``fd``, checked against its checksum; read-only."""
    try:
        content = hashlib.sha256()
        for start, length in record.extents:
            offset = start
            for chunk in reader.data(length):
                safecopy.write_at(fd, chunk, offset)
                content.update(chunk)
                offset += len(chunk)
        os.ftruncate(fd, record.size)
        if reader.checksum(f"the checksum of {record.path!r}") != content.hexdigest():
            raise StreamError(
                f"the stream is corrupted ({record.path!r} does not match its checksum)"
            )
        os.fchmod(fd, record.mode & 0o555)  # read-only, and never set-uid or set-gid
        os.utime(fd, ns=(record.mtime_ns, record.mtime_ns))
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise StreamError(f"{record.path!r} is larger than this file system allows") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DockyardError(
                "no space left on the data root's file system for the stream; nothing was applied"
            ) from None
        raise


def _count(root: int) -> tuple[int, int]:
    files = total = 0
    for folder in safefs.walk(root):
        for entry in folder.entries:
            if stat.S_ISREG(entry.info.st_mode):
                files += 1
                total += entry.info.st_size
    return files, total
