"""Committed outputs: content-addressed, immutable directories under ``.dockyard/outputs``.

An attempt writes into a private staging directory. On success the tree is sealed,
hashed and renamed into place in one ``rename(2)``, so a crash at any moment leaves
either no output or a whole one, never half of one.

A step's container wrote that tree, as root perhaps, and local users can read committed
outputs: sealing makes it data and nothing more. Devices, FIFOs and sockets are dropped
(a device node would give whoever can open it the host's device), set-uid, set-gid and
sticky bits and file capabilities are removed (a set-uid-root binary would let any local
user run it as root), and everything becomes read-only. What was dropped or changed is
returned, so that the step's log can say so. All of it through :mod:`dockyard.storage.safefs`:
links in the tree are kept, never followed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from dockyard.storage import safefs

MAX_CHANGES = 20  # listed one by one; the rest are counted
_CAPABILITY = "security.capability"


@dataclass(frozen=True)
class Committed:
    digest: str
    path: Path
    size: int
    files: int
    changes: tuple[str, ...] = ()  # what sealing dropped or changed, for the step's log


# (path for a cache of digests, the file's status, a function that reads and hashes it)
FileDigest = Callable[[str, os.stat_result, Callable[[], str]], str]


def file_digest(path: str, info: os.stat_result | None = None) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_it(path: str, info: os.stat_result, read: Callable[[], str]) -> str:
    return read()


def tree_digest(
    root: Path, digest_of: FileDigest = _read_it, skip: Collection[str] = ()
) -> tuple[str, int, int]:
    """A digest of a directory tree's names, types, executable bits and contents (without
    the root's entries named in ``skip``).

    Returns (digest, bytes in regular files, number of regular files). ``digest_of`` may
    answer from a cache of earlier digests (see :class:`dockyard.storage.hashing.InputHasher`)."""
    outer = hashlib.sha256()
    size = files = 0
    with safefs.opened(root) as root_fd:
        for folder in safefs.walk(root_fd, skip):
            for entry in folder.entries:
                rel, info = folder.path(entry.name), entry.info
                try:
                    if stat.S_ISLNK(info.st_mode):
                        line = f"L {rel}\0{os.readlink(entry.name, dir_fd=folder.fd)}"
                    elif stat.S_ISREG(info.st_mode):
                        path = os.path.join(root, *folder.rel, entry.name)
                        digest = digest_of(path, info, _reader(folder.fd, entry.name))
                        line = file_line(rel, bool(info.st_mode & 0o111), digest)
                        size += info.st_size
                        files += 1
                    else:
                        continue  # folders come after the files; the rest is not data
                except OSError as exc:
                    if safefs.vanished(exc):
                        continue  # changed while we looked (a volume in use)
                    raise
                outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
            for name in folder.subdirs:
                outer.update(f"D {folder.path(name)}\n".encode("utf-8", "surrogateescape"))
    return outer.hexdigest(), size, files


def file_line(rel: str, executable: bool, digest: str) -> str:
    """How a regular file counts in a tree's digest."""
    return f"F{'x' if executable else '-'} {rel}\0{digest}"


LONE_FILE = "data"  # the name of a lone file kept as a tree (a file input on a node)


def lone_file_digest(fd: int) -> str:
    """The digest of a tree that holds only the open regular file ``fd``, named
    :data:`LONE_FILE`: what :func:`tree_digest` gives for that tree, without making it."""
    info = os.fstat(fd)
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    line = file_line(LONE_FILE, bool(info.st_mode & 0o111), digest)
    return hashlib.sha256(line.encode("utf-8", "surrogateescape") + b"\n").hexdigest()


def _reader(dir_fd: int, name: str) -> Callable[[], str]:
    def read() -> str:
        with os.fdopen(safefs.open_file(dir_fd, name), "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    return read


_SPECIAL = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def seal(root: Path) -> list[str]:
    """Make the tree at ``root`` plain, read-only data; return what that dropped or changed."""
    changes: list[str] = []
    with safefs.opened(root) as root_fd:
        for folder in safefs.walk(root_fd):
            for entry in folder.entries:
                try:
                    _seal_entry(folder, entry, changes)
                except OSError as exc:
                    if not safefs.vanished(exc):
                        raise
            _seal(folder.fd, "/".join(folder.rel) or ".", changes)  # after its entries
    return changes


def _seal_entry(folder: safefs.Folder, entry: safefs.Entry, changes: list[str]) -> None:
    mode, rel = entry.info.st_mode, folder.path(entry.name)
    if stat.S_ISREG(mode):
        fd = safefs.open_file(folder.fd, entry.name)
        try:
            _seal(fd, rel, changes)
        finally:
            os.close(fd)
    elif not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        os.unlink(entry.name, dir_fd=folder.fd)
        kind = _SPECIAL.get(stat.S_IFMT(mode), "a special file")
        changes.append(f"dropped {rel!r} ({kind} is not data)")


_BITS = ((stat.S_ISUID, "set-uid"), (stat.S_ISGID, "set-gid"), (stat.S_ISVTX, "sticky"))


def _seal(fd: int, rel: str, changes: list[str]) -> None:
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    special = [what for bit, what in _BITS if mode & bit]
    if special:
        bits = "bits" if len(special) > 1 else "bit"
        changes.append(f"removed the {' and '.join(special)} {bits} of {rel!r}")
    if stat.S_ISREG(info.st_mode) and _drop_capabilities(fd):
        changes.append(f"removed the file capabilities of {rel!r}")
    if mode != mode & 0o555:
        os.fchmod(fd, mode & 0o555)


def _drop_capabilities(fd: int) -> bool:
    """Remove a file's capabilities (``setcap``), which act like a set-uid bit."""
    try:
        os.removexattr(fd, _CAPABILITY)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


@dataclass(frozen=True)
class Sealed:
    """A staging tree made plain data, and what it is (not yet in the store)."""

    digest: str
    size: int
    files: int
    changes: tuple[str, ...]


def seal_tree(staging: Path) -> Sealed:
    """Seal ``staging`` and hash it, in one walk (what :func:`seal`, then
    :func:`tree_digest` give): the slow part of a commit, which can run beside the loop
    (on the attempt's worker; on a cluster, on the node that holds the tree)."""
    changes: list[str] = []
    outer = hashlib.sha256()
    size = files = 0
    with safefs.opened(staging) as root_fd:
        for folder in safefs.walk(root_fd):
            for entry in folder.entries:
                rel, mode = folder.path(entry.name), entry.info.st_mode
                try:
                    if _line_break(folder, entry, changes):
                        continue
                    if stat.S_ISREG(mode):
                        fd = safefs.open_file(folder.fd, entry.name)
                        with os.fdopen(fd, "rb") as fh:
                            _seal(fd, rel, changes)
                            digest = hashlib.file_digest(fh, "sha256").hexdigest()
                        line = file_line(rel, bool(mode & 0o111), digest)
                        size += entry.info.st_size
                        files += 1
                    elif stat.S_ISLNK(mode):
                        line = f"L {rel}\0{os.readlink(entry.name, dir_fd=folder.fd)}"
                    else:
                        if not stat.S_ISDIR(mode):
                            _seal_entry(folder, entry, changes)  # dropped: not data
                        continue  # folders come after the files
                except OSError as exc:
                    if safefs.vanished(exc):
                        continue
                    raise
                outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
            _seal(folder.fd, "/".join(folder.rel) or ".", changes)  # after its entries
            for name in folder.subdirs:
                outer.update(f"D {folder.path(name)}\n".encode("utf-8", "surrogateescape"))
    return Sealed(outer.hexdigest(), size, files, _summary(changes))


def _line_break(folder: safefs.Folder, entry: safefs.Entry, changes: list[str]) -> bool:
    """Drop an entry whose name (or link target) holds a line break: each entry is one
    line of a tree's digest, and such a name could pass for other lines (two different
    trees with one digest). Whether it was dropped."""
    broken = "\n" in entry.name
    if not broken and stat.S_ISLNK(entry.info.st_mode):
        broken = "\n" in os.readlink(entry.name, dir_fd=folder.fd)
    if not broken:
        return False
    safefs.remove(folder.fd, entry.name)
    if entry.name in folder.subdirs:
        folder.subdirs.remove(entry.name)
    changes.append(f"dropped {folder.path(entry.name)!r} (a line break in a name is not data)")
    return True


def place(staging: Path, sealed: Sealed, outputs_dir: Path) -> Path:
    """Move a sealed tree into the content-addressed store; an identical output already
    there is kept and ``staging`` discarded."""
    final = outputs_dir / sealed.digest
    try:
        os.rename(staging, final)
    except FileNotFoundError:
        if staging.is_dir():  # the store's folder, the first time
            outputs_dir.mkdir(parents=True, exist_ok=True)
            return place(staging, sealed, outputs_dir)
        raise
    except OSError:  # (renaming onto a folder that is not empty: ENOTEMPTY or EEXIST)
        if not final.is_dir():
            raise
        discard(staging)  # the same content is kept already
    return final


def commit(staging: Path, outputs_dir: Path) -> Committed:
    """Seal ``staging`` and move it into the content-addressed store; reuse an identical
    existing output."""
    sealed = seal_tree(staging)
    final = place(staging, sealed, outputs_dir)
    return Committed(sealed.digest, final, sealed.size, sealed.files, sealed.changes)


def _summary(changes: list[str]) -> tuple[str, ...]:
    if len(changes) <= MAX_CHANGES:
        return tuple(changes)
    return (*changes[:MAX_CHANGES], f"and {len(changes) - MAX_CHANGES} more")


def note_changes(log: Path, changes: Iterable[str]) -> None:
    """Append what committing changed in an output to the attempt's log."""
    lines = [f"dockyard: committed /out: {change}\n" for change in changes]
    if lines:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.writelines(lines)


def discard(path: Path) -> None:
    """Delete a staging tree, including read-only parts."""
    safefs.rmtree(path)


__all__ = [
    "Committed",
    "Sealed",
    "commit",
    "discard",
    "file_digest",
    "file_line",
    "lone_file_digest",
    "note_changes",
    "place",
    "seal",
    "seal_tree",
    "tree_digest",
]
