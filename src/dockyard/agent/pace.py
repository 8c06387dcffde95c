"""Deadlines for what moves between an agent and its peer, in proportion to what moved.

A socket timeout alone bounds only the silence between two bytes: a peer that sends a
byte a minute holds a transfer (and its thread, its files) for ever. Here the time spent
waiting on the peer (blocked in a send or a receive) may be at most ``floor`` seconds plus
one second for every ``rate`` bytes moved: a peer slower than ``rate`` is cut off once
its floor is spent, however it spaces its bytes. Time spent here between reads (writing
files, hashing) is not the peer's and is not counted. A tree's entries count as bytes too
(:data:`ENTRY_BYTES` each, credited up front from the bounds its seal counted): a tree of
many small files costs its walk and its build per entry, whatever its size in bytes.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.errors import AgentFailure

FLOOR = 60.0  # seconds of waiting any transfer may take (a cold disk on the other side)
RATE = float(1 << 20)  # bytes a second (1 MiB/s) a peer must keep up beyond that floor
# An entry of a tree as bytes moved: ~0.5 ms at RATE, where a sender walks ~35 µs an entry
# and a receiver builds and seals ~170 µs (a peer is not cut off for a tree's many files).
ENTRY_BYTES = 512.0


@dataclass(frozen=True)
class Rate:
    """``floor`` seconds of waiting, then ``bytes_per_second`` at least, a tree's entry
    counted as ``entry_bytes`` (tests: small)."""

    floor: float = FLOOR
    bytes_per_second: float = RATE
    entry_bytes: float = ENTRY_BYTES


class TooSlow(AgentFailure, TimeoutError):
    """The peer moved less than its rate allows for the time it was waited on."""


class Pace:
    """The account of one transfer: bytes moved, seconds waited on the peer."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self.running = False  # (not while an answer is awaited: the peer is working)
        self.moved = 0
        self.waited = 0.0
        self.credit = 0.0  # (bytes: a tree's entries, counted as moved)

    def start(self) -> None:
        self.running = True

    def entries(self, count: int) -> None:
        """A tree of ``count`` entries is to move: each counts as ``entry_bytes``."""
        self.credit += max(0, count) * self.rate.entry_bytes

    def await_answer(self) -> None:
        """Until the answer's first byte, wait as long as the peer works (a call, or the
        answer to a tree sent: the tree is built and sealed before it)."""
        self.running, self.moved, self.waited, self.credit = False, 0, 0.0, 0.0

    def left(self, coming: int = 0) -> float | None:
        """Seconds that may still be waited (for ``coming`` more bytes); None: no limit."""
        if not self.running:
            return None
        counted = self.moved + self.credit + coming
        allowed = self.rate.floor + counted / self.rate.bytes_per_second
        if self.waited >= allowed:
            raise TooSlow(
                f"the peer moved {self.moved} bytes in {self.waited:.1f} s of waiting "
                f"(slower than {self.rate.bytes_per_second:.0f} bytes a second)"
            )
        return allowed - self.waited


class PacedSocket:
    """A connected socket whose sends and receives keep to a :class:`Pace` (and to the
    ``idle`` timeout between bytes, if any); what ``http.client`` needs of a socket."""

    def __init__(self, sock: socket.socket, pace: Pace, idle: float | None):
        self.sock = sock
        self.pace = pace
        self.idle = idle
        self._readers = 0  # (like a socket's makefile: closed once its readers are too)
        self._closed = False

    def _timeout(self, coming: int) -> float | None:
        left = self.pace.left(coming)
        if left is None or self.idle is None:
            return self.idle if left is None else left
        return min(left, self.idle)

    def sendall(self, data: Any) -> None:
        size = memoryview(data).nbytes
        self._timed(size, lambda: self.sock.sendall(data))
        self.pace.moved += size

    def recv_into(self, buffer: Any) -> int:
        got: int = self._timed(0, lambda: self.sock.recv_into(buffer))
        if got and not self.pace.running:
            self.pace.start()  # (the answer began: from here on it keeps the pace)
        self.pace.moved += got
        return got

    def _timed(self, coming: int, act: Callable[[], Any]) -> Any:
        """``act`` under what is left of the pace, its wait counted."""
        self.sock.settimeout(self._timeout(coming))
        counted, start = self.pace.running, self.pace.clock()
        try:
            return act()
        except TimeoutError:
            if counted:
                self.pace.waited += self.pace.clock() - start
                counted = False
                self.pace.left(coming)  # (TooSlow, when the pace is what ran out)
            raise
        finally:
            if counted:
                self.pace.waited += self.pace.clock() - start

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"a paced socket is read as 'rb', not {mode!r}")
        self._readers += 1
        return io.BufferedReader(_Reader(self))

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def close(self) -> None:
        """As ``socket.close``: the descriptor stays while an answer is read from it
        (``http.client`` closes a connection whose answer ends with it, then reads)."""
        self._closed = True
        if not self._readers:
            self.sock.close()

    def _reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and not self._readers:
            self.sock.close()


class _Reader(io.RawIOBase):
    def __init__(self, sock: PacedSocket):
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self.sock._reader_closed()
        super().close()


__all__ = ["ENTRY_BYTES", "FLOOR", "RATE", "Pace", "PacedSocket", "Rate", "TooSlow"]
