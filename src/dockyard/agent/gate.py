"""The agent's front door: one thread accepts connections and reads their request heads,
with no thread per connection, under budgets that whoever reaches the port cannot exhaust.

- At most :data:`HEADS_PER_PEER` connections from one address may be in their head: one
  more closes that address's oldest there and then (a reset, no thread, no waiting), so a
  flood from an address costs its own idle connections, not a signed client's fresh one
  (read the moment it is accepted: a signed client's head is there by then, as a rule).
- At most :data:`HEADS` connections are in their head in all; a new one pushes out the
  oldest (a signed client sends its head at once, so only idle or slow ones are old).
- The whole head must come within :data:`HEAD_SECONDS` of the accept, however slowly its
  bytes come, and within :data:`~dockyard.agent.head.MAX_HEAD` bytes.
- A whole head goes to ``on_head`` (the server: it checks the signature and hands a signed
  request to a thread of its own); a refusal is answered from here, and the connection is
  read a little more (so that the answer is not lost to a reset), then closed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from dockyard.agent.head import MAX_HEAD, Head, HeadError, answer, parse, split
from dockyard.agent.quietlog import QuietLog

HEAD_SECONDS = 10.0  # from the accept, for the whole head: a client sends it in one write
HEADS = 512  # connections in their head, in all (no thread each; at most MAX_HEAD bytes each)
HEADS_PER_PEER = 32  # from one address; dockyard's bursts from one machine stay under it
SERVED = 128  # signed requests served at once, a thread each
QUEUED = 128  # signed requests waiting for one of those slots (each a thread, asleep)
SLOT_WAIT = 30.0  # how long a signed request waits for a slot before a 503
LINGER_SECONDS = 2.0  # a refused connection is read this long at most before it is closed
LINGER_BYTES = 64 << 10  # and this much (more when the refused request said its body is)
LINGERING = 128  # refused connections being read out at once (the oldest closed first)
# Connections accepted in one pass, each read at once (a signed client's head is there),
# then heads are read again: under half of HEADS_PER_PEER, so that what one pass and the
# one before it accepted from an address never fills its cap before it is read.
ACCEPTS_AT_ONCE = 12
ACCEPT_PAUSE = 0.1  # seconds without accepting after the process ran out of descriptors


@dataclass(frozen=True)
class Limits:
    """The gate's and the server's budgets (the constants above; tests make them small)."""

    head_seconds: float = HEAD_SECONDS
    heads: int = HEADS
    heads_per_peer: int = HEADS_PER_PEER
    served: int = SERVED
    queued: int = QUEUED
    slot_wait: float = SLOT_WAIT
    linger_seconds: float = LINGER_SECONDS
    linger_bytes: int = LINGER_BYTES
    lingering: int = LINGERING


@dataclass(frozen=True)
class Refusal:
    """What ``on_head`` answers instead of serving: a whole answer, and why (the log)."""

    status: int
    message: str
    answer: bytes
    drain: int = 0  # the bytes of body the request said it has (read out before closing)


def refusal(
    status: int, message: str, headers: dict[str, str] | None = None, drain: int = 0
) -> Refusal:
    """A refusal answered with ``{"error": message}`` (``headers``: a signature, say)."""
    return Refusal(status, message, answer(status, _error(message), headers), drain)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: str
    address: tuple[str, int]
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    left: int = 0  # (lingering: what is still read before the close)


class Gate:
    def __init__(
        self,
        listener: socket.socket,
        limits: Limits,
        on_head: Callable[[socket.socket, tuple[str, int], Head], Refusal | None],
        log: QuietLog,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.listener = listener
        self.limits = limits
        self.on_head = on_head
        self.log = log
        self.clock = clock
        self.heads: dict[socket.socket, _Conn] = {}  # oldest first: deadlines in order too
        self.closing: dict[socket.socket, _Conn] = {}
        self.per_peer: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()  # accepted, refused, evicted, late, ...
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._paused_until: float | None = None
        self._scratch = bytearray(LINGER_BYTES)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, poll: float) -> None:
        """Accept and read heads until :meth:`stop`."""
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                accept = False
                for key, _ in self.selector.select(self._timeout(poll)):
                    if key.fileobj is self.listener:
                        accept = True  # (last: what is readable is read before new ones come)
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        self._readable(key.data)
                if accept:
                    self._accept()
                self._expire()
                self.log.flush()
        finally:
            self._stopping = False
            self._paused_until = None
            for sock in (self.listener, self._wake_r):
                if sock.fileno() >= 0 and sock in self.selector.get_map():
                    self.selector.unregister(sock)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # (full: it wakes anyway)
            self._wake_w.send(b"x")

    def close(self) -> None:
        for conn in [*self.heads.values(), *self.closing.values()]:
            self._close(conn, reset=True)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _timeout(self, poll: float) -> float:
        now = self.clock()
        soonest = [now + poll]
        for table in (self.heads, self.closing):
            if table:
                soonest.append(next(iter(table.values())).deadline)
        if self._paused_until is not None:
            soonest.append(self._paused_until)
        return max(0.0, min(soonest) - now)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    # -- accepting ------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPTS_AT_ONCE):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause(exc)
                    return
                continue  # (ECONNABORTED and the like: that one is gone)
            conn = self._admit(sock, address)
            self._readable(conn)  # (a head already whole is served now; a closed one goes)

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors: stop accepting a moment (else the listener is readable and
        the loop spins), and make room by dropping the oldest head."""
        self.log.line(f"not accepting for {ACCEPT_PAUSE} s: {exc.strerror}")
        self.selector.unregister(self.listener)
        self._paused_until = self.clock() + ACCEPT_PAUSE
        if self.heads:
            self._close(next(iter(self.heads.values())), reset=True)
            self.stats["evicted"] += 1

    def _admit(self, sock: socket.socket, address: tuple[str, int]) -> _Conn:
        self.stats["accepted"] += 1
        peer = address[0]
        if self.per_peer[peer] >= self.limits.heads_per_peer:
            # That address's oldest head goes (the one waited on longest: heads are kept in
            # the order they came), not the new one: a peer that shares its address with an
            # attacker (a node whose step floods) still gets through, its head read at once.
            oldest = next(c for c in self.heads.values() if c.peer == peer)
            self.stats["refused"] += 1
            self.log.line(f"{peer} dropped: {self.limits.heads_per_peer} connections in their head")
            self._close(oldest, reset=True)
        if len(self.heads) >= self.limits.heads:
            oldest = next(iter(self.heads.values()))
            self.stats["evicted"] += 1
            self.log.line(f"{oldest.peer} dropped: the oldest of {len(self.heads)} heads")
            self._close(oldest, reset=True)
        sock.setblocking(False)
        conn = _Conn(sock, peer, address, self.clock() + self.limits.head_seconds)
        self.heads[sock] = conn
        self.per_peer[peer] += 1
        self.selector.register(sock, selectors.EVENT_READ, conn)
        return conn

    # -- reading --------------------------------------------------------------------------------

    def _readable(self, conn: _Conn) -> None:
        try:
            if conn.sock in self.closing:
                self._read_out(conn)
            else:
                self._read_head(conn)
        except Exception as exc:  # (a bug must not stop the door for everyone)
            self.log.line(f"{conn.peer}: {type(exc).__name__}: {exc}")
            self._close(conn, reset=True)

    def _read_head(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_HEAD + 1 - len(conn.data))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # (the client gave up)
            self._close(conn, reset=True)
            return
        conn.data += data
        try:
            whole = split(bytes(conn.data))
            if whole is None:
                return
            head = parse(*whole)
        except HeadError as exc:
            line = bytes(conn.data[:256]).split(b"\n")[0].decode("latin-1")  # (for the log)
            self._refuse(conn, refusal(exc.status, exc.message), line)
            return
        self._forget(conn)
        refused = self.on_head(conn.sock, conn.address, head)  # (the socket is its now...)
        if refused is not None:  # (...unless it gives it back with a refusal)
            self._refuse(conn, refused, head.line)

    def _read_out(self, conn: _Conn) -> None:
        try:
            got = conn.sock.recv_into(self._scratch, min(conn.left, len(self._scratch)))
        except BlockingIOError:
            return
        except OSError:
            got = 0
        conn.left -= got
        if not got or conn.left <= 0:
            self._close(conn, reset=conn.left <= 0)

    def _refuse(self, conn: _Conn, refusal: Refusal, line: str) -> None:
        """Answer, then read what the client still sends for a while before the close."""
        self.stats[f"answered {refusal.status}"] += 1
        self.log.line(f"{conn.peer} refused {refusal.status}, {refusal.message}: {line}")
        if conn.sock in self.heads:
            self._forget(conn)
        conn.sock.setblocking(False)
        try:
            conn.sock.send(refusal.answer)  # (fits: nothing was sent on it before)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.sock.close()
            return
        if len(self.closing) >= self.limits.lingering:
            self._close(next(iter(self.closing.values())), reset=True)
        conn.left = self.limits.linger_bytes + max(0, refusal.drain)
        conn.deadline = self.clock() + self.limits.linger_seconds
        self.closing[conn.sock] = conn
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    # -- ending ---------------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        while self.heads:
            oldest = next(iter(self.heads.values()))
            if oldest.deadline > now:
                break
            self.stats["late"] += 1
            self.log.line(f"{oldest.peer} dropped: no whole head in {self.limits.head_seconds} s")
            self._close(oldest, reset=True)
        while self.closing:
            oldest = next(iter(self.closing.values()))
            if oldest.deadline > now:
                break
            self._close(oldest, reset=True)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _forget(self, conn: _Conn) -> None:
        """No longer the gate's to read (nor counted against its peer)."""
        if self.heads.pop(conn.sock, None) is not None:
            self.per_peer[conn.peer] -= 1
            if not self.per_peer[conn.peer]:
                del self.per_peer[conn.peer]
        self.closing.pop(conn.sock, None)
        if conn.sock.fileno() >= 0 and conn.sock in self.selector.get_map():
            self.selector.unregister(conn.sock)

    def _close(self, conn: _Conn, reset: bool) -> None:
        self._forget(conn)
        if reset:
            _reset(conn.sock)
        else:
            conn.sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset: nothing of the connection is kept (no FIN_WAIT, no TIME_WAIT)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


__all__ = ["Gate", "Limits", "Refusal", "refusal"]
