"""The Docker Swarm adapter: a :class:`~dockyard.runtime.base.Runtime` on a Swarm, through a
manager's API (``DOCKER_HOST``).

Swarm executes, dockyard decides: each container is a service pinned to the node dockyard's
scheduler chose (see :mod:`.tasks`), watched through its task. Its nodes are the
Swarm's nodes with the resources they report; a node that is down or not active takes no
work, and a task on a node that went down is reported lost (Swarm leaves such tasks
"running" forever). Networks: see :meth:`SwarmRuntime._network_for`. Images are made on
the manager and copied to the node that needs one (:mod:`.images`) before its task is
created.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import docker.errors

from dockyard.backends.swarm.images import NodeEngines, NodeImages
from dockyard.backends.swarm.nodes import SwarmNodes
from dockyard.backends.swarm.tasks import (
    KILLED,
    LABEL_CONTAINER,
    LABEL_STARTED,
    latest_task,
    service_definition,
    task_exit,
    task_node,
    task_state,
)
from dockyard.errors import DockyardError, InvalidInput, RuntimeFailure
from dockyard.runtime.base import (
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    Node,
)

# A task's end is seen by polling (Swarm's events say nothing of tasks): often at first, so
# that short steps are not held up, then less, so that long ones cost the manager little.
POLL_FIRST = 0.1
# Set to 1 by whoever made sure that every node's daemon runs with no-new-privileges.
NO_NEW_PRIVILEGES = "DOCKYARD_SWARM_NODES_NO_NEW_PRIVILEGES"
POLL_MAX = 0.5
STOPPED_ELSEWHERE_AFTER = 5.0
MANAGER_REFUSALS_SECONDS = 60.0  # how long a wait watches through a manager's error answers
SCALE_TRIES = 8


class SwarmRuntime(SwarmNodes):
    def __init__(
        self,
        base_url: str | None = None,
        engines: list[str] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(base_url)
        with self._translated("reading the swarm"):
            info = self.api.info()
        swarm = info.get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            super().close()
            raise InvalidInput(
                f"the Docker Engine at {self.url} is not a Swarm manager "
                f"(swarm state: {swarm.get('LocalNodeState') or 'inactive'}); point "
                "DOCKER_HOST at a manager, or use --backend local"
            )
        if os.environ.get(NO_NEW_PRIVILEGES) != "1":
            super().close()
            raise InvalidInput(
                "--backend swarm: Swarm services cannot ask for no-new-privileges (not in the "
                "Engine API before 1.44), so every node's daemon must set it for all its "
                'containers: put "no-new-privileges": true in /etc/docker/daemon.json on each '
                f"node, restart it, and set {NO_NEW_PRIVILEGES}=1 to say that it is done "
                "(dockyard cannot read the setting through the API)"
            )
        self.node_engines = NodeEngines(engines)  # (None: from DOCKYARD_SWARM_ENGINES)
        self.node_images = NodeImages(self, self.node_engines)
        self.sleep = sleep
        self.clock = clock
        self._lock = threading.Lock()
        self._nodes: tuple[float, list[Node]] | None = None
        self._failed_at: float | None = None  # when the manager last did not answer
        self._images: set[str] = set()  # images the manager has
        self._init_networks()
        self._stopped: set[str] = set()  # services this runtime scaled to zero

    def close(self) -> None:
        """Remove the run networks this runtime made and let go of the engines."""
        self.remove_run_networks()
        self.node_engines.close()
        super().close()

    # -- containers as services ------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        # dockyard makes or pulls every image on the manager first: one it lacks is no
        # image at all (a task refused on its node would only say so later, as lost).
        if spec.image not in self._images:
            if self.image_id(spec.image) is None:
                raise RuntimeFailure(f"creating a service from {spec.image}: no such image")
            self._images.add(spec.image)
        if spec.node is not None:
            self.node_images.ensure(spec.image, spec.node)
            spec = self._volumes_known(spec, spec.node)
        spec = replace(spec, network=self._network_for(spec))
        body = service_definition(spec)
        with self._translated(f"creating a service from {spec.image}"):
            created = self.api.create_service(
                body["TaskTemplate"],
                name=body["Name"],
                labels=body["Labels"],
                mode=body["Mode"],
                endpoint_spec=body["EndpointSpec"],
            )
        return str(created["ID"])

    def _volumes_known(self, spec: ContainerSpec, node: str) -> ContainerSpec:
        """Have the node's engine know the spec's driver volumes, and mount them by name: a
        task whose mount names a driver is placed by Swarm only on nodes whose description
        lists that driver, which a plugin found by its socket (dockyard's agents) is not
        until the engine has used it once."""
        engine = self.node_engines.engine_of(node)
        if engine is None or not any(b.driver for b in spec.binds):
            return spec
        binds = []
        for bind in spec.binds:
            if bind.driver:
                with engine._translated(f"making volume {bind.source} known on its node"):
                    engine.api.create_volume(bind.source, driver=bind.driver)
                bind = replace(bind, driver="")
            binds.append(bind)
        return replace(spec, binds=tuple(binds))

    def start(self, container_id: str) -> None:
        self._scale(container_id, 1, "starting", started=True)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        began = self.clock()
        deadline = None if timeout is None else began + timeout
        timed_out = False
        refused_since: float | None = None
        while True:
            try:
                task = self._task(container_id)
                refused_since = None
            except _Gone:
                return ExitStatus(None, error="the service disappeared")
            except RuntimeFailure:
                # A manager between leaders answers 503 for a while: watch on, for a while.
                refused_since = refused_since if refused_since is not None else self.clock()
                if self.clock() - refused_since > MANAGER_REFUSALS_SECONDS:
                    raise
                self.sleep(POLL_MAX)
                continue
            if (
                task is None
                and self._maybe_stopped(container_id, began)
                and not self._replicas(container_id)
            ):
                # Scaled to zero before its task was made (killed, or stopped at its timeout
                # as it was being placed), or never started: it ended without running.
                return ExitStatus(KILLED, timed_out=timed_out, error="stopped before it ran")
            if task is not None:
                state = str((task.get("Status") or {}).get("State") or "")
                if state in ("complete", "failed", "shutdown", "rejected", "orphaned"):
                    status = task_exit(task)
                    if timed_out:
                        return ExitStatus(status.exit_code, timed_out=True, error=status.error)
                    if state == "shutdown" and not self._stopped_here(container_id):
                        # Swarm stopped it (its node drained, or back from the dead): not
                        # the step's doing.
                        return ExitStatus(None, error="Swarm stopped it on its node")
                    if status.exit_code == KILLED and self._oom_killed(task):
                        return replace(status, oom_killed=True)
                    return status
                lost = self._lost_node(task_node(task), running=state == "running")
                if lost is not None:
                    return ExitStatus(None, error=lost)
            if deadline is not None and not timed_out and self.clock() >= deadline:
                self._scale(container_id, 0, "stopping")  # SIGTERM, then SIGKILL after grace
                timed_out = True
            self.sleep(min(POLL_FIRST + (self.clock() - began) * POLL_FIRST, POLL_MAX))

    def _lost_node(self, node_id: str | None, *, running: bool) -> str | None:
        """Why a task's node will never end it, or None: the node is down, gone, or (for a
        task not yet running) takes no work (drained, paused)."""
        if node_id is None:
            return None
        node = self._node_states().get(node_id)
        if node is None:
            return f"its node {node_id[:12]} left the swarm"
        if node.state == "down":
            return f"its node {node.name} went down while it ran"
        if not running and not node.ready:
            return f"its node {node.name} takes no work ({node.state})"
        return None

    def _oom_killed(self, task: Mapping[str, Any]) -> bool:
        """Whether the kernel killed the task's container for memory: a task's status does
        not say, its container (on its node's engine, when that engine was given) does."""
        node = task_node(task)
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        engine = self.node_engines.engine_of(node) if node else None
        if engine is None or not container:
            return False
        try:
            with engine._translated(f"inspecting container {container[:12]} on its node"):
                state = engine.api.inspect_container(container).get("State") or {}
        except DockyardError:
            return False  # (its node's engine is away: a plain exit by SIGKILL, then)
        return bool(state.get("OOMKilled"))

    def _stopped_here(self, service: str) -> bool:
        with self._lock:
            return service in self._stopped

    def kill(self, container_id: str) -> None:
        self._scale(container_id, 0, "stopping")

    def logs(self, container_id: str) -> bytes:
        with self._translated(f"reading the logs of service {container_id[:12]}"):
            try:
                chunks = self.api.service_logs(
                    container_id, stdout=True, stderr=True, follow=False, timestamps=False
                )
                return b"".join(chunks)
            except docker.errors.NotFound:
                return b""

    def remove(self, container_id: str) -> None:
        with self._lock:
            self._stopped.discard(container_id)
        with (
            self._translated(f"removing service {container_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.api.remove_service(container_id)

    def health(self, container_id: str) -> str:
        try:
            task = self._task(container_id)
        except _Gone:
            return "exited"
        if task is None:
            return "exited"
        state = str((task.get("Status") or {}).get("State") or "")
        if state in ("complete", "failed", "shutdown", "rejected", "orphaned", "remove"):
            return "exited"
        if self._lost_node(task_node(task), running=state == "running") is not None:
            return "lost"  # (Swarm would say "running" for as long as the node is down)
        if state != "running":
            return "starting"
        # A task with a health check becomes "running" only once it is healthy.
        return "healthy" if self._has_health(container_id) else "running"

    def list(self, labels: Mapping[str, str]) -> builtins.list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with self._translated("listing services"):
            services = self.api.services(filters=filters)
        return [self._info(s) for s in services]

    def inspect(self, container_id: str) -> ContainerInfo | None:
        with self._translated(f"inspecting service {container_id[:12]}"):
            try:
                service = self.api.inspect_service(container_id)
            except docker.errors.NotFound:
                return None
        return self._info(service)

    # -- helpers ------------------------------------------------------------------------------

    def _scale(self, service: str, replicas: int, what: str, *, started: bool = False) -> None:
        """Set the replica count (and, with ``started``, mark the service as started), made
        again when another update won the race for the service's version (Swarm's
        compare-and-swap)."""
        if replicas == 0:
            with self._lock:
                self._stopped.add(service)
        with self._translated(f"{what} service {service[:12]}"):
            for turn in range(SCALE_TRIES):
                if turn:
                    self.sleep(0.05 * turn)  # another update won: let it land
                try:
                    found = self.api.inspect_service(service)
                except docker.errors.NotFound:
                    return  # gone: nothing runs
                if found["Spec"]["Mode"].get("Replicated", {}).get("Replicas") == replicas:
                    return
                labels = dict(found["Spec"].get("Labels") or {})
                if started:
                    labels[LABEL_STARTED] = "1"
                try:
                    self.api.update_service(
                        service,
                        found["Version"]["Index"],
                        mode={"Replicated": {"Replicas": replicas}},
                        labels=labels,
                        fetch_current_spec=True,
                    )
                    return
                except docker.errors.APIError as exc:
                    if "out of sequence" not in str(exc.explanation or exc):
                        raise
        raise RuntimeFailure(
            f"{what} service {service[:12]}: other updates of it won {SCALE_TRIES} times in a row"
        )

    def _task(self, service: str) -> Mapping[str, Any] | None:
        """The service's task (None before it has one); :class:`_Gone` without the service."""
        with self._translated(f"reading the task of service {service[:12]}"):
            try:
                tasks = self.api.tasks(filters={"service": service})
                if not tasks:
                    self.api.inspect_service(service)
            except docker.errors.NotFound:
                raise _Gone(service) from None
        return latest_task(tasks)

    def _maybe_stopped(self, service: str, waiting_since: float) -> bool:
        """Whether a service without a task may have been scaled to zero: this runtime did,
        or the wait is old enough that another process (a dead run) may have."""
        if self._stopped_here(service):
            return True
        return self.clock() - waiting_since > STOPPED_ELSEWHERE_AFTER

    def _replicas(self, service: str) -> int:
        with self._translated(f"inspecting service {service[:12]}"):
            try:
                found = self.api.inspect_service(service)
            except docker.errors.NotFound:
                return 0
        return int(found["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 0))

    def _has_health(self, service: str) -> bool:
        with self._translated(f"inspecting service {service[:12]}"):
            found = self.api.inspect_service(service)
        container = found["Spec"]["TaskTemplate"]["ContainerSpec"]
        return bool(container.get("Healthcheck"))

    def _info(self, service: Mapping[str, Any]) -> ContainerInfo:
        service_id = str(service["ID"])
        labels = dict((service.get("Spec") or {}).get("Labels") or {})
        name = labels.pop(LABEL_CONTAINER, "") or str(service["Spec"]["Name"])
        started = labels.pop(LABEL_STARTED, None) is not None
        try:
            task = self._task(service_id)
        except _Gone:
            task = None
        if task is not None:
            state, node = task_state(task), task_node(task)
        else:
            state, node = ("exited" if started else "created"), None
        return ContainerInfo(service_id, name, labels, state, node or "")


class _Gone(Exception):
    """The service is not there (any more)."""
