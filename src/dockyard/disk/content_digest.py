"""A file's content digest, computed at the cost of its data: holes are never read.

A plain sha256 of the bytes would read every byte of a hole (a ``truncate -s 4G`` costs
its maker nothing, its hasher 4 GiB), so the digest is defined over fixed chunks::

    sha256( b"dockyard-content-1\\n" + size as 8 bytes
            + for each chunk of CHUNK bytes, in order (the last may be shorter):
                b"D" + sha256(chunk)          a chunk that holds a byte other than zero
              a maximal run of n chunks of zeros only, instead of their items:
                b"Z" + n as 8 bytes )

(numbers big-endian). It is defined by the bytes alone, so a sparse file and a dense copy
of it have one digest; a hole costs one item however long it is, and the zeros hashed are
at most the parts of the chunks that a data extent touches (CHUNK bytes per extent end).
The chunks that are not zeros are also what a transfer sends (:func:`pieces`): ``data``,
their bytes, is the same on every copy, whatever its file system made holes of.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import NamedTuple

from dockyard.disk import safecopy

CHUNK = 1 << 16  # 64 KiB: a hole's edge costs at most this; a dense file, ~1% over sha256
READ = 1 << 20  # bytes read at once (a whole number of chunks)
PREFIX = b"dockyard-content-1\n"
_ZEROS = bytes(READ)
_ZERO_CHUNK = _ZEROS[:CHUNK]


class Content(NamedTuple):
    hex: str  # the digest
    size: int  # bytes, holes included
    data: int  # bytes in chunks that are not all zeros


def digest(fd: int, size: int | None = None) -> Content:
    """The content digest of the open regular file ``fd`` (its first ``size`` bytes;
    default: all of them). Reads by offset (its holes are found with SEEK_DATA, which
    moves the file's offset)."""
    size = os.fstat(fd).st_size if size is None else size
    outer = hashlib.sha256(PREFIX + size.to_bytes(8, "big"))
    done = data = 0  # chunks accounted for; bytes in data chunks
    for offset, view in pieces(fd, size):
        first = offset // CHUNK
        if first > done:
            outer.update(b"Z" + (first - done).to_bytes(8, "big"))
        for start in range(0, len(view), CHUNK):
            outer.update(b"D" + hashlib.sha256(view[start : start + CHUNK]).digest())
        done = first + -(-len(view) // CHUNK)
        data += len(view)
    total = -(-size // CHUNK)
    if total > done:
        outer.update(b"Z" + (total - done).to_bytes(8, "big"))
    return Content(outer.hexdigest(), size, data)


class Hasher:
    """The content digest of a file of ``size`` bytes from its data as it comes (a file
    received, hashed as it is written: no second read): :meth:`update` with whole chunks
    at increasing offsets (the file's last chunk may be short), then :meth:`result`.
    Chunks of zeros in what is given count as zeros, as :func:`digest` counts them."""

    def __init__(self, size: int):
        self.size = size
        self.outer = hashlib.sha256(PREFIX + size.to_bytes(8, "big"))
        self.done = 0  # chunks accounted for
        self.data = 0  # bytes in data chunks

    def update(self, offset: int, view: memoryview) -> None:
        """``view`` at ``offset``: whole chunks from a chunk's start, after what came."""
        if offset % CHUNK or offset // CHUNK < self.done or offset + len(view) > self.size:
            raise ValueError("data out of its file's order, or past its end")
        if len(view) % CHUNK and offset + len(view) != self.size:
            raise ValueError("data that is not whole chunks")
        first = offset // CHUNK
        for start in range(0, len(view), CHUNK):
            chunk = view[start : start + CHUNK]
            zero = _ZERO_CHUNK if len(chunk) == CHUNK else _ZEROS[: len(chunk)]
            if chunk == zero:  # (a memcmp)
                continue
            at = first + start // CHUNK
            if at > self.done:
                self.outer.update(b"Z" + (at - self.done).to_bytes(8, "big"))
            self.outer.update(b"D" + hashlib.sha256(chunk).digest())
            self.done = at + 1
            self.data += len(chunk)

    def result(self) -> Content:
        total = -(-self.size // CHUNK)
        outer = self.outer.copy()
        if total > self.done:
            outer.update(b"Z" + (total - self.done).to_bytes(8, "big"))
        return Content(outer.hexdigest(), self.size, self.data)


def pieces(fd: int, size: int) -> Iterator[tuple[int, memoryview]]:
    """The chunks of ``fd`` that are not all zeros, in order, as (offset, bytes): runs of
    whole chunks (the file's last may be short), at most READ bytes each. Only the chunks
    that data extents touch are read. A view is valid until the next one is asked for."""
    buffer = bytearray(min(READ, -(-size // CHUNK) * CHUNK))  # (a small file: a small one)
    view = memoryview(buffer)
    for first, end in _touched(fd, size):
        offset = first * CHUNK
        stop = min(end * CHUNK, size)
        while offset < stop:
            length = min(READ, stop - offset)
            got = _read_at(fd, view[:length], offset)
            if got < length:  # it shrank while we read: what is gone reads as zeros
                view[got:length] = _ZEROS[: length - got]
            yield from _nonzero(buffer, view, offset, length)
            offset += length


def _read_at(fd: int, into: memoryview, offset: int) -> int:
    """Fill ``into`` from ``offset``; fewer bytes only at the end of the file (a read may
    return less than asked before it, on a network file system say)."""
    got = 0
    while got < len(into):
        more = os.preadv(fd, [into[got:]], offset + got)
        if not more:
            break
        got += more
    return got


def _nonzero(
    buffer: bytearray, view: memoryview, offset: int, length: int
) -> Iterator[tuple[int, memoryview]]:
    """The runs of chunks in ``buffer[:length]`` (read at ``offset``) that are not zeros."""
    run = None  # where the current run of data chunks began in the buffer
    for start in range(0, length, CHUNK):
        end = min(start + CHUNK, length)
        zero = _ZERO_CHUNK if end - start == CHUNK else _ZEROS[: end - start]
        if buffer.startswith(zero, start, end):  # (a memcmp: stops at the first non-zero)
            if run is not None:
                yield offset + run, view[run:start]
                run = None
        elif run is None:
            run = start
    if run is not None:
        yield offset + run, view[run:length]


def _touched(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The ranges [first, end) of chunk numbers that data extents touch, merged."""
    span: tuple[int, int] | None = None
    for start, length in safecopy.data_extents(fd, size):
        first, end = start // CHUNK, -(-(start + length) // CHUNK)
        if span is not None and first <= span[1]:
            span = (span[0], max(span[1], end))
            continue
        if span is not None:
            yield span
        span = (first, end)
    if span is not None:
        yield span


__all__ = ["CHUNK", "Content", "Hasher", "digest", "pieces"]
