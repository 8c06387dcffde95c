"""Copying file data between descriptors without filling holes (SEEK_DATA/SEEK_HOLE):
what snapshots, volume streams and trees between nodes share with :mod:`.safefs`, which
opens the files without following links."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

from dockyard.disk import safefs

CHUNK = 1 << 20  # bytes read or written at once


def extents(fd: int, size: int) -> list[tuple[int, int]]:
    """A file's data extents, holes skipped (SEEK_DATA/SEEK_HOLE)."""
    return list(data_extents(fd, size))


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """A file's data extents (start, length) within its first ``size`` bytes, one at a time
    (a file may have millions). Moves the file's offset."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                return
            # A file system that cannot tell holes: all of the rest is data (taking it
            # for a hole would lose data).
            yield offset, size - offset
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            return
        yield start, end - start
        offset = end


def copy_data(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes of data between descriptors, keeping holes."""
    for start, length in extents(src, size):
        offset = start
        while length:
            chunk = os.pread(src, min(CHUNK, length), offset)
            if not chunk:
                break  # it shrank while we copied: what remains is a hole
            write_at(dst, chunk, offset)
            offset += len(chunk)
            length -= len(chunk)
    os.ftruncate(dst, size)


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def copy_file(
    src_dir: int, name: str, dst_dir: int, perms: Callable[[int], int], new: str | None = None
) -> os.stat_result:
    """Copy the regular file ``name`` from ``src_dir`` to a new file in ``dst_dir`` (of the
    same name, or ``new``): data (sparse), ``perms(its mode)`` and its times. Returns the
    source's status as copied."""
    src = safefs.open_file(src_dir, name)
    try:
        info = os.fstat(src)
        dst = safefs.create_file(dst_dir, new if new is not None else name)
        try:
            copy_data(src, dst, info.st_size)
            os.fchmod(dst, perms(stat.S_IMODE(info.st_mode)))
            os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return info


__all__ = ["CHUNK", "copy_data", "copy_file", "data_extents", "extents", "write_at"]
