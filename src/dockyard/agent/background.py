"""Work an agent does after a call has returned (replication, settling a volume): each in
a thread of its own, which tests and a clean stop can wait for."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    def __init__(self) -> None:
        self.running: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self.running.discard(threading.current_thread())

        thread = threading.Thread(target=run, daemon=True)
        with self._lock:
            self.running.add(thread)
        thread.start()

    def wait(self, timeout: float) -> None:
        """Wait for the work under way (each thread at most ``timeout`` seconds)."""
        with self._lock:
            threads = list(self.running)
        for thread in threads:
            thread.join(timeout)


__all__ = ["Background"]
