"""Committed outputs: content-addressed, immutable directories under ``.dockyard/outputs``.

An attempt writes into a private staging directory. On success the tree is
hashed, made read-only and renamed into place in one ``rename(2)``, so a crash
at any moment leaves either no output or a whole one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Committed:
    digest: str
    path: Path
    size: int
    files: int


FileDigest = Callable[[str, os.stat_result], str]


def file_digest(path: str, info: os.stat_result | None = None) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def tree_digest(root: Path, digest_of: FileDigest = file_digest) -> tuple[str, int, int]:
    """A digest of a directory tree's names, types, executable bits and contents.

    Returns (digest, bytes in regular files, number of regular files). ``digest_of`` may
    answer from a cache of earlier digests (see :class:`dockyard.cache.InputHasher`).
    """
    outer = hashlib.sha256()
    size = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                entry = f"L {rel}\0{os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                executable = "x" if info.st_mode & 0o111 else "-"
                entry = f"F{executable} {rel}\0{digest_of(path, info)}"
                size += info.st_size
                files += 1
            else:
                continue  # sockets, fifos and devices are not data
            outer.update(entry.encode("utf-8", "surrogateescape") + b"\n")
        for name in dirnames:
            if name not in links:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                outer.update(f"D {rel}\n".encode("utf-8", "surrogateescape"))
    return outer.hexdigest(), size, files


def _make_readonly(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.lstat(path).st_mode
                os.chmod(path, stat.S_IMODE(mode) & ~0o222)


def commit(staging: Path, outputs_dir: Path) -> Committed:
    """Move ``staging`` into the content-addressed store; reuse an identical existing output."""
    digest, size, files = tree_digest(staging)
    final = outputs_dir / digest
    if final.exists():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        _make_readonly(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            discard(staging)  # a concurrent commit of the same content won
        else:
            os.chmod(final, 0o555)
    return Committed(digest, final, size, files)


def discard(path: Path) -> None:
    """Delete a staging tree, including read-only parts."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)
