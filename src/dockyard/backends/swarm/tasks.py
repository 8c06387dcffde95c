"""How one dockyard container is written as a Swarm service, and how its task reads back
(pure: dicts of the Engine API in, dockyard's types out).

Each container is a ``replicated`` service of one replica with the restart condition
``none`` (dockyard owns retries), pinned to its node by a ``node.id==`` constraint, with
reservations and limits equal to its resources. Not a ``replicated-job``: on Docker 20.10,
removing a job neither stops its running task nor removes its containers, and a pending
task may still start after it (moby/moby#44312), which would leave a killed step running;
a service of one replica that is never restarted runs its task once, and scaling it to zero
stops it. It is created with no replica (the container "created") and scaled to one to start.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from dockyard.agent.swarm_leases import node_address
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    NO_NETWORK,
    Bind,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Node,
)

LABEL_CONTAINER = "dockyard.container"  # the container name dockyard asked for
LABEL_STARTED = "dockyard.started"  # set when it is scaled to its one replica
SERVICE_NAME_MAX = 63
KILLED = 128 + 9  # the status of a container ended by SIGKILL
STOP_GRACE_SECONDS = 10
# What Swarm accepts: a DNS name component (no dot), its separators between alphanumerics.
# (alphanumerics and separators never overlap, so matching takes linear time)
_SERVICE_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_]+[A-Za-z0-9]+)*")

# Task states (moby/swarmkit api/types.proto) as dockyard's container states.
STARTING = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting"}
)
ENDED = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


def service_name(container_name: str) -> str:
    """A Swarm service name (at most 63 characters of ``[A-Za-z0-9_-]``, as a DNS name
    component) for a container name; another keeps its start, its other characters made
    ``-``, and ends with a digest of the whole."""
    if len(container_name) <= SERVICE_NAME_MAX and _SERVICE_NAME.fullmatch(container_name):
        return container_name
    digest = hashlib.sha256(container_name.encode()).hexdigest()[:12]
    kept = re.sub(r"[^A-Za-z0-9]+", "-", container_name)[: SERVICE_NAME_MAX - 13]
    return f"{kept.strip('-')}-{digest}".lstrip("-") or digest


def service_definition(spec: ContainerSpec) -> dict[str, Any]:
    """The body of ``POST /services/create`` for ``spec`` (no replica yet)."""
    container: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": dict(spec.labels),
        "Mounts": [_mount(b) for b in spec.binds],
        # As on one engine: a tiny init as PID 1, and no capability but those a step needs.
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "CapabilityAdd": sorted({*DEFAULT_CAPABILITIES, *spec.cap_add}),
        "StopGracePeriod": STOP_GRACE_SECONDS * 10**9,
    }
    if spec.workdir is not None:
        container["Dir"] = spec.workdir
    if spec.entrypoint is not None:
        container["Command"] = list(spec.entrypoint)
        container["Args"] = list(spec.command or ())
    elif spec.command is not None:
        container["Args"] = list(spec.command)
    if spec.health is not None:
        h = spec.health
        container["Healthcheck"] = {
            "Test": ["CMD", *h.command],
            "Interval": int(h.interval * 1e9),
            "Timeout": int(h.timeout * 1e9),
            "Retries": h.retries,
        }
    limits: dict[str, int] = {"MemoryBytes": spec.memory}
    reservations: dict[str, int] = {"MemoryBytes": spec.memory}
    if spec.cpus is not None:
        limits["NanoCPUs"] = round(spec.cpus * 1e9)
        # (what the planner placed it by: Swarm must not wait for the whole limit to be free)
        reserved = spec.cpus if spec.reserved_cpus is None else min(spec.cpus, spec.reserved_cpus)
        reservations["NanoCPUs"] = round(reserved * 1e9)
    if spec.pids is not None:
        limits["Pids"] = spec.pids
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits, "Reservations": reservations},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": [f"node.id=={spec.node}"] if spec.node else []},
    }
    if spec.network not in (None, NO_NETWORK):  # (a task without networks has loopback only)
        template["Networks"] = [{"Target": spec.network, "Aliases": list(spec.aliases)}]
    return {
        "Name": service_name(spec.name or _anonymous(spec)),
        "Labels": {**spec.labels, LABEL_CONTAINER: spec.name or ""},
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": 0}},
        # No virtual IP: this kernel may have no IPVS; services are found by DNS round robin.
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def _anonymous(spec: ContainerSpec) -> str:
    body = repr(sorted(spec.labels.items())) + spec.image + repr(spec.command)
    return "dockyard-" + hashlib.sha256(body.encode()).hexdigest()[:16]


def latest_task(tasks: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The service's current task: the newest one (a service of one replica that is never
    restarted has at most one, but a scale to zero and back would make another)."""
    return max(tasks, key=lambda t: str(t.get("CreatedAt") or ""), default=None)


def task_state(task: Mapping[str, Any] | None) -> str:
    """A task's state as a container's: created, running or exited."""
    if task is None:
        return "created"
    state = str((task.get("Status") or {}).get("State") or "")
    return "exited" if state in ENDED else "running"


def task_exit(task: Mapping[str, Any]) -> ExitStatus:
    """How an ended task ended. A task that never ran (refused by its node, or orphaned when
    its node was lost) has no exit code: that is a lost attempt, not the step's failure."""
    status = task.get("Status") or {}
    state = str(status.get("State") or "")
    container = status.get("ContainerStatus") or {}
    code = container.get("ExitCode")
    error = status.get("Err") or None
    if state == "complete":
        return ExitStatus(0)
    if state == "shutdown" and not container.get("ContainerID"):
        # Stopped before its container existed (scaled to zero while being placed): its
        # exit code says nothing (0 by default); it was killed before it ran.
        return ExitStatus(KILLED, error="stopped before it ran")
    if state in ("rejected", "orphaned") or code is None:
        reason = error or status.get("Message") or state
        return ExitStatus(None, error=f"the node could not run it: {reason}")
    return ExitStatus(int(code), error=None if int(code) == 0 else error)


def task_node(task: Mapping[str, Any] | None) -> str | None:
    """The node a task runs on, or, before it is assigned, the node it is pinned to (a task
    pinned to a node that is down waits "pending" for ever)."""
    if task is None:
        return None
    if task.get("NodeID"):
        return str(task["NodeID"])
    placement = ((task.get("Spec") or {}).get("Placement") or {}).get("Constraints") or []
    for constraint in placement:
        key, _, value = str(constraint).replace(" ", "").partition("==")
        if key == "node.id" and value:
            return value
    return None


def node_of(found: Mapping[str, Any]) -> Node:
    """A Swarm node as dockyard's: ready only when Swarm says ready and it is active."""
    description = found.get("Description") or {}
    resources = description.get("Resources") or {}
    status = str((found.get("Status") or {}).get("State") or "unknown")
    availability = str((found.get("Spec") or {}).get("Availability") or "active")
    state = status if status != "ready" else ("ready" if availability == "active" else "draining")
    return Node(
        id=str(found["ID"]),
        name=str(description.get("Hostname") or found["ID"]),
        capacity=HostCapacity(
            cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
            memory=int(resources.get("MemoryBytes") or 0),
        ),
        state=state,
        address=node_address(found),
        manager=(found.get("Spec") or {}).get("Role") == "manager",
    )


def _mount(bind: Bind) -> dict[str, Any]:
    mount: dict[str, Any] = {
        "Type": "bind" if bind.driver is None else "volume",
        "Source": bind.source,
        "Target": bind.target,
        "ReadOnly": bind.readonly,
    }
    if bind.driver:
        mount["VolumeOptions"] = {"DriverConfig": {"Name": bind.driver}}
    return mount
