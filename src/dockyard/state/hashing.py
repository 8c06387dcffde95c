"""Content digests of host inputs (for cache keys, see :mod:`dockyard.planning.keys`).

Hashing inputs must not re-read unchanged large files on every run, so each file's
digest is kept with its size, mtime and inode (as git's index and make do) and reused
while those match. A file modified within the last few seconds is not remembered,
since a second write in the same mtime tick could go unnoticed ("racy git").
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from dockyard.disk.sealing import file_digest, tree_digest
from dockyard.state.store import Store

RACY_SECONDS = 3.0


class NotData(OSError):
    """A path that is neither a file nor a folder (a FIFO, a device): it has no digest."""


class InputHasher:
    def __init__(self, store: Store, clock: float | None = None):
        self.store = store
        self.now = clock if clock is not None else time.time()
        self.memo: dict[str, str] = {}
        self.pending: list[tuple[str, int, int, int, str]] = []
        self.known: dict[str, tuple[int, int, int, str]] | None = None

    def digest(
        self, path: Path | str, *, may_change: bool = False, info: os.stat_result | None = None
    ) -> str:
        """The content digest of a file, or of a directory tree (names, exec bits, contents).

        Host inputs do not change during a run, so their digest is computed once per run;
        a volume (``may_change``) can be written by an earlier step and is walked again
        (its unchanged files still come from the stat cache). ``info``: the path's status,
        when the caller has it already (it is not a link)."""
        key = str(path)
        if may_change or key not in self.memo:
            info = info if info is not None and not may_change else os.stat(key)
            if stat.S_ISDIR(info.st_mode):
                self.memo[key] = self._tree(Path(key))
            elif stat.S_ISREG(info.st_mode):
                self.memo[key] = "f:" + self._file(key, info)
            else:  # a FIFO or a device: reading it for a digest might never end
                raise NotData(f"{key} is neither a file nor a folder")
        return self.memo[key]

    def flush(self) -> None:
        """Persist the digests computed since the last flush."""
        self.store.put_file_hashes(self.pending)
        if self.known is not None:
            for path, size, mtime_ns, inode, digest in self.pending:
                self.known[path] = (size, mtime_ns, inode, digest)
        self.pending = []

    def _tree(self, root: Path) -> str:
        digest, _, _ = tree_digest(
            root, lambda path, info, read: self._file(Path(path), info, read)
        )
        return "d:" + digest

    def _file(
        self, path: Path | str, info: os.stat_result, read: Callable[[], str] | None = None
    ) -> str:
        """``read`` hashes the file without following links (it is in a tree a container
        may change); a host input file is read by its path."""
        key = str(path)
        if self.known is None:  # every digest kept from earlier runs, in one query
            self.known = self.store.file_hashes()
        known = self.known.get(key)
        if known is not None and known[:3] == (info.st_size, info.st_mtime_ns, info.st_ino):
            return known[3]
        digest = read() if read is not None else file_digest(str(path))
        if self.now - info.st_mtime > RACY_SECONDS:
            self.pending.append((key, info.st_size, info.st_mtime_ns, info.st_ino, digest))
        return digest
