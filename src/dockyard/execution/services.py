"""Services: long-running containers (databases, lookup servers) beside a run's steps.

A service is started, without waiting for it, as soon as the run knows that a step which
uses it will run (once the cache was consulted), so that a database initialises while the
steps before it work. It runs on a network made for the run, where steps reach it by its
name. A step starts only once its services are healthy (their health check passes) or,
without a check, running; a service that cannot start, fails its check or dies fails the
steps that need it, with a message that says so. When the run ends its services are
removed, except those with ``keep: true``, which are left running (with the run's network)
until the next run of the pipeline replaces them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dockyard.errors import DockyardError, RuntimeFailure
from dockyard.images.resolve import image_key
from dockyard.lifecycles import SERVICE, ServiceEvent, ServiceState, advance
from dockyard.planning.schedule import Capacity
from dockyard.runtime.base import (
    LABEL_CPUS,
    LABEL_MEMORY,
    LOCAL_NODE,
    Bind,
    ContainerSpec,
    Health,
    Runtime,
)
from dockyard.spec.model import Service

LABEL_SERVICE = "dockyard.service"
LABEL_KEEP = "dockyard.keep"
MAX_RESTARTS = 5  # engine restarts one service is started again after, in one run
STARTED_SECONDS = 5.0  # for a service without a health check to be running
STARTED_SECONDS_CLUSTER = 30.0


@dataclass
class _Running:
    container_id: str
    need: Capacity
    since: float  # when it was (last) started
    state: ServiceState = ServiceState.STARTING
    failure: str | None = None  # why it failed, once it has
    restarts: int = 0  # how often an engine restart made it start again
    node: str | None = None  # where it runs (on a cluster)

    def on(self, event: ServiceEvent, failure: str | None = None) -> None:
        """Move on as the lifecycle table says."""
        self.state = advance(SERVICE, self.state, event)
        if failure is not None:
            self.failure = failure


def argv(command: str | tuple[str, ...]) -> tuple[str, ...]:
    return ("sh", "-c", command) if isinstance(command, str) else command


class Services:
    def __init__(
        self,
        runtime: Runtime,
        specs: Mapping[str, Service],
        images: Mapping[str, str],
        mount: Callable[[str, str, bool, str], Bind],
        labels: Mapping[str, str],
        prefix: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        engine_away_since: Callable[[float], bool] = lambda since: False,
        node: str | None = None,
        move: Callable[[str], str | None] | None = None,
        note: Callable[[str], None] = lambda message: None,
    ):
        self.runtime = runtime
        self.specs = specs
        self.images = images
        self.mount = mount  # (volume, mount path, read-only, node): how a service mounts it
        self.labels = dict(labels)
        self.node = node  # where they run (their room is reserved there); None: anywhere
        # On a cluster: the node to take them when theirs is lost (None: no node has room).
        self.move = move
        self.note = note  # what happened to a service, for the run's events
        self.prefix = prefix  # names: PREFIX-net, PREFIX-SERVICE
        self.sleep = sleep
        self.clock = clock
        # Whether the engine was away (and may have restarted) since a given time: a
        # restart without live-restore stops every container, services included.
        self.engine_away_since = engine_away_since
        self.network: str | None = None
        self.running: dict[str, _Running] = {}

    def start(self, names: tuple[str, ...]) -> None:
        """Start ``names`` unless they run, without waiting for them to be ready."""
        for name in names:
            if name not in self.running:
                self._start(name)

    def ensure(self, names: tuple[str, ...]) -> str | None:
        """Start ``names`` unless they run; wait until healthy. A failure, as a message."""
        self.start(names)
        for name in names:
            service = self.running[name]
            if service.state is ServiceState.STARTING:
                self._wait_ready(name, service)
            if service.state is ServiceState.READY:
                health = self.runtime.health(service.container_id)
                if health == "lost":
                    self._move(name, service)
                elif health == "exited" and self.engine_away_since(service.since):
                    self._restart(name, service)
                elif health == "exited":
                    service.on(ServiceEvent.EXITED, f"service {name!r} has stopped")
                elif health == "unhealthy":
                    service.on(ServiceEvent.UNHEALTHY, f"service {name!r} is unhealthy")
            service = self.running[name]  # (a new one, when it moved)
            if service.state is ServiceState.FAILED:
                return service.failure
        return None

    def _start(self, name: str) -> None:
        spec = self.specs[name]
        if self.network is None:
            self.network = f"{self.prefix}-net"
            self.runtime.create_network(self.network, self.labels)
        check = spec.healthcheck
        container = ContainerSpec(
            image=self.images[image_key(spec.image)],
            command=argv(spec.command) if spec.command is not None else None,
            cpus=spec.resources.cpus,
            memory=spec.resources.memory,
            env=dict(spec.env),
            binds=tuple(
                self.mount(v, m.path, m.readonly, self.node or LOCAL_NODE)
                for v, m in sorted(spec.volumes.items())
            ),
            labels={
                **self.labels,
                LABEL_SERVICE: name,
                LABEL_CPUS: f"{spec.resources.cpus:g}",
                LABEL_MEMORY: str(spec.resources.memory),
                **({LABEL_KEEP: "true"} if spec.keep else {}),
            },
            name=f"{self.prefix}-{name}",
            network=self.network,
            aliases=(name,),
            health=Health(argv(check.command), check.interval, check.timeout, check.retries)
            if check is not None
            else None,
            pids=spec.resources.pids,
            cap_add=tuple(spec.cap_add),
            node=self.node,
        )
        need = Capacity.of(spec.resources.cpus, spec.resources.memory)
        try:  # (an engine that is away is not the service's fault: that propagates)
            container_id = self.runtime.create(container)
        except RuntimeFailure as exc:
            failure = f"service {name!r}: {exc.message}"
            self.running[name] = _Running("", need, self.clock(), ServiceState.FAILED, failure)
            return
        self.running[name] = _Running(container_id, need, since=self.clock(), node=self.node)
        try:
            self.runtime.start(container_id)
        except RuntimeFailure as exc:
            failure = f"service {name!r} did not start: {exc.message}"
            self.running[name].on(ServiceEvent.EXITED, failure)

    def _move(self, name: str, service: _Running) -> None:
        """Its node is lost: start it anew on another node (its volumes are what they were
        at the loss, as after a power cut) and wait until it is ready."""
        service.on(ServiceEvent.NODE_LOST)
        with contextlib.suppress(DockyardError):
            self.runtime.remove(service.container_id)
        lost = service.node
        # (the first node up with room: the services of one node go to the same one)
        to = self.move(lost) if lost is not None and self.move is not None else None
        if to is None:
            service.on(
                ServiceEvent.EXITED,
                f"service {name!r}: its node went down and no other node has room for it",
            )
            return
        self.node = to
        self.note(f"service {name}: its node went down; starting it on node {to[:12]}")
        restarts = service.restarts + 1
        self._start(name)
        moved = self.running[name]
        moved.restarts = restarts
        if moved.state is ServiceState.STARTING:
            self._wait_ready(name, moved)

    def _restart(self, name: str, service: _Running) -> None:
        """Start again a service that an engine restart stopped, and wait until it is ready."""
        if self._start_again(name, service):
            self._wait_ready(name, service)

    def _start_again(self, name: str, service: _Running) -> bool:
        """An engine restart stopped the service: start its container again (its state is
        in its volumes, as after a power cut). False when it would not start."""
        service.on(ServiceEvent.ENGINE_STOPPED)
        service.since = self.clock()
        service.restarts += 1
        try:
            self.runtime.start(service.container_id)
        except RuntimeFailure as exc:
            service.on(ServiceEvent.EXITED, f"service {name!r} did not start again: {exc.message}")
            return False
        return True

    def _wait_ready(self, name: str, service: _Running) -> None:
        """Until healthy (or running, without a check), failed, or out of time."""
        check = self.specs[name].healthcheck
        # Without a check: running within a few seconds (on a cluster a task is scheduled,
        # and its node may be busy: longer).
        started = STARTED_SECONDS if self.node is None else STARTED_SECONDS_CLUSTER
        budget = started if check is None else check.interval * (check.retries + 1) + check.timeout
        deadline = time.monotonic() + budget
        while True:
            health = self.runtime.health(service.container_id)
            if health == "lost" and service.restarts < MAX_RESTARTS:
                self._move(name, service)  # (its node went down while it started)
                return
            if health in ("healthy", "running") and (check is None or health == "healthy"):
                service.on(ServiceEvent.HEALTHY)
                return
            if (
                health == "exited"
                and self.engine_away_since(service.since)
                and service.restarts < MAX_RESTARTS
            ):
                # Stopped by an engine restart while it started (or while it was started
                # again): once more.
                if not self._start_again(name, service):
                    return
                deadline = time.monotonic() + budget
                continue
            if health == "exited":
                service.on(ServiceEvent.EXITED, f"service {name!r} exited before it was ready")
                return
            if health == "unhealthy":
                service.on(ServiceEvent.UNHEALTHY, f"service {name!r} failed its health check")
                return
            if time.monotonic() > deadline:
                failure = f"service {name!r} was not healthy after {budget:g}s"
                service.on(ServiceEvent.UNHEALTHY, failure)
                return
            self.sleep(0.2)

    def stop(self) -> None:
        """Remove the services (but those to keep) and, when none is kept, the network."""
        kept = False
        for name, service in self.running.items():
            keep = self.specs[name].keep
            service.on(ServiceEvent.RUN_ENDED_KEEP if keep else ServiceEvent.RUN_ENDED)
            if service.state is ServiceState.KEPT:
                kept = True
            elif service.container_id:  # (one that was never created has nothing to remove)
                with contextlib.suppress(DockyardError):
                    self.runtime.remove(service.container_id)
        if self.network is not None and not kept:
            with contextlib.suppress(DockyardError):
                self.runtime.remove_network(self.network)
