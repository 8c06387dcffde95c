"""A chunked HTTP request body, read as a file (what ``tarfile``'s stream mode needs).

Read strictly: a chunk size is hexadecimal digits alone, at most :data:`MAX_CHUNK`
(``int(line, 16)`` alone takes ``-5``, ``0x10`` and ``1_0``; a negative size read the rest
of the body into memory), each chunk ends with a line end, and the trailers are few.
"""

from __future__ import annotations

import re
from typing import Protocol

from dockyard.agent.trees import Readable, TreeError

MAX_CHUNK = 64 << 20  # dockyard's client sends 1 MiB chunks; a larger size is no tree's
MAX_TRAILERS = 16  # trailer lines after the last chunk (dockyard's client sends none)
LINE = 1024  # a chunk size line, with its extensions; a trailer line
_SIZE = re.compile(rb"[0-9A-Fa-f]+")


class LineReadable(Readable, Protocol):
    def readline(self, size: int = ..., /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Chunked:
    """A chunked request body, read as a file (what ``tarfile``'s stream mode needs)."""

    def __init__(self, raw: LineReadable):
        self.raw = raw
        self.left = 0
        self.done = False

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        while wanted > 0 and not self.done:
            if self.left == 0:
                self.left = self._size()
                if self.left == 0:
                    self.done = True
                    self._trailers()
                    break
            piece = self.raw.read(min(self.left, wanted))
            if not piece:
                raise TreeError("the body ended early")
            parts.append(piece)
            self.left -= len(piece)
            wanted -= len(piece)
            if self.left == 0 and self.raw.readline(3) not in (b"\r\n", b"\n"):
                raise TreeError("a broken chunked body: a chunk longer than its size says")
        return b"".join(parts)

    def readinto(self, into: memoryview) -> int:
        """Up to ``len(into)`` bytes of the body into ``into`` (what one chunk has left at
        most: no copy); 0 at its end."""
        if not len(into) or self.done:
            return 0
        if self.left == 0:
            self.left = self._size()
            if self.left == 0:
                self.done = True
                self._trailers()
                return 0
        got = self.raw.readinto(into[: min(self.left, len(into))])
        if not got:
            raise TreeError("the body ended early")
        self.left -= got
        if self.left == 0 and self.raw.readline(3) not in (b"\r\n", b"\n"):
            raise TreeError("a broken chunked body: a chunk longer than its size says")
        return got

    def _size(self) -> int:
        line = self.raw.readline(LINE)
        if not line.endswith(b"\n"):
            raise TreeError("a broken chunked body: it ended (or ran on) in a chunk size")
        text = line.split(b";")[0].strip()
        if not _SIZE.fullmatch(text):
            raise TreeError(f"a broken chunked body: a chunk size {text[:20]!r} is not hex")
        size = int(text, 16)  # (at most LINE digits: a moment's work)
        if size > MAX_CHUNK:
            raise TreeError(f"a broken chunked body: a chunk of over {MAX_CHUNK} bytes")
        return size

    def _trailers(self) -> None:
        for _ in range(MAX_TRAILERS + 1):
            line = self.raw.readline(LINE)
            if not line.endswith(b"\n"):
                raise TreeError("a broken chunked body: it ended (or ran on) in its trailers")
            if not line.strip():
                return
        raise TreeError(f"a broken chunked body: more than {MAX_TRAILERS} trailer lines")


__all__ = ["Chunked"]
