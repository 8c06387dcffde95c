"""Committed outputs: content-addressed, immutable directories under ``.dockyard/outputs``.

An attempt writes into a private staging directory. On success the tree is sealed,
hashed and renamed into place in one ``rename(2)``, so a crash at any moment leaves
either no output or a whole one, never half of one.

A step's container wrote that tree, as root perhaps, and local users can read committed
outputs: sealing makes it data and nothing more. Devices, FIFOs and sockets are dropped
(a device node would give whoever can open it the host's device), set-uid, set-gid and
sticky bits and file capabilities are removed (a set-uid-root binary would let any local
user run it as root), and everything becomes read-only. What was dropped or changed is
returned, so that the step's log can say so; every entry then belongs to root. All of it
through :mod:`dockyard.disk.safefs`: links in the tree are kept, never followed. The
digest is computed in the same walk, line by line as :mod:`.tree_digests` defines it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dockyard.disk import content_digest, safefs
from dockyard.disk.tree_digests import (
    LONE_FILE,
    LONE_ROOT_MODE,
    FileDigest,
    Modes,
    Tally,
    digest_mode,
    file_digest,
    file_line,
    folder_lines,
    lone_file_digest,
    root_line,
    tree_digest,
    tree_tally,
)
from dockyard.disk.tree_limits import LIMITS, Limits, OutputRefused

MAX_CHANGES = 20  # listed one by one; the rest are counted
_CAPABILITY = "security.capability"


_SPECIAL = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


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


def _seal(fd: int, rel: str, changes: list[str], modes: Modes | None = None) -> None:
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    special = [what for bit, what in _BITS if mode & bit]
    if special:
        bits = "bits" if len(special) > 1 else "bit"
        changes.append(f"removed the {' and '.join(special)} {bits} of {rel!r}")
    if stat.S_ISREG(info.st_mode) and _drop_capabilities(fd):
        changes.append(f"removed the file capabilities of {rel!r}")
    if (info.st_uid, info.st_gid) != (0, 0) and os.geteuid() == 0:
        # The owner of a file may chmod it writable again: a step that chowns /out to a
        # uid would leave that local user able to rewrite a committed output.
        os.fchown(fd, 0, 0)
    sealed = (modes or sealed_mode)(info.st_mode)
    if mode != sealed:
        os.fchmod(fd, sealed)


def sealed_mode(mode: int) -> int:
    """The permission bits of a sealed step output: readable by all (the step's uid no
    longer owns it), executable when any x bit was set, writable by no one."""
    if stat.S_ISDIR(mode) or mode & 0o111:
        return 0o555
    return 0o444


# The permission bits of a sealed tree that came with its modes (a copy of an output or
# of an input, on a node): as they were, less writing and the special bits, which is what
# its digest counts.
kept_mode = digest_mode


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
    data: int = 0  # bytes a transfer of it carries (see :class:`Tally`)
    entries: int = 0  # files, folders and links


def seal_tree(staging: Path, limits: Limits = LIMITS, modes: Modes = sealed_mode) -> Sealed:
    """Seal ``staging`` and hash it, in one walk (what :func:`seal`, then
    :func:`tree_digest` give): the slow part of a commit, which can run beside the loop
    (on the attempt's worker; on a cluster, on the node that holds the tree).
    :class:`OutputRefused` for a tree past ``limits``. ``modes``: what permission bits
    each entry keeps (:func:`sealed_mode` for a step's output)."""
    changes: list[str] = []
    with safefs.opened(staging) as root_fd:
        try:
            tally = _seal_walk(root_fd, limits, changes, modes)
        except safefs.Overfull:
            raise limits.too_many() from None
    return Sealed(
        tally.digest, tally.size, tally.files, _summary(changes), tally.data, tally.entries
    )


def _seal_walk(root_fd: int, limits: Limits, changes: list[str], modes: Modes) -> Tally:
    outer = hashlib.sha256(root_line(stat.S_IFDIR | modes(os.fstat(root_fd).st_mode)))
    size = data = files = entries = 0
    for folder in safefs.walk(root_fd, most=limits.entries):
        limits.check_depth(folder.rel)
        for entry in folder.entries:
            try:
                kept = _seal_kept(folder, entry, limits, changes, modes)
            except OSError as exc:
                if safefs.vanished(exc):
                    continue
                raise
            if kept is None:
                continue  # dropped
            entries += 1
            line, content = kept
            if content is not None:
                size, data, files = size + content.size, data + content.data, files + 1
            if line:  # (folders come after the files)
                outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
        _seal(folder.fd, "/".join(folder.rel) or ".", changes, modes)  # after its entries
        folder_lines(outer, folder, modes)
    return Tally(outer.hexdigest(), size, data, files, entries)


def _seal_kept(
    folder: safefs.Folder, entry: safefs.Entry, limits: Limits, changes: list[str], modes: Modes
) -> tuple[str, content_digest.Content | None] | None:
    """Seal one entry: its line in the digest ('' for a folder) and a file's content, or
    None if it was dropped."""
    rel, mode = folder.path(entry.name), entry.info.st_mode
    if _line_break(folder, entry, changes):
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        _seal_entry(folder, entry, changes)  # dropped: not data
        return None
    limits.check_path(rel)
    if stat.S_ISDIR(mode):
        return "", None
    if stat.S_ISLNK(mode):
        return f"L {rel}\0{os.readlink(entry.name, dir_fd=folder.fd)}", None
    fd = safefs.open_file(folder.fd, entry.name)
    try:
        _seal(fd, rel, changes, modes)
        content = content_digest.digest(fd)
    finally:
        os.close(fd)
    return file_line(rel, digest_mode(modes(mode)), content.hex), content


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


__all__ = [  # (with what the tree digests are, which callers of sealing use too)
    "LONE_FILE",
    "LONE_ROOT_MODE",
    "FileDigest",
    "OutputRefused",
    "Sealed",
    "Tally",
    "digest_mode",
    "discard",
    "file_digest",
    "file_line",
    "kept_mode",
    "lone_file_digest",
    "note_changes",
    "seal_tree",
    "sealed_mode",
    "tree_digest",
    "tree_tally",
]
