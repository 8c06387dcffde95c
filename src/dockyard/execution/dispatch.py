"""Attempts on worker threads, and what they report back to the loop.

Each attempt runs on a thread of its own (creating, starting, waiting for and reading a
container are blocking engine calls); its result comes back through one queue, which only
the loop's thread reads. The handshake that makes crashes safe: a worker removes its
container only once the loop has acknowledged its result, and the loop acknowledges only
after it has committed the output and flushed the journal. So at any moment there is
either a committed result or a container that the next run adopts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from dockyard.errors import DockyardError
from dockyard.execution import cgroups
from dockyard.execution.attempts import AttemptRunner, Notice, Order, Result
from dockyard.execution.feed import Wake
from dockyard.planning.graph import InstanceId
from dockyard.runtime.base import Runtime


class Dispatch:
    def __init__(
        self, runner: AttemptRunner, results: queue.Queue[Result | Notice | Wake], workers: int
    ):
        self.runner = runner
        self.results = results
        # One thread per running container (threads start only when needed): never fewer
        # than may run at once, or a streamed chain could wait on a queued partner.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dockyard-attempt")
        self.busy: set[Future[None]] = set()
        self.held: dict[tuple[InstanceId, int], Result] = {}  # taken, not yet acknowledged

    @property
    def runtime(self) -> Runtime:
        return self.runner.runtime

    def submit(self, order: Order) -> None:
        future = self.pool.submit(self.runner.run, order)
        self.busy.add(future)
        future.add_done_callback(self.busy.discard)

    def fail(self, instance: InstanceId, attempt: int, error: DockyardError, at: float) -> None:
        """An attempt that ends before it has a container (its service failed, its node's
        store did not answer)."""
        self.results.put(
            Result(
                instance,
                attempt,
                None,
                None,
                error,
                at,
                None,
                threading.Event(),
                cgroups.Usage(),
            )
        )

    def take(self, timeout: float | None) -> list[Result | Notice | Wake]:
        """What has come back: waits up to ``timeout`` for the first, then takes the rest."""
        try:
            items = [self.results.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self.results.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if isinstance(item, Result):
                self.held[(item.instance, item.attempt)] = item
        return items

    def kill(self, instance: InstanceId, attempt: int) -> None:
        """Kill this attempt's container (dockyard's signal, not the engine's), now or as
        soon as its worker has created it."""
        self.runner.kill(instance, attempt)

    def acknowledge(self, done: Iterable[tuple[InstanceId, int]]) -> None:
        """Let the workers of these attempts remove their containers."""
        for key in done:
            held = self.held.pop(key, None)
            if held is not None:
                held.ack.set()

    def close(self, *, abandon: bool = False) -> None:
        """Let every worker finish (results nobody will apply are acknowledged) and stop.
        With ``abandon``, containers stay as they are, as if the process had died."""
        if abandon:
            self.runner.abandoned = True
        self.acknowledge(list(self.held))
        while self.busy:
            try:
                item = self.results.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Result):
                item.ack.set()
        self.pool.shutdown(wait=True)
