"""Making what dockyard wrote durable before it tells others about it: a snapshot that a
node publishes, or says it keeps, is on the disk first (its files, their folders, and the
folder it was renamed into), so that a node that loses its power does not come back with
a snapshot that the cluster counts on and that is empty or half there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dockyard.disk import safefs


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# This start of the machine: what says a folder is as recorded (a live folder's index, an
# agent's record of it) holds only in the start that wrote it; after a power loss, writes
# that had not reached the disk may be gone while the record says otherwise.
BOOT = _boot_id()


def sync_tree(path: Path, *, files: bool = True) -> None:
    """``fsync`` every folder under ``path`` (never through a link) and, with ``files``,
    every file (without: a tree of hard links to files that are on the disk already needs
    only its names there), then the folder that holds it."""
    with safefs.opened(path) as root:
        for folder in safefs.walk(root):
            _sync_in(folder.fd, folder.entries if files else [])
    sync_folder(path.parent)


def sync_flat(path: Path, folders: tuple[str, ...] = ()) -> None:
    """``fsync`` the files in ``path`` and in its sub-folders named in ``folders`` (one
    level each: a snapshot kept as its changes), the folders themselves, then the folder
    that holds ``path``: no walk of a tree."""
    with safefs.opened(path) as top:
        for name in folders:
            with safefs.opened(path / name) as fd:
                _sync_in(fd, safefs.entries(fd))
        _sync_in(top, safefs.entries(top))
    sync_folder(path.parent)


def _sync_in(folder: int, entries: list[safefs.Entry]) -> None:
    """``fsync`` the regular files among ``entries`` of ``folder``, then the folder."""
    for entry in entries:
        if stat.S_ISREG(entry.info.st_mode):
            _sync_at(folder, entry.name)
    os.fsync(folder)


def sync_folder(path: Path) -> None:
    """``fsync`` a folder: the names made, renamed or removed in it are on the disk."""
    with safefs.opened(path) as fd:
        os.fsync(fd)


def _sync_at(folder: int, name: str) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError as exc:
        if safefs.vanished(exc):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["BOOT", "sync_flat", "sync_folder", "sync_tree"]
