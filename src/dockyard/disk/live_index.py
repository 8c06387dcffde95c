"""What a volume's live folder held when dockyard last made it equal to a snapshot or took
one from it: every entry's status (kind, inode, size, mtime, ctime, permission bits).

A live entry whose status is still the one recorded has the content that snapshot has at
the same path. So the next snapshot stats the live folder once and copies (and a move
sends) only the entries whose status differs: the cost of a hand-off is one walk plus the
bytes that changed, whatever the volume's size.

The ctime is what makes this sound where size and mtime alone are not (rsync's quick
check): a container can set a file's mtime back (``touch -d``, ``cp -p``, ``tar x``), never
its ctime, which the kernel sets to its own clock at every change of the data or the
status, and a file replaced by another has another inode. An entry changed in the same
clock tick as the walk that recorded it could keep its status, so entries whose ctime is
not older than the walk's start (a marker file's ctime: the same clock) are recorded as
*racy* and never trusted, as git's index does.

The index is an optimisation: it names the snapshot it describes, and one that is missing,
unreadable or of another snapshot is simply not used (the next snapshot copies what it
cannot vouch for).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.disk import durable, safefs

VERSION = 2
# (kind "f" file, "d" folder or "l" link; inode; size; mtime ns; ctime ns; permission bits)
Status = tuple[str, int, int, int, int, int]


_KINDS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}
_FORMAT = 0o170000  # (the file type bits of a mode: stat.S_IFMT)


def status_of(info: os.stat_result) -> Status | None:
    """An entry's status as the index keeps it; None for what a volume does not keep
    (devices, FIFOs, sockets)."""
    kind = _KINDS.get(stat.S_IFMT(info.st_mode))
    if kind is None:
        return None
    return (
        kind,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode & 0o777,
    )


@dataclass
class LiveIndex:
    snapshot: str  # the uuid of the snapshot whose content the trusted entries have
    entries: dict[str, Status] = field(default_factory=dict)  # path -> status, walk order
    racy: set[str] = field(default_factory=set)  # paths never trusted
    newest: int = 0  # the newest ctime of an entry (as scanned)

    def totals(self) -> tuple[int, int]:
        """(regular files, their bytes)."""
        sizes = [s[2] for s in self.entries.values() if s[0] == "f"]
        return len(sizes), sum(sizes)

    def mark_racy(self, since: int) -> None:
        """Never trust the entries (but folders) whose ctime is not older than ``since``."""
        self.racy.update(p for p, s in self.entries.items() if s[0] != "d" and s[4] >= since)

    def settled(self, folder: Path, paths: list[str] | None = None) -> None:
        """Nothing else wrote the live folder while these entries (all, or ``paths``) were
        recorded: once the clock moved past the newest change (:func:`after`), an entry
        changed later gets another ctime, so none of them is racy."""
        chosen = list(self.entries) if paths is None else paths
        newest = self.newest if paths is None and self.newest else 0
        newest = newest or max((self.entries[p][4] for p in chosen), default=0)
        self.racy.difference_update(chosen)
        now = after(folder, newest)
        if now <= newest:  # (a clock that did not move, or went back)
            self.racy.update(
                p for p in chosen if self.entries[p][0] != "d" and self.entries[p][4] >= now
            )

    def forget_under(self, path: str) -> None:
        """Drop ``path`` and everything below it."""
        prefix = path + "/"
        for key in [k for k in self.entries if k == path or k.startswith(prefix)]:
            del self.entries[key]
            self.racy.discard(key)


def marker(folder: Path) -> int:
    """The file system's clock now, as a ctime (a marker file's, touched in ``folder``,
    which must be on the live folder's file system)."""
    path = folder / ".index-marker"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.utime(fd)
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)


def after(folder: Path, newest: int, most: float = 1.0) -> int:
    """A :func:`marker` later than ``newest`` (a ctime): the file system's clock has moved
    past the last change dockyard made, so an entry changed from now on gets another ctime
    than the one recorded. Takes a clock tick at most (a few milliseconds); a clock that does
    not move for ``most`` seconds gives the marker as it is (those entries are then racy)."""
    deadline = time.monotonic() + most
    now = marker(folder)
    while now <= newest and time.monotonic() < deadline:
        time.sleep(0.001)
        now = marker(folder)
    return now


def scan(live: int, since: int) -> LiveIndex:
    """One walk of the live folder, a stat per entry and nothing read; entries whose ctime is
    not older than ``since`` (a :func:`marker` taken before the walk, or before dockyard
    wrote the folder) are racy. The snapshot is the caller's to set.

    Folders are opened by :class:`safefs.Folders` (never through a link; a folder that is
    gone or became something else by the time it is reached is skipped) and listed as they
    come: this walk is what a hand-off costs per file, so it does no more than that."""
    index = LiveIndex("")
    entries, racy = index.entries, index.racy
    newest = 0
    kind_of = _KINDS.get
    folders = safefs.Folders(live)
    stack: list[tuple[str, ...]] = [()]
    try:
        while stack:
            rel = stack.pop()
            fd = safefs.open_or_none(folders, rel)
            if fd is None:
                continue  # gone, or no longer a folder, since its parent was listed
            prefix = "/".join(rel) + "/" if rel else ""
            with os.scandir(fd) as listing:
                for item in listing:  # (status_of, inlined: this loop runs once an entry)
                    try:
                        info = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed since it was listed
                    mode = info.st_mode
                    kind = kind_of(mode & _FORMAT)
                    if kind is None:
                        continue  # devices, FIFOs and sockets are not kept
                    path = prefix + item.name
                    ctime = info.st_ctime_ns
                    entries[path] = (
                        kind,
                        info.st_ino,
                        info.st_size,
                        info.st_mtime_ns,
                        ctime,
                        mode & 0o777,
                    )
                    if ctime > newest:
                        newest = ctime
                    if kind == "d":
                        stack.append((*rel, item.name))
                    elif ctime >= since:
                        racy.add(path)
    finally:
        folders.close()
    index.newest = newest
    return index


def load(path: Path) -> LiveIndex | None:
    """The index saved at ``path``; None if there is none or it cannot be used."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != VERSION or data.get("boot") != durable.BOOT:
            return None  # (another format, or written before the machine last started)
        paths, kinds, numbers = data["paths"], data["kinds"], data["numbers"]
        if not (len(paths) == len(kinds) and len(numbers) == 5 * len(paths)) or not set(kinds) <= {
            "f",
            "d",
            "l",
        }:
            return None
        columns = (numbers[i::5] for i in range(5))
        entries = dict(zip(map(str, paths), zip(kinds, *columns, strict=True), strict=True))
        return LiveIndex(str(data["snapshot"]), entries, set(map(str, data["racy"])))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save(path: Path, index: LiveIndex) -> None:
    """Write the index beside what it describes (aside, then renamed over the old one), as
    columns (a list of paths, a string of kinds, the numbers in a row): read back at the
    speed of the JSON parser, not of a loop over entries."""
    statuses = index.entries.values()
    data = {
        "version": VERSION,
        "boot": durable.BOOT,
        "snapshot": index.snapshot,
        "paths": list(index.entries),
        "kinds": "".join(s[0] for s in statuses),
        "numbers": [n for s in statuses for n in s[1:]],
        "racy": sorted(index.racy),
    }
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(scratch, path)


def drop(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def vouches(
    index: LiveIndex | None, base: safefs.Folders | None
) -> Callable[[tuple[str, ...], safefs.Entry, os.stat_result], bool]:
    """What a rollback may leave as it is: a live file whose status is the one ``index``
    recorded, not racy, has the content of the index's snapshot; that is the target's when
    the index describes the target itself (``base`` None) or when the index's snapshot's
    file (in ``base``, its tree) is the target's very file (trees share, as hard links, the
    files that did not change between them). Nothing else is taken as unchanged: not a
    same-size rewrite whose mtime was put back, not a folder nothing vouches for."""

    def same(rel: tuple[str, ...], entry: safefs.Entry, present: os.stat_result) -> bool:
        if index is None:
            return False
        path = "/".join((*rel, entry.name))
        if index.entries.get(path) != status_of(present) or path in index.racy:
            return False
        if base is None:
            return True
        try:
            old = safefs.lstat_at(base.open(rel), entry.name)
        except OSError:
            return False
        return old is not None and (old.st_dev, old.st_ino) == (
            entry.info.st_dev,
            entry.info.st_ino,
        )

    return same


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


class Indexes:
    """The indexes of a store's live folders, kept in memory from one snapshot to the next
    (a hand-off reads none from disk) and written to disk at once or, with ``later``, when
    :meth:`flush` is called (off the path that waits). One kept in memory is used only while
    the file is still the one it superseded (another process may have written it since).
    A file older than the memory is still true: it vouches for an older snapshot, and an
    entry changed since has another status."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[tuple[int, int] | None, LiveIndex]] = {}
        self._unsaved: set[Path] = set()
        self._lock = threading.Lock()

    def load(self, path: Path, of: str | None = None) -> LiveIndex | None:
        """The index, for the caller to change and save (it is no longer kept meanwhile);
        with ``of``, only if it describes that snapshot (else it stays as it was)."""
        with self._lock:
            held = self._held.get(path)
            if held is not None and held[0] != _identity(path):
                held = None
            if held is not None and of is not None and held[1].snapshot != of:
                return None
            self._held.pop(path, None)
            self._unsaved.discard(path)
        if held is not None:
            return held[1]
        index = load(path)
        return None if index is None or (of is not None and index.snapshot != of) else index

    def save(self, path: Path, index: LiveIndex, *, later: bool = False) -> None:
        if not later:
            save(path, index)
        with self._lock:
            self._held[path] = (_identity(path), index)
            if later:
                self._unsaved.add(path)
            else:
                self._unsaved.discard(path)

    def flush(self, path: Path) -> None:
        """Write the index kept in memory, if it was not yet."""
        with self._lock:
            held = self._held.get(path)
            if path not in self._unsaved or held is None or held[0] != _identity(path):
                return
            save(path, held[1])
            self._held[path] = (_identity(path), held[1])
            self._unsaved.discard(path)

    def drop(self, path: Path) -> None:
        with self._lock:
            self._held.pop(path, None)
            self._unsaved.discard(path)
        drop(path)


# -- what changed ------------------------------------------------------------------------------

# A change, in an order a receiver can apply: a folder before what is in it, and what is
# gone last. ("D", path, mode), ("F", path), ("L", path), ("X", path)
Change = tuple[str, str, int]


def changes(old: LiveIndex, now: LiveIndex) -> Iterator[Change]:
    """What differs between the snapshot ``old`` describes and the live folder ``now``
    scanned: folders that are new (or new permissions), files and links that are new or not
    vouched for, and what is gone (only the topmost of a gone tree, and nothing below what
    is now a file or a link: replacing that removes it)."""
    before = old.entries
    # What differs, found by one lookup per entry of the volume (no set of the two tables'
    # items: that hashes every status), then taken shallowest first: a folder before what
    # is in it.
    was_of = before.get
    differ = [path for path, status in now.entries.items() if was_of(path) != status]
    differ += [p for p in old.racy if p in now.entries and was_of(p) == now.entries[p]]
    for path in sorted(differ, key=_depth):
        status, was = now.entries[path], before.get(path)
        kind = status[0]
        if kind != "d":
            yield ("F" if kind == "f" else "L", path, status[5])
        elif was is None or was[0] != "d" or was[5] != status[5]:
            yield ("D", path, status[5])
    gone: set[str] = set()
    for path in sorted(before.keys() - now.entries.keys(), key=_depth):
        if not _covered(path, gone, now):
            yield ("X", path, 0)
        gone.add(path)


def _depth(path: str) -> tuple[int, str]:
    return path.count("/"), path


def _covered(path: str, gone: set[str], now: LiveIndex) -> bool:
    """Whether a gone ``path`` goes away with one of its folders (gone, or now a file)."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        above = "/".join(parts[:depth])
        if above in gone or now.entries.get(above, ("d",))[0] != "d":
            return True
    return False


__all__ = [
    "Change",
    "Indexes",
    "LiveIndex",
    "Status",
    "after",
    "changes",
    "drop",
    "load",
    "marker",
    "save",
    "scan",
    "status_of",
    "vouches",
]
