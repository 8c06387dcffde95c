"""``dockyard volume send``: write a snapshot, or its increment over an older one.

Snapshot trees are dockyard's own, but they hold what containers left in the volume
(links to anywhere among them), so they are walked through :mod:`dockyard.disk.safefs` too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from dockyard.disk import safecopy, safefs, snapshot_delta
from dockyard.disk.volume_stream.format import (
    DirRecord,
    FileRecord,
    GoneRecord,
    Header,
    LinkRecord,
    Writer,
)
from dockyard.disk.volumes import Snapshot, VolumeStore
from dockyard.errors import DockyardError, InvalidInput, UnknownReference


def send(
    store: VolumeStore,
    name: str,
    out: BinaryIO,
    base_ref: str | None = None,
    to_ref: str | None = None,
) -> tuple[int, int]:
    """Write snapshot ``to_ref`` (default: the latest), or its increment over ``base_ref``.
    Returns (records, bytes)."""
    snaps = store.snapshots(name)
    if not snaps and to_ref is None:
        raise UnknownReference(
            f"volume {name!r} has no snapshot to send; take one with "
            f"`dockyard volume snapshot {name}`"
        )
    target = store.find(name, to_ref) if to_ref is not None else snaps[-1]
    base = store.find(name, base_ref) if base_ref is not None else None
    for snap in (target, base):
        if snap is not None and not snap.uuid:
            raise InvalidInput(
                f"snapshot {snap.id} of {name!r} predates send/receive (it has no uuid); "
                f"take a new one with `dockyard volume snapshot {name}` and send that"
            )
    w = Writer(out)
    w.header(
        Header(
            snapshot=target.uuid,
            base=base.uuid if base is not None else None,
            volume=name,
            tag=target.tag,
        )
    )
    chain = _changes_between(store, name, base, target) if base is not None else None
    if chain is not None:
        for folder in chain:  # (the increment is what the snapshots were taken as)
            _send_changes(w, folder)
    else:
        with safefs.opened(store.tree(name, target)) as tree:
            if base is None:
                _send_tree(w, tree, None)
            else:
                with safefs.opened(store.tree(name, base)) as base_tree:
                    _send_tree(w, tree, base_tree)
    w.end()
    return w.records + 1, w.bytes


def _send_tree(w: Writer, tree: int, base: int | None) -> None:
    bases = safefs.Folders(base) if base is not None else None
    seen: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = {()}
    try:
        for folder in safefs.walk(tree):
            if folder.rel:
                info = os.fstat(folder.fd)
                mode = stat.S_IMODE(info.st_mode) & 0o777
                w.record(DirRecord(path="/".join(folder.rel), mode=mode, mtime_ns=info.st_mtime_ns))
                folders.add(folder.rel)
            old = safefs.open_or_none(bases, folder.rel)
            for entry in folder.entries:
                seen.add((*folder.rel, entry.name))
                if stat.S_ISDIR(entry.info.st_mode):
                    continue
                if old is not None and _unchanged(folder.fd, old, entry):
                    continue  # the receiver has it in the base
                if stat.S_ISLNK(entry.info.st_mode):
                    target = os.readlink(entry.name, dir_fd=folder.fd)
                    w.record(LinkRecord(path=folder.path(entry.name), target=target))
                elif stat.S_ISREG(entry.info.st_mode):
                    _send_file(w, folder.fd, entry.name, folder.path(entry.name))
        if base is not None:
            for folder in safefs.walk(base):
                # Only what was in a folder the snapshot still has: a folder that is gone,
                # or is now a file or a link, is replaced as a whole by its own record.
                folder.subdirs = [n for n in folder.subdirs if (*folder.rel, n) in folders]
                for entry in folder.entries:
                    if (*folder.rel, entry.name) not in seen:
                        w.record(GoneRecord(path=folder.path(entry.name)))
    finally:
        if bases is not None:
            bases.close()


MAX_CHAIN = 16  # snapshots whose changes are sent one after the other, at most


def _changes_between(
    store: VolumeStore, name: str, base: Snapshot, target: Snapshot
) -> list[Path] | None:
    """The folders of the snapshots kept as changes that lead from ``base`` to ``target``
    (each the changes since the one before), oldest first; None if there is no such chain:
    then the trees are compared."""
    by_uuid = {s.uuid: s for s in store.snapshots(name) if s.uuid}
    chain: list[Path] = []
    at = target
    while at.uuid != base.uuid:
        folder = store.snapshot_folder(name, at)
        parent = by_uuid.get(at.parent)
        if parent is None or len(chain) >= MAX_CHAIN or not snapshot_delta.has_changes(folder):
            return None
        chain.append(folder)
        at = parent
    return chain[::-1]


def _send_changes(w: Writer, folder: Path) -> None:
    """The records of a snapshot kept as the changes since its parent, from its change list
    and its delta: no walk of either tree."""
    _, steps = snapshot_delta.load(folder)
    with safefs.opened(folder / snapshot_delta.DELTA) as delta:
        for step in steps:
            if step.kind == "D":
                w.record(DirRecord(path=step.path, mode=step.mode, mtime_ns=0))
            elif step.kind == "L":
                w.record(LinkRecord(path=step.path, target=step.target))
            elif step.kind == "X":
                w.record(GoneRecord(path=step.path))
            else:
                _send_file(w, delta, str(step.data), step.path)


def _unchanged(tree: int, base: int, entry: safefs.Entry) -> bool:
    old = safefs.lstat_at(base, entry.name)
    if old is None:
        return False
    if stat.S_ISREG(entry.info.st_mode):
        return stat.S_ISREG(old.st_mode) and old.st_ino == entry.info.st_ino  # a hard link
    return stat.S_ISLNK(old.st_mode) and os.readlink(entry.name, dir_fd=base) == os.readlink(
        entry.name, dir_fd=tree
    )


def _send_file(w: Writer, folder: int, name: str, rel: str) -> None:
    fd = safefs.open_file(folder, name)
    try:
        info = os.fstat(fd)
        extents = safecopy.extents(fd, info.st_size)
        w.record(
            FileRecord(
                path=rel,
                mode=(stat.S_IMODE(info.st_mode) & 0o777) | 0o200,
                mtime_ns=info.st_mtime_ns,
                size=info.st_size,
                extents=[list(e) for e in extents],
            )
        )
        content = hashlib.sha256()
        for start, length in extents:
            offset = start
            while length:
                chunk = os.pread(fd, min(safecopy.CHUNK, length), offset)
                if not chunk:
                    raise DockyardError(f"{rel!r} shrank while it was being sent")
                w.write(chunk)
                content.update(chunk)
                offset += len(chunk)
                length -= len(chunk)
    finally:
        os.close(fd)
    w.write(content.hexdigest().encode() + b"\n")
