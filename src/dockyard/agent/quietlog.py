"""The agent's log of refusals and trouble: lines escaped (a peer's bytes never reach a
terminal as they came), cut short, and rate-limited, so that a flood of refused requests
adds kilobytes to the log, not megabytes; what was left out is counted in one line.

Lines are written by a thread of the log's own, from a bounded queue: whoever logs (the
gate, above all) never waits on the log's pipe, which a stalled reader can fill; lines
that find the queue full are dropped, and counted in a line once it drains."""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

LINE_CHARS = 200  # of a line's text (a request line quoted in it can be 8 KiB)
BURST = 20  # lines written at once before the rate applies
PER_SECOND = 0.5  # lines a second after that: a flood costs ~100 bytes a second
QUEUED = 256  # lines waiting for the writer (~60 KiB at most)
IDLE = 5.0  # seconds a background writer waits for more before its thread ends
WRITER = "agent-log"
WRITERS = (WRITER, "agent-nonces")  # the names of the agent's writer threads (one each)

T = TypeVar("T")


def escape(text: str, limit: int = LINE_CHARS) -> str:
    """``text`` as printable ASCII (control and other bytes as escapes), cut at ``limit``."""
    out: list[str] = []
    used = 0
    for ch in text:
        piece = ch if " " <= ch <= "~" and ch != "\\" else ch.encode("unicode_escape").decode()
        if used + len(piece) > limit:
            out.append(f"... ({len(text)} characters)")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def to_stderr(text: str) -> None:
    """A line on standard error, escaped as the log's (where no :class:`QuietLog` is)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"agent: {escape(text, 4 * LINE_CHARS)}\n")


class Background(Generic[T]):
    """A bounded queue handed to ``write`` (in batches of up to ``batch``) by a thread of
    its own, started when something is queued and ended after :data:`IDLE` seconds with
    nothing: whoever queues never waits on what ``write`` waits on."""

    def __init__(self, write: Callable[[list[T]], object], size: int, name: str, batch: int = 1):
        self.write = write
        self.name = name
        self.batch = batch
        self._queue: queue.Queue[T] = queue.Queue(size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, item: T) -> bool:
        """Queue ``item``; False when the queue is full (it is dropped)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                with contextlib.suppress(RuntimeError):  # (no thread to be had: next time)
                    thread.start()
                    self._thread = thread
        return True

    def done(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what was queued to be written (tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _run(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=IDLE)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # (else what came meanwhile is written first)
                        self._thread = None
                        return
                continue
            with contextlib.suppress(queue.Empty):
                while len(items) < self.batch:
                    items.append(self._queue.get_nowait())
            try:
                self.write(list(items))
            except Exception as exc:  # (the writer must not end over one batch)
                to_stderr(f"{self.name}: {type(exc).__name__}: {exc}")
            finally:
                for _ in items:
                    self._queue.task_done()


class QuietLog:
    """A token bucket of lines: ``burst`` at once, then ``per_second``; written by a
    thread of its own (:class:`Background`) from a queue of ``queued`` lines."""

    def __init__(
        self,
        write: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        burst: int = BURST,
        per_second: float = PER_SECOND,
        queued: int = QUEUED,
    ):
        self._write = write or (lambda text: sys.stderr.write(text))
        self.clock = clock
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.last = clock()
        self.dropped = 0  # (by the rate)
        self.lost = 0  # (by a full queue: the log's reader did not keep up)
        self._lock = threading.Lock()  # (never held while writing)
        self._lines: Background[str] = Background(self._put, queued, WRITER)

    def line(self, text: str) -> None:
        with self._lock:
            self._refill()
            if self.tokens < 1 + bool(self.dropped):
                self.dropped += 1
                return
            self._summary()
            self._emit(escape(text))

    def flush(self) -> None:
        """Write how many lines were left out, once the rate allows (after a flood)."""
        with self._lock:
            self._refill()
            if self.dropped and self.tokens >= 1:
                self._summary()

    def written(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the lines queued to be written (tests)."""
        return self._lines.done(timeout)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now

    def _summary(self) -> None:
        if self.dropped:
            self._emit(f"{self.dropped} more lines not logged (too many at once)")
            self.dropped = 0

    def _emit(self, text: str) -> None:
        self.tokens -= 1
        if not self._lines.put(f"agent: {text}\n"):
            self.lost += 1

    def _put(self, lines: list[str]) -> None:
        with self._lock:
            lost, self.lost = self.lost, 0
        if lost:
            lines = [*lines, f"agent: {lost} lines lost (the log was not read for a while)\n"]
        for text in lines:
            with contextlib.suppress(OSError, ValueError):  # (no log to write to: it goes on)
                self._write(text)


__all__ = ["WRITERS", "Background", "QuietLog", "escape", "to_stderr"]
