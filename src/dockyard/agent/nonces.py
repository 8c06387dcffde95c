"""The nonces an agent has seen, kept on its node's disk so that a restarted agent still
refuses a replay (:class:`~dockyard.agent.auth.Verifier` keeps them in memory too).

Best effort, and off the gate's thread: the gate hands a nonce to a bounded queue and goes
on; a thread of the journal's own appends them. A disk that is full, read-only or slow
costs only what a restart would forget (logged once), never an answer: signed requests,
those that free space among them, are served on the replay protection held in memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from dockyard.agent.quietlog import WRITERS, Background, to_stderr

QUEUED = 4096  # nonces waiting for the writer (a full queue drops them from the journal)
BATCH = 1024  # nonces appended in one write


class Journal:
    """The file ``path``: a line ``NONCE TIME`` for each nonce seen in the last
    ``horizon`` seconds (and some older, until it is rewritten)."""

    def __init__(
        self,
        path: Path,
        horizon: float,
        clock: Callable[[], float],
        log: Callable[[str], None] = to_stderr,
    ):
        self.path = path
        self.horizon = horizon
        self.clock = clock
        self.log = log
        self.kept: deque[tuple[str, float]] = deque()  # what the file should hold, oldest first
        self._writer: Background[tuple[str, float]] = Background(
            self._write, QUEUED, WRITERS[1], BATCH
        )
        self._lock = threading.Lock()  # (for the count of dropped ones, kept by two threads)
        self._dropped = 0
        self._written = 0  # lines in the file
        self._failing = False
        self._rewrite = True  # (at the start: what is out of time goes)

    def load(self) -> list[tuple[str, float]]:
        """The nonces in the file still in time, oldest first (none if it is unreadable)."""
        horizon = self.clock() - self.horizon
        try:
            lines = self.path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.log(f"nonce journal {self.path}: unreadable ({exc.strerror}): starting empty")
            return []
        seen: dict[str, float] = {}
        for line in lines:
            nonce, _, at = line.partition(" ")
            with contextlib.suppress(ValueError):
                if float(at) >= horizon:
                    seen[nonce] = float(at)
        self.kept.extend(sorted(seen.items(), key=lambda item: item[1]))
        return list(self.kept)

    def add(self, nonce: str, at: float) -> None:
        """Journal ``nonce`` soon (never waits: a full queue drops it, counted)."""
        if not self._writer.put((nonce, at)):
            with self._lock:
                self._dropped += 1

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what was added to be written (or to fail)."""
        return self._writer.done(timeout)

    def _write(self, batch: list[tuple[str, float]]) -> None:
        self.kept.extend(batch)
        horizon = self.clock() - self.horizon
        while self.kept and self.kept[0][1] < horizon:
            self.kept.popleft()
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self.log(f"nonce journal {self.path}: {dropped} nonces not kept (the disk is slow)")
        try:
            if self._rewrite or self._written > 4 * max(len(self.kept), 256):
                self._write_all()  # (the forgotten ones go)
            else:
                with self.path.open("a", encoding="ascii") as fh:
                    fh.write("".join(f"{n} {at:.3f}\n" for n, at in batch))
                self._written += len(batch)
        except OSError as exc:
            if not self._failing:
                self.log(
                    f"nonce journal {self.path}: cannot write ({exc.strerror or exc}): "
                    "replays are refused from memory (a restart forgets them)"
                )
            self._failing = self._rewrite = True  # (the next write puts back what failed)
            return
        if self._failing:
            self.log(f"nonce journal {self.path}: written again")
            self._failing = False

    def _write_all(self) -> None:
        scratch = self.path.with_name(f"{self.path.name}.new")
        scratch.write_text("".join(f"{n} {at:.3f}\n" for n, at in self.kept), encoding="ascii")
        scratch.replace(self.path)
        self._written = len(self.kept)
        self._rewrite = False


__all__ = ["Journal"]
