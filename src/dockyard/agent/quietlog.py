"""The agent's log of refusals and trouble: lines escaped (a peer's bytes never reach a
terminal as they came), cut short, and rate-limited, so that a flood of refused requests
adds kilobytes to the log, not megabytes; what was left out is counted in one line."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable

LINE_CHARS = 200  # of a line's text (a request line quoted in it can be 8 KiB)
BURST = 20  # lines written at once before the rate applies
PER_SECOND = 0.5  # lines a second after that: a flood costs ~100 bytes a second


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


class QuietLog:
    """A token bucket of lines: ``burst`` at once, then ``per_second``."""

    def __init__(
        self,
        write: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        burst: int = BURST,
        per_second: float = PER_SECOND,
    ):
        self._write = write or (lambda text: sys.stderr.write(text))
        self.clock = clock
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.last = clock()
        self.dropped = 0
        self._lock = threading.Lock()

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
        with contextlib.suppress(OSError, ValueError):  # (no log to write to: it goes on)
            self._write(f"agent: {text}\n")


__all__ = ["QuietLog", "escape"]
