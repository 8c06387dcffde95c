"""Walking, reading and writing folders that a container may change, without following links.

dockyard runs as root over trees that containers write: live volumes (a ``keep: true``
service can still be writing one), a step's ``/out``, streams from other machines. A
container can replace any folder there with a symbolic link to a host path at any moment,
including between our ``lstat`` and our ``open``. So nothing here resolves a path in one
go: every folder is opened by one name at a time relative to its parent's descriptor with
``O_DIRECTORY | O_NOFOLLOW``, every file relative to its folder's descriptor with
``O_NOFOLLOW``, and changes go through descriptors (``fchmod``, ``futimens``) or the
``dir_fd=`` variants that do not follow links. A link is data: it is read with
``readlink`` and re-created, never traversed.

Only the root of a walk is given as a path; the folders above it belong to dockyard.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.errors import DockyardError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KEEP = 64  # folders kept open along the current path; deeper ones are reopened from there
RETRIES = 8  # how often to retry an entry that a concurrent writer keeps changing


class NotRegular(OSError):
    """The name is not (or no longer) a regular file: a link, a folder, a device, a FIFO."""


class Contended(DockyardError):
    """Something kept changing a folder while dockyard was changing it."""


def vanished(exc: OSError) -> bool:
    """Whether ``exc`` means the entry is gone or is no longer of the type it was listed as:
    the folder changed under us, which a walk of a live volume may meet and skip."""
    return isinstance(exc, NotRegular) or exc.errno in (
        errno.ENOENT,
        errno.ELOOP,
        errno.ENOTDIR,
        errno.EISDIR,
    )


# -- opening ----------------------------------------------------------------------------------


def open_root(path: Path | str) -> int:
    """Open the root of a walk. Its last name must not be a link; the folders above it are
    dockyard's own (the data root, a state folder)."""
    return os.open(path, _DIR)


@contextlib.contextmanager
def opened(path: Path | str) -> Iterator[int]:
    fd = open_root(path)
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(dir_fd: int, name: str) -> int:
    """Open the folder ``name`` in ``dir_fd``; ENOTDIR (or ELOOP) if it is a link or a file."""
    return os.open(name, _DIR, dir_fd=dir_fd)


def open_file(dir_fd: int, name: str) -> int:
    """Open the regular file ``name`` in ``dir_fd`` for reading, or raise :class:`NotRegular`.

    The name is first opened with ``O_PATH``, which has no effect on the object, and only
    reopened for reading once it is known to be a regular file: a plain ``open`` of a FIFO
    blocks, and opening some devices acts (a watchdog starts counting)."""
    handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", name)
        # The same inode as ``handle``: nothing can be swapped in between.
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)


def create_file(dir_fd: int, name: str) -> int:
    """Create ``name`` in ``dir_fd`` for writing; fails if anything (a link too) is there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o600, dir_fd=dir_fd)


def make_dir(dir_fd: int, name: str, mode: int) -> None:
    """Create the folder ``name`` with exactly ``mode`` (no umask)."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = open_dir(dir_fd, name)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """The entry's own status (a link's, not its target's), or None if there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Entry:
    name: str
    info: os.stat_result  # of the entry itself, as listed


class Overfull(Exception):
    """A walk met more entries than it was allowed to list."""


def entries(dir_fd: int, most: int | None = None) -> list[Entry]:
    """The entries of a folder, sorted by name, each with its own status; :class:`Overfull`
    past ``most`` of them (a folder of millions is not listed whole to find that out)."""
    found = []
    with os.scandir(dir_fd) as listing:
        for item in listing:
            try:
                found.append(Entry(item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed since it was listed
            if most is not None and len(found) > most:
                raise Overfull(f"more than {most} entries")
    found.sort(key=lambda e: e.name)
    return found


class Folders:
    """Folders under a root, opened by their names from it, never through a link.

    The folders along the last path asked for stay open, up to ``KEEP`` of them, so a walk
    in order opens each folder about once. Below that only the deepest one is open, and
    going back up is by ``..``, checking at each step that it is the folder the way down
    went through (a container may have moved it meanwhile; then the path is opened again
    by its names). So a very deep tree costs neither quadratic time nor a descriptor per
    level."""

    def __init__(self, root_fd: int):
        self.root = root_fd
        self.names: list[str] = []  # the path of the open folders, from the root
        self.fds: list[int] = []  # one per name, for the first KEEP names
        self.ids: list[tuple[int, int]] = []  # (device, inode) per name beyond KEEP
        self.deep: int | None = None  # the deepest folder, when deeper than KEEP

    def open(self, rel: Sequence[str]) -> int:
        """The folder at ``rel``: valid until the next call, or :meth:`reset`."""
        same = min(len(self.names), len(rel))
        if self.names[:same] != list(rel[:same]):  # (compared at C speed: trees can be deep)
            same = 0
            while self.names[same] == rel[same]:
                same += 1
        if same > KEEP:
            self._climb(same)
        else:
            self._cut(same)
        for name in rel[len(self.names) :]:
            self._descend(name)
        return self._current()

    def down(self, name: str) -> int:
        """The folder ``name`` in the one opened last: one step, whatever the depth."""
        self._descend(name)
        return self._current()

    def up(self) -> int:
        """The parent of the folder opened last: one step, whatever the depth."""
        if not self.names:
            raise ValueError("up from the root")
        depth = len(self.names) - 1
        if depth > KEEP:
            self._climb(depth)
        else:
            self._cut(depth)
        return self._current()

    def current(self) -> int:
        """The folder opened last (the root before any)."""
        return self._current()

    def reset(self) -> None:
        """Forget the open folders (after one of them may have been removed)."""
        self._cut(0)

    close = reset

    def _current(self) -> int:
        if self.deep is not None:
            return self.deep
        return self.fds[-1] if self.fds else self.root

    def _descend(self, name: str) -> None:
        fd = open_dir(self._current(), name)
        if len(self.names) < KEEP:
            self.fds.append(fd)
        else:
            info = os.fstat(fd)
            if self.deep is not None:
                os.close(self.deep)
            self.deep = fd
            self.ids.append((info.st_dev, info.st_ino))
        self.names.append(name)

    def _climb(self, depth: int) -> None:
        """Go up from the deepest folder to ``depth`` (> KEEP) by '..'; if a folder on the
        way is not the one we came down through, open the way again by its names."""
        assert self.deep is not None
        fd, self.deep = self.deep, None
        try:
            while len(self.names) > depth:
                up = os.open("..", _DIR, dir_fd=fd)
                os.close(fd)
                fd = up
                del self.names[-1], self.ids[-1]
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) != self.ids[-1]:
                    raise FileNotFoundError(errno.ENOENT, "moved", self.names[-1])
        except OSError:
            os.close(fd)
            again = self.names[KEEP:depth]
            del self.names[KEEP:], self.ids[:]
            for name in again:
                self._descend(name)
            return
        self.deep = fd

    def _cut(self, keep: int) -> None:
        """Close the folders below the first ``keep`` (at most KEEP) names."""
        if self.deep is not None:
            os.close(self.deep)
            self.deep = None
        del self.ids[:]
        for fd in self.fds[keep:]:
            os.close(fd)
        del self.fds[keep:], self.names[keep:]


@dataclass
class Folder:
    rel: tuple[str, ...]  # names from the root; () is the root
    fd: int  # valid until the walk moves on
    entries: list[Entry]
    subdirs: list[str] = field(default_factory=list)  # remove names to skip them

    def path(self, name: str) -> str:
        """``name``'s path from the root, '/'-separated."""
        return "/".join((*self.rel, name))


def open_or_none(folders: Folders | None, rel: tuple[str, ...]) -> int | None:
    """``folders.open(rel)``, or None without folders or without a folder there."""
    if folders is None:
        return None
    try:
        return folders.open(rel)
    except OSError as exc:
        if vanished(exc):
            return None
        raise


def walk(root_fd: int, skip: Collection[str] = (), most: int | None = None) -> Iterator[Folder]:
    """Every folder under ``root_fd`` (itself first), depth first, in name order; the
    root's entries named in ``skip`` are left out, and never entered. :class:`Overfull`
    once more than ``most`` entries were listed in all.

    Never enters a link. A sub-folder that is gone or became something else by the time
    the walk reaches it is skipped: its parent's listing still shows what it was."""
    folders = Folders(root_fd)
    stack: list[tuple[str, ...]] = [()]
    try:
        while stack:
            rel = stack.pop()
            try:
                fd = folders.open(rel)
            except OSError as exc:
                if vanished(exc):
                    continue
                raise
            listed = entries(fd, most)
            if most is not None:
                most -= len(listed)
            if skip and not rel:
                listed = [e for e in listed if e.name not in skip]
            folder = Folder(rel, fd, listed, [e.name for e in listed if _is_dir(e)])
            yield folder
            stack.extend((*rel, name) for name in reversed(folder.subdirs))
    finally:
        folders.close()


def _is_dir(entry: Entry) -> bool:
    return stat.S_ISDIR(entry.info.st_mode)


# -- removing ---------------------------------------------------------------------------------


def remove(dir_fd: int, name: str) -> bool:
    """Remove whatever ``name`` is in ``dir_fd``: a file, a link, a special file or a whole
    tree; nothing there is fine. Returns whether a folder was removed."""
    for _ in range(RETRIES):
        info = lstat_at(dir_fd, name)
        if info is None:
            return False
        try:
            if stat.S_ISDIR(info.st_mode):
                _remove_tree(dir_fd, name)
                return True
            os.unlink(name, dir_fd=dir_fd)
            return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            if not vanished(exc) and exc.errno != errno.ENOTEMPTY:
                raise
            # it changed type, or something wrote into the folder: look again
    raise Contended(f"{name!r} kept changing while dockyard was removing it")


def rmtree(path: Path) -> None:
    """Remove the tree at ``path`` (read-only parts too); a missing one is fine."""
    try:
        parent = open_root(path.parent)
    except FileNotFoundError:
        return
    try:
        remove(parent, path.name)
    finally:
        os.close(parent)


def _remove_tree(parent_fd: int, name: str) -> None:
    """Remove the folder ``name`` and everything in it, children first, without recursion
    (a container can nest folders deeper than Python's stack), a step down or up at a time
    (as cheap at the millionth level as at the first)."""
    folders = Folders(parent_fd)
    left = [[name]]  # by depth: the folders still to remove in the one open there
    try:
        while left:
            if left[-1]:
                sub = left[-1].pop()
                try:
                    left.append(_clear(folders.down(sub)))
                except OSError as exc:
                    if not vanished(exc):
                        raise
                    with contextlib.suppress(FileNotFoundError):  # (now a file or a link)
                        os.unlink(sub, dir_fd=folders.current())
            elif len(left) > 1:
                left.pop()
                emptied = folders.names[-1]
                os.rmdir(emptied, dir_fd=folders.up())
            else:
                break
    finally:
        folders.close()


def _clear(fd: int) -> list[str]:
    """Unlink all but the folders in ``fd``; their names."""
    with contextlib.suppress(PermissionError):  # as non-root, for read-only folders
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
    folders = []
    for entry in entries(fd):
        if _is_dir(entry):
            folders.append(entry.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=fd)
    return folders


__all__ = [
    "Contended",
    "Entry",
    "Folder",
    "Folders",
    "NotRegular",
    "Overfull",
    "create_file",
    "entries",
    "lstat_at",
    "make_dir",
    "open_dir",
    "open_file",
    "open_root",
    "opened",
    "remove",
    "rmtree",
    "vanished",
    "walk",
]
