"""A chunked HTTP request body, read as a file (what ``tarfile``'s stream mode needs)."""

from __future__ import annotations

from typing import Protocol

from dockyard.agent.trees import Readable, TreeError


class LineReadable(Readable, Protocol):
    def readline(self, size: int = ..., /) -> bytes: ...


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
                line = self.raw.readline(1024).split(b";")[0].strip()
                try:
                    self.left = int(line, 16)
                except ValueError:
                    raise TreeError("a broken chunked body") from None
                if self.left == 0:
                    self.done = True
                    while self.raw.readline(1024).strip():  # trailers
                        pass
                    break
            piece = self.raw.read(min(self.left, wanted))
            if not piece:
                raise TreeError("the body ended early")
            parts.append(piece)
            self.left -= len(piece)
            wanted -= len(piece)
            if self.left == 0:
                self.raw.readline(8)  # the CRLF after a chunk
        return b"".join(parts)


__all__ = ["Chunked"]
