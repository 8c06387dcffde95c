"""Copying volume trees without following a link: a live folder into a snapshot, a
snapshot's tree as hard links (a base to build on), and a live folder made equal to a
snapshot (rollback, receive), copying only what differs. A container may
change the live folder while this runs: every step goes through
:mod:`dockyard.disk.safefs`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from dockyard.disk import safecopy, safefs
from dockyard.disk.live_index import LiveIndex, status_of


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    """Unchanged, as far as a rollback can tell (rsync's quick check, write bits aside).
    (A snapshot is told what changed by the live folder's index instead: see
    :mod:`dockyard.disk.live_index`.)"""
    return (a.st_size, a.st_mtime_ns, (stat.S_IMODE(a.st_mode) & 0o777) | 0o222) == (
        b.st_size,
        b.st_mtime_ns,
        (stat.S_IMODE(b.st_mode) & 0o777) | 0o222,
    )


def copy_tree(
    source: int,
    target: int,
    perms: Callable[[int], int],
    *,
    link: bool = False,
    seen: LiveIndex | None = None,
) -> tuple[int, int, int]:
    """Copy the tree at ``source`` into the empty folder ``target``: folders, links (as
    links) and regular files, with ``perms`` of their permission bits, or, with ``link``,
    regular files hard-linked (a tree of dockyard's own, never a live folder). ``seen``
    records the status of every entry copied, as the walk saw it (the index of the live
    folder copied). Returns (files, bytes, bytes copied)."""
    files = total = copied = 0
    targets = safefs.Folders(target)
    try:
        for folder in safefs.walk(source):
            try:
                dst = targets.open(folder.rel)
            except FileNotFoundError:
                continue  # its folder was skipped: it changed while being listed
            for entry in folder.entries:
                mode = entry.info.st_mode
                try:
                    if stat.S_ISDIR(mode):
                        safefs.make_dir(dst, entry.name, stat.S_IMODE(mode) & 0o777)
                    elif stat.S_ISLNK(mode):
                        os.symlink(
                            os.readlink(entry.name, dir_fd=folder.fd), entry.name, dir_fd=dst
                        )
                    elif stat.S_ISREG(mode) and link:
                        os.link(
                            entry.name,
                            entry.name,
                            src_dir_fd=folder.fd,
                            dst_dir_fd=dst,
                            follow_symlinks=False,
                        )
                    elif stat.S_ISREG(mode):
                        info = safecopy.copy_file(folder.fd, entry.name, dst, perms)
                        copied += info.st_size
                    else:
                        continue  # devices, FIFOs and sockets are not data: they stay behind
                    if stat.S_ISREG(mode):
                        files += 1
                        total += entry.info.st_size
                    if seen is not None:
                        seen.entries[folder.path(entry.name)] = status_of(entry.info)  # type: ignore[assignment]
                except OSError as exc:
                    if not safefs.vanished(exc):
                        raise
    finally:
        targets.close()
    return files, total, copied


# Whether a live regular file already has the snapshot's content: (its folder's path, the
# snapshot's entry, the live file's status).
Same = Callable[[tuple[str, ...], safefs.Entry, os.stat_result], bool]


def mirror(source: Path, live: Path, same: Same | None = None) -> int:
    """Make ``live`` equal to ``source``, copying only what differs; return the bytes
    copied. A live regular file is left as it is when ``same`` says it has the content
    already (by default: rsync's quick check, which a same-size rewrite whose mtime was put
    back passes). ``live`` may be changed by a container meanwhile: an entry that keeps
    changing under us is retried a few times, then :class:`safefs.Contended` is raised."""
    with safefs.opened(source) as src_root, safefs.opened(live) as dst_root:
        return _Mirror(dst_root, same).run(src_root)


class _Mirror:
    def __init__(self, dst_root: int, same: Same | None):
        self.dst = safefs.Folders(dst_root)
        self.same = same
        self.copied = 0

    def run(self, src_root: int) -> int:
        # Removing an entry of the folder being mirrored never removes one of the folders
        # ``self.dst`` holds open (the folder itself and those above it).
        try:
            for folder in safefs.walk(src_root):
                dst = self._folder(folder.rel)
                present = {e.name: e.info for e in safefs.entries(dst)}
                for entry in folder.entries:
                    self._entry(folder.fd, dst, entry, present.get(entry.name), folder.rel)
                for name in sorted(present.keys() - {e.name for e in folder.entries}):
                    safefs.remove(dst, name)
        finally:
            self.dst.close()
        return self.copied

    def _folder(self, rel: tuple[str, ...]) -> int:
        """The live folder at ``rel``, made a real folder again if it was replaced since
        its parent was mirrored."""
        for _ in range(safefs.RETRIES):
            try:
                return self.dst.open(rel)
            except OSError as exc:
                if not rel or not safefs.vanished(exc):
                    raise
            try:
                parent = self.dst.open(rel[:-1])
                safefs.remove(parent, rel[-1])
                safefs.make_dir(parent, rel[-1], 0o755)
            except OSError as exc:
                if not safefs.vanished(exc) and not isinstance(exc, FileExistsError):
                    raise
        raise safefs.Contended(f"{'/'.join(rel)!r} kept changing while dockyard was writing it")

    def _entry(
        self,
        src: int,
        dst: int,
        entry: safefs.Entry,
        present: os.stat_result | None,
        rel: tuple[str, ...],
    ) -> None:
        mode, name = entry.info.st_mode, entry.name
        for _ in range(safefs.RETRIES):
            if present is not None and self._matches(src, dst, entry, present, rel):
                if stat.S_ISDIR(mode) and stat.S_IMODE(present.st_mode) != mode & 0o777:
                    _chmod_folder(dst, name, mode & 0o777)  # (its content stays)
                return
            try:
                if present is not None:
                    safefs.remove(dst, name)
                if stat.S_ISDIR(mode):
                    safefs.make_dir(dst, name, stat.S_IMODE(mode) & 0o777)
                elif stat.S_ISLNK(mode):
                    os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
                elif stat.S_ISREG(mode):
                    info = safecopy.copy_file(src, name, dst, lambda m: (m & 0o777) | 0o200)
                    self.copied += info.st_size
                return
            except OSError as exc:
                if not safefs.vanished(exc) and not isinstance(exc, FileExistsError):
                    raise
            present = safefs.lstat_at(dst, name)  # something else is there now: look again
        raise safefs.Contended(f"{name!r} kept changing while dockyard was writing it")

    def _matches(
        self,
        src: int,
        dst: int,
        entry: safefs.Entry,
        present: os.stat_result,
        rel: tuple[str, ...],
    ) -> bool:
        """Whether the live entry already is what the snapshot has."""
        mode = entry.info.st_mode
        if stat.S_ISDIR(mode):
            return stat.S_ISDIR(present.st_mode)
        if stat.S_ISLNK(mode):
            if not stat.S_ISLNK(present.st_mode):
                return False
            try:
                return os.readlink(entry.name, dir_fd=dst) == os.readlink(entry.name, dir_fd=src)
            except OSError:
                return False
        if not stat.S_ISREG(present.st_mode):
            return False
        if self.same is not None:
            return self.same(rel, entry, present)
        return _same(present, entry.info)


def _chmod_folder(dst: int, name: str, mode: int) -> None:
    """Give a live folder the snapshot's permissions, through its descriptor (never a link)."""
    try:
        fd = safefs.open_dir(dst, name)
    except OSError as exc:
        if safefs.vanished(exc):
            return  # replaced meanwhile: the next mirror of its parent sees it
        raise
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


__all__ = ["copy_tree", "mirror"]
