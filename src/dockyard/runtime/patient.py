"""Riding out a container engine that goes away and comes back.

An engine restart (an upgrade, a crash, dockerd killed for memory) is routine on a fleet of
hosts and must cost a run time, not results. Two parts:

- :class:`EngineGuard`, shared by every thread of a run, notices that the engine stopped
  answering, waits for it (probing with fresh connections, backing off) for at most the
  *patience*, reports when it went and came back, and remembers each outage so that an
  attempt can ask whether the engine was away while it ran.
- :class:`PatientRuntime` wraps a :class:`~dockyard.runtime.base.Runtime`: a call that
  meets the engine away waits through the guard and is made again, with the effect it would
  have had once — a create whose answer was lost finds its container by name instead of
  making a second one, and a start is not repeated for a container that already ran (a
  restarted engine stopped it: that attempt is lost and rerun with a fresh ``/out``).

How an attempt's exit is read in the light of an outage is the attempt runner's business
(:mod:`dockyard.execution.attempts`); this module only tells it what happened to the engine.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dockyard.errors import EngineUnavailable
from dockyard.events import Event
from dockyard.runtime.base import (
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Node,
    Runtime,
)
from dockyard.units import format_seconds

T = TypeVar("T")

# A stopping engine closes its socket before it stops its containers, so their exits arrive
# while new connections already fail. After an exit by a signal, probe this often, this far
# apart, before taking the exit as the step's own.
SETTLE_PROBES = 4
SETTLE_INTERVAL = 0.5
MAX_BACKOFF = 5.0
# A request that fails as if the engine were away, while the engine answers the next probe
# (within this many seconds), is a flap; after this many in a row it is given up on.
FLAP_SECONDS = 1.0
MAX_FLAPS = 5


@dataclass(frozen=True)
class Outage:
    start: float
    end: float | None  # None while the engine is still away


class EngineGuard:
    def __init__(
        self,
        probe: Callable[[], None],
        patience: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        notify: Callable[[Event], None] = lambda event: None,
    ):
        self.probe = probe  # raises EngineUnavailable unless the engine answers now
        self.patience = patience
        self.clock = clock
        self.sleep = sleep
        self.notify = notify
        self._lock = threading.Lock()
        self._outages: list[Outage] = []
        self._given_up = False

    @property
    def outages(self) -> list[Outage]:
        with self._lock:
            return list(self._outages)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, made again each time the engine was away, until it comes back for good
        or the patience runs out (then :class:`EngineUnavailable`). A request that keeps
        failing as if the engine were away while it answers at once is not waited for
        again and again: after a few such turns its failure is raised."""
        flaps = 0
        while True:
            try:
                return fn()
            except EngineUnavailable as exc:
                if self.wait_back(exc) < FLAP_SECONDS:
                    flaps += 1
                    if flaps > MAX_FLAPS:
                        raise EngineUnavailable(
                            f"{exc.message} (the engine answers, but this request failed "
                            f"{flaps} times in a row)"
                        ) from exc
                else:
                    flaps = 0

    def wait_back(self, cause: EngineUnavailable) -> float:
        """Block until the engine answers again; raise after the patience is spent.
        Returns how long it was away."""
        outage = self._went_away(cause)
        deadline = outage.start + self.patience
        delay = SETTLE_INTERVAL
        while True:
            now = self.clock()
            if self._given_up or now >= deadline:
                raise EngineUnavailable(
                    f"the container engine did not answer for {format_seconds(now - outage.start)}"
                    f" (DOCKYARD_ENGINE_PATIENCE is {format_seconds(self.patience)}): "
                    f"{cause.message}. The run stopped; run it again once the engine is back: "
                    "what finished is reused, and what still runs is adopted"
                ) from cause
            self.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, MAX_BACKOFF)
            try:
                self.probe()
            except EngineUnavailable:
                continue
            self._came_back()
            return self.clock() - outage.start

    def going_away(self) -> bool:
        """Whether the engine is stopping: asked after a container died by a signal, which
        is also how an engine's shutdown ends its containers. When it is, this waits until
        it answers again (so that the outage it saw is closed), or raises after the
        patience."""
        for turn in range(SETTLE_PROBES):
            if turn:
                self.sleep(SETTLE_INTERVAL)
            try:
                self.probe()
            except EngineUnavailable as exc:
                self.wait_back(exc)
                return True
        return False

    def away_between(self, start: float, end: float) -> bool:
        """Whether the engine was away at any time from ``start`` to ``end``."""
        with self._lock:
            return any(o.start <= end and (o.end is None or o.end >= start) for o in self._outages)

    def give_up(self) -> None:
        """From now on, fail at once instead of waiting (the run is ending)."""
        self._given_up = True

    # Each notice is given under the lock that changed the state it reports, so that "away"
    # and "back" always arrive in the order they happened, whichever threads saw them.

    def _went_away(self, cause: EngineUnavailable) -> Outage:
        with self._lock:
            if self._outages and self._outages[-1].end is None:
                return self._outages[-1]
            outage = Outage(self.clock(), None)
            self._outages.append(outage)
            self.notify(
                Event(
                    "engine",
                    outage.start,
                    detail={
                        "state": "away",
                        "message": "the container engine stopped answering; waiting up to "
                        f"{format_seconds(self.patience)} for it",
                        "cause": cause.message,
                    },
                )
            )
        return outage

    def _came_back(self) -> None:
        with self._lock:
            if not self._outages or self._outages[-1].end is not None:
                return  # another thread saw it first
            now = self.clock()
            away = Outage(self._outages[-1].start, now)
            self._outages[-1] = away
            self.notify(
                Event(
                    "engine",
                    now,
                    detail={
                        "state": "back",
                        "away_for": now - away.start,
                        "message": "the container engine answers again after "
                        f"{format_seconds(now - away.start)}",
                    },
                )
            )


class PatientRuntime:
    """A :class:`Runtime` whose calls wait out an engine that is away (see the module)."""

    def __init__(self, runtime: Runtime, guard: EngineGuard):
        self.runtime = runtime
        self.guard = guard

    # -- containers: calls whose repetition needs care -------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        resumed = False
        while True:
            try:
                if resumed:  # the first create may have happened, its answer lost
                    for found in self.runtime.list(spec.labels):
                        if spec.name is None or found.name == spec.name:
                            return found.id
                return self.runtime.create(spec)
            except EngineUnavailable as exc:
                self.guard.wait_back(exc)
                resumed = True

    def start(self, container_id: str) -> None:
        resumed = False
        while True:
            try:
                if resumed:
                    found = self.runtime.inspect(container_id)
                    if found is None or found.started:
                        return  # gone, or it ran: waiting for it says which, never run twice
                self.runtime.start(container_id)
                return
            except EngineUnavailable as exc:
                self.guard.wait_back(exc)
                resumed = True

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        deadline = None if timeout is None else self.guard.clock() + timeout

        calls = 0

        def once() -> ExitStatus:  # the timeout is the attempt's, not each wait's
            nonlocal calls
            calls += 1
            left = None if deadline is None else max(0.001, deadline - self.guard.clock())
            return self.runtime.wait(container_id, left)

        status = self.guard.call(once)
        late = deadline is not None and self.guard.clock() > deadline
        if calls > 1 and late and not status.timed_out:
            # The engine went away while the timed-out container was being stopped, and the
            # wait made again found it ended: it ended because its time was up.
            return dataclasses.replace(status, timed_out=True)
        return status

    # -- the rest: made again as they are ------------------------------------------------------

    def ping(self) -> None:
        self.runtime.ping()  # the question is whether it answers now: never waits

    def close(self) -> None:
        self.runtime.close()

    def nodes(self) -> list[Node]:
        return self.guard.call(self.runtime.nodes)

    def capacity(self) -> HostCapacity:
        return self.guard.call(self.runtime.capacity)

    def shares_host_cgroups(self) -> bool:
        return self.guard.call(self.runtime.shares_host_cgroups)

    def image_id(self, ref: str) -> str | None:
        return self.guard.call(lambda: self.runtime.image_id(ref))

    def pull(self, ref: str) -> str:
        return self.guard.call(lambda: self.runtime.pull(ref))

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        return self.guard.call(lambda: self.runtime.build(context, tag, labels))

    def import_image(
        self,
        tarball: Path,
        tag: str,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        command: Sequence[str],
    ) -> str:
        return self.guard.call(
            lambda: self.runtime.import_image(tarball, tag, labels, env, command)
        )

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        return self.guard.call(lambda: self.runtime.find_image(labels))

    def tag_image(self, image: str, ref: str) -> None:
        self.guard.call(lambda: self.runtime.tag_image(image, ref))

    def remove_image(self, image: str) -> bool:
        return self.guard.call(lambda: self.runtime.remove_image(image))

    def image_labels(self, ref: str) -> Mapping[str, str]:
        return self.guard.call(lambda: self.runtime.image_labels(ref))

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.guard.call(lambda: self.runtime.image_command(ref))

    def kill(self, container_id: str) -> None:
        self.guard.call(lambda: self.runtime.kill(container_id))

    def logs(self, container_id: str) -> bytes:
        return self.guard.call(lambda: self.runtime.logs(container_id))

    def remove(self, container_id: str) -> None:
        self.guard.call(lambda: self.runtime.remove(container_id))

    def health(self, container_id: str) -> str:
        return self.guard.call(lambda: self.runtime.health(container_id))

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        resumed = False
        while True:
            try:
                if resumed and name in self.runtime.networks(labels):
                    return name  # made before the answer was lost
                return self.runtime.create_network(name, labels)
            except EngineUnavailable as exc:
                self.guard.wait_back(exc)
                resumed = True

    def remove_network(self, name: str) -> None:
        self.guard.call(lambda: self.runtime.remove_network(name))

    def networks(self, labels: Mapping[str, str]) -> list[str]:
        return self.guard.call(lambda: self.runtime.networks(labels))

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return self.guard.call(lambda: self.runtime.list(labels))

    def inspect(self, container_id: str) -> ContainerInfo | None:
        return self.guard.call(lambda: self.runtime.inspect(container_id))
