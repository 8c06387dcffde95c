"""A byte stream between agents, authenticated as a whole: frames of data, then an HMAC
of everything sent, keyed with the cluster key and bound to the request it answers.

A volume stream carries its own checksum, but a checksum is no signature: whoever sits on
the network between two nodes could send a whole stream of their own. So the sender
writes ``LEN DATA`` frames (``LEN`` a 4-byte big-endian count, at most :data:`MAX_FRAME`)
and ends with a zero-length frame and the HMAC-SHA256 of the request's nonce and every
data byte; the reader gives the data on, and gives its end (``b""``) only once the HMAC
checks out: a consumer that acts only at the end (``receive`` adopts a snapshot only
after its stream ended) acts on nothing that the cluster key did not sign.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Protocol

from dockyard.errors import AgentFailure

MAX_FRAME = 1 << 20
_LEN = struct.Struct(">I")
MAC_BYTES = 32


class FrameError(AgentFailure):
    pass


class _Out(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


class _In(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _mac(key: bytes, context: str) -> hmac.HMAC:
    return hmac.new(key, b"dockyard-frames\0" + context.encode() + b"\0", hashlib.sha256)


class FrameWriter:
    """A file-like writer: each write becomes frames; :meth:`close` writes the end."""

    def __init__(self, out: _Out, key: bytes, context: str):
        self.out = out
        self.mac = _mac(key, context)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME):
            piece = view[start : start + MAX_FRAME]
            self.out.write(_LEN.pack(len(piece)))
            self.out.write(piece)
            self.mac.update(piece)
        return len(data)

    def close(self) -> None:
        self.out.write(_LEN.pack(0))
        self.out.write(self.mac.digest())


class FrameReader:
    """A file-like reader of what a :class:`FrameWriter` wrote: its end is given only once
    the HMAC over the whole stream checks out (else :class:`FrameError`)."""

    def __init__(self, inp: _In, key: bytes, context: str):
        self.inp = inp
        self.mac = _mac(key, context)
        self.buffer = b""
        self.pos = 0  # what of ``buffer`` was given out already
        self.done = False

    def _exactly(self, size: int) -> bytes:
        parts = []
        while size:
            piece = self.inp.read(size)
            if not piece:
                raise FrameError("the stream ended early (the sender stopped or was cut off)")
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def _fill(self) -> None:
        (length,) = _LEN.unpack(self._exactly(_LEN.size))
        if length > MAX_FRAME:
            raise FrameError("a frame longer than the sender may write")
        if length == 0:
            if not hmac.compare_digest(self._exactly(MAC_BYTES), self.mac.digest()):
                raise FrameError("the stream is not what the cluster key signed")
            self.done = True
            return
        data = self._exactly(length)
        self.mac.update(data)
        self.buffer = self.buffer[self.pos :] + data
        self.pos = 0

    def _take(self, end: int) -> bytes:
        data = self.buffer[self.pos : end]
        self.pos = end
        return data

    def read(self, size: int = -1) -> bytes:
        wanted = size if size >= 0 else 1 << 62
        while len(self.buffer) - self.pos < wanted and not self.done:
            self._fill()
        return self._take(min(len(self.buffer), self.pos + wanted))

    def readline(self, limit: int = -1) -> bytes:
        wanted = limit if limit >= 0 else 1 << 62
        while True:
            stop = min(len(self.buffer), self.pos + wanted)
            end = self.buffer.find(b"\n", self.pos, stop)
            if end >= 0:
                return self._take(end + 1)
            if stop - self.pos >= wanted or self.done:
                return self._take(stop)
            self._fill()


__all__ = ["FrameError", "FrameReader", "FrameWriter"]
