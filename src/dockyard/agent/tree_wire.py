"""The tree stream between agents (version 1), and the primitives that read it strictly::

    DOCKYARD-TREE 1\\n
    mode:u16                           the permission bits of the tree's top folder
    then records, each a type byte and its fields (numbers big-endian):
      D mode:u16 name                  a folder in the current one, made and entered
      U                                back to the current folder's parent
      F mode:u16 name size:u64         a regular file of ``size`` bytes, all holes until
                                       its pieces come
      P offset:u64 length:u32 bytes    data of the last file, at ``offset``: after its
                                       last piece, within its size, 1 to PIECE bytes
      L name target                    a symbolic link (data: never followed)
      E records:u64                    the end, and how many records came before it
    name:   u8 length (1-255), then the bytes: no '/' or NUL, not '.' or '..'
    target: u16 length (1-4095), then the bytes: no NUL
    mode:   permission bits only (at most 0o777); the receiver keeps them less writing,
            so an input that only its owner may read stays so on a node

Records follow a walk: a folder's files and links, then each of its folders in turn,
entered, filled and left, so that every name is one step from the folder before it (a
deep tree costs no more per entry than a flat one). A file's pieces are its chunks that
are not all zeros (:func:`dockyard.disk.content_digest.pieces`): holes, and zeros,
are neither sent nor written, and the data sent is what the tree's seal counted.
"""

from __future__ import annotations

import io
from typing import Protocol

from dockyard.disk.keeping import TreeError

MAGIC = b"DOCKYARD-TREE 1\n"
PIECE = 1 << 20  # the longest piece (what content_digest.pieces gives at most)
FLUSH = 1 << 18  # bytes gathered before a write (records are small; a socket write is not)
AHEAD = 1 << 16  # bytes read ahead (records are read a few bytes at a time)
DIRECT = 1 << 16  # a piece at least this long is written as it is, not gathered
MAX_TARGET = 4095


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return len(raw).to_bytes(1, "big") + raw


class Writer:
    """Writes a stream, gathering small records into larger writes."""

    def __init__(self, out: Writable, root_mode: int):
        self.out = out
        self.buffer = bytearray(MAGIC) + _mode(root_mode)
        self.records = 0

    def folder(self, name: str, mode: int) -> None:
        self._record(b"D" + _mode(mode) + encode_name(name))

    def up(self) -> None:
        self._record(b"U")

    def file(self, name: str, mode: int, size: int) -> None:
        self._record(b"F" + _mode(mode) + encode_name(name) + size.to_bytes(8, "big"))

    def piece(self, offset: int, data: memoryview) -> None:
        self._record(b"P" + offset.to_bytes(8, "big") + len(data).to_bytes(4, "big"))
        if len(data) < DIRECT:
            self.buffer += data
            if len(self.buffer) >= FLUSH:
                self.flush()
            return
        self.flush()  # (then the data as it is: no copy into the buffer)
        self.out.write(data)

    def link(self, name: str, target: str) -> None:
        raw = target.encode("utf-8", "surrogateescape")
        self._record(b"L" + encode_name(name) + len(raw).to_bytes(2, "big") + raw)

    def end(self) -> None:
        self.buffer += b"E" + self.records.to_bytes(8, "big")
        self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.out.write(bytes(self.buffer))
            self.buffer.clear()

    def _record(self, data: bytes) -> None:
        self.buffer += data
        self.records += 1
        if len(self.buffer) >= FLUSH:
            self.flush()


def _mode(mode: int) -> bytes:
    return (mode & 0o777).to_bytes(2, "big")


class Reader:
    """Reads a stream's fields, refusing what a writer never sends; counts what it read."""

    def __init__(self, inp: Readable):
        self.inp = inp
        self.ahead = b""
        self.at = 0
        if self.take(len(MAGIC), "its start") != MAGIC:
            raise TreeError("not a dockyard tree stream (or one of another version)")
        self.root_mode = self.mode()

    def kind(self) -> bytes:
        return self.take(1, "a record")

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size, "a record"), "big")

    def mode(self) -> int:
        mode = self.number(2)
        if mode > 0o777:
            raise TreeError(f"refused a mode of {mode:#o}: permission bits only")
        return mode

    def name(self) -> str:
        raw = self.take(self.number(1), "a name")
        if not raw or b"/" in raw or b"\0" in raw or raw in (b".", b".."):
            raise TreeError(f"refused a member named {raw!r}")
        return raw.decode("utf-8", "surrogateescape")

    def target(self) -> str:
        raw = self.take(self.number(2), "a link")
        if not raw or b"\0" in raw or len(raw) > MAX_TARGET:
            raise TreeError(f"refused a link to {raw!r}")
        return raw.decode("utf-8", "surrogateescape")

    def take(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes, or :class:`TreeError` (the stream ended early)."""
        if self.at + size <= len(self.ahead):
            self.at += size
            return self.ahead[self.at - size : self.at]
        parts = [self.ahead[self.at :]]
        have = len(parts[0])
        self.ahead, self.at = b"", 0
        while have < size:
            more = self.inp.read(max(size - have, AHEAD))
            if not more:
                raise TreeError(f"the stream is truncated (in {what})")
            parts.append(more)
            have += len(more)
        data = b"".join(parts)
        self.ahead, self.at = data, size
        return data[:size]

    def take_into(self, into: memoryview, what: str) -> None:
        """Exactly ``len(into)`` bytes into ``into`` (what was read ahead, then straight
        from the input when it can read into a buffer), or :class:`TreeError`."""
        have = min(len(into), len(self.ahead) - self.at)
        into[:have] = self.ahead[self.at : self.at + have]
        self.at += have
        readinto = getattr(self.inp, "readinto", None)
        while have < len(into):
            got = None
            if readinto is not None:
                try:
                    got = readinto(into[have:])
                except (NotImplementedError, io.UnsupportedOperation):
                    readinto = None  # (a reader of its own read alone)
            if got is None:
                more = self.inp.read(len(into) - have)
                got = len(more)
                into[have : have + got] = more
            if not got:
                raise TreeError(f"the stream is truncated (in {what})")
            have += got

    def at_end(self) -> bool:
        """Whether nothing follows (after the end record)."""
        return self.at == len(self.ahead) and not self.inp.read(1)


__all__ = [
    "MAGIC",
    "PIECE",
    "Readable",
    "Reader",
    "TreeError",
    "Writable",
    "Writer",
]
