"""Digests of trees: names, types, permission bits less writing, and contents (each file
by :mod:`.content_digest`, holes never read), one line an entry, in walk order. Sealing
(:mod:`.outputs`) writes the same lines as it seals; a tree kept anywhere has the digest
its seal gave it."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.disk import content_digest, safefs
from dockyard.disk.tree_limits import LIMITS, Limits

Modes = Callable[[int], int]  # an entry's st_mode -> its sealed permission bits


# (path for a cache of digests, the file's status, a function that reads and hashes it)
FileDigest = Callable[[str, os.stat_result, Callable[[], str]], str]


def file_digest(path: str, info: os.stat_result | None = None) -> str:
    """The content digest of the file at ``path`` (:mod:`.content_digest`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return content_digest.digest(fd).hex
    finally:
        os.close(fd)


def _read_it(path: str, info: os.stat_result, read: Callable[[], str]) -> str:
    return read()


@dataclass(frozen=True)
class Tally:
    """What a tree holds: its digest, bytes in regular files (``data``: those a transfer
    carries, see :mod:`.content_digest`), regular files, and files, folders and links."""

    digest: str
    size: int
    data: int
    files: int
    entries: int


def tree_digest(
    root: Path, digest_of: FileDigest = _read_it, skip: Collection[str] = ()
) -> tuple[str, int, int]:
    """A digest of a directory tree's names, types, permission bits (:func:`digest_mode`)
    and contents (without the root's entries named in ``skip``).

    Returns (digest, bytes in regular files, number of regular files). ``digest_of`` may
    answer from a cache of earlier digests (see :class:`dockyard.state.hashing.InputHasher`)."""

    def content(folder: safefs.Folder, entry: safefs.Entry) -> content_digest.Content:
        path = os.path.join(root, *folder.rel, entry.name)
        digest = digest_of(path, entry.info, _reader(folder.fd, entry.name))
        return content_digest.Content(digest, entry.info.st_size, 0)

    tally = _tree(root, content, skip)
    return tally.digest, tally.size, tally.files


def tree_tally(root: Path, limits: Limits = LIMITS) -> Tally:
    """:func:`tree_digest` and the counts that bound a transfer of the tree;
    :class:`OutputRefused` for a tree past ``limits``, which no node would take."""
    what = f"the input {str(root)!r}"
    read = lambda folder, entry: _content(folder.fd, entry.name)  # noqa: E731
    try:
        return _tree(root, read, (), (limits, what))
    except safefs.Overfull:
        raise limits.too_many(what) from None


def _tree(
    root: Path,
    content: Callable[[safefs.Folder, safefs.Entry], content_digest.Content],
    skip: Collection[str],
    bounded: tuple[Limits, str] | None = None,
) -> Tally:
    """(``bounded``: the limits the tree must keep, and what to call it if it does not.)"""
    outer = hashlib.sha256()
    size = data = files = entries = 0
    limits, what = bounded if bounded is not None else (None, "")
    with safefs.opened(root) as root_fd:
        outer.update(root_line(os.fstat(root_fd).st_mode))
        for folder in safefs.walk(root_fd, skip, limits.entries if limits else None):
            if limits is not None:
                limits.check_depth(folder.rel, what)
            for entry in folder.entries:
                rel, info = folder.path(entry.name), entry.info
                if limits is not None:
                    limits.check_path(rel, what)
                try:
                    if stat.S_ISLNK(info.st_mode):
                        line = f"L {rel}\0{os.readlink(entry.name, dir_fd=folder.fd)}"
                    elif stat.S_ISREG(info.st_mode):
                        found = content(folder, entry)
                        line = file_line(rel, digest_mode(info.st_mode), found.hex)
                        size += found.size
                        data += found.data
                        files += 1
                    else:
                        entries += stat.S_ISDIR(info.st_mode)
                        continue  # folders come after the files; the rest is not data
                except OSError as exc:
                    if safefs.vanished(exc):
                        continue  # changed while we looked (a volume in use)
                    raise
                entries += 1
                outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
            folder_lines(outer, folder, digest_mode)
    return Tally(outer.hexdigest(), size, data, files, entries)


def digest_mode(mode: int) -> int:
    """The permission bits of an entry that its tree's digest counts: what a consumer of
    the kept tree sees (writing never; a folder always its owner's to list and enter, as
    the agent that builds a received tree needs)."""
    bits = stat.S_IMODE(mode) & 0o555
    return bits | 0o500 if stat.S_ISDIR(mode) else bits


def file_line(rel: str, mode: int, digest: str) -> str:
    """How a regular file counts in a tree's digest (``mode``: its :func:`digest_mode`)."""
    return f"F{mode:03o} {rel}\0{digest}"


def root_line(mode: int) -> bytes:
    """How the tree's top folder counts in its digest (first, by its ``st_mode``)."""
    return f"R{digest_mode(mode):03o}\n".encode()


def folder_lines(outer: Any, folder: safefs.Folder, modes: Modes) -> None:
    """The lines of ``folder``'s sub-folders (after its files and links), with the modes
    they have once sealed."""
    kinds = {entry.name: entry.info.st_mode for entry in folder.entries}
    for name in folder.subdirs:
        line = f"D{digest_mode(stat.S_IFDIR | modes(kinds[name])):03o} {folder.path(name)}\n"
        outer.update(line.encode("utf-8", "surrogateescape"))


LONE_FILE = "data"  # the name of a lone file kept as a tree (a file input on a node)
LONE_ROOT_MODE = 0o555  # its folder's (the agent's, not the user's: the file has its own)


def lone_file_digest(fd: int) -> str:
    """The digest of a tree that holds only the open regular file ``fd``, named
    :data:`LONE_FILE`: what :func:`tree_digest` gives for that tree, without making it."""
    info = os.fstat(fd)
    digest = content_digest.digest(fd, info.st_size).hex
    line = file_line(LONE_FILE, digest_mode(info.st_mode), digest)
    outer = hashlib.sha256(root_line(stat.S_IFDIR | LONE_ROOT_MODE))
    outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return outer.hexdigest()


def _content(dir_fd: int, name: str) -> content_digest.Content:
    fd = safefs.open_file(dir_fd, name)
    try:
        return content_digest.digest(fd)
    finally:
        os.close(fd)


def _reader(dir_fd: int, name: str) -> Callable[[], str]:
    return lambda: _content(dir_fd, name).hex
