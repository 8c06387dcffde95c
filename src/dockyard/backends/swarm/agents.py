"""Deploying the node agents (:mod:`dockyard.agent`) on a Swarm, as dockyard's own
``global`` service, so that a user with a Swarm installs nothing by hand on its nodes.

- **Image**: Debian's ``python3`` from dockyard's Debian image builder (no registry), plus
  a layer with the agent's modules; made on the manager and copied to the nodes like every
  other image (:mod:`.images`). Its tag names its content: a changed agent is a new
  image, and the service is replaced.
- **Key**: 32 random bytes, kept as a Swarm secret (mounted root-only in the agents) and in
  a file on this machine, readable by root only (``DATA_ROOT/swarm/SWARM_ID.key``; another
  machine that submits to the same Swarm needs a copy). Secrets cannot be read back from a
  Swarm: a machine without the file is refused while agents with a key run, unless
  ``DOCKYARD_AGENT_NEW_KEY=1`` says to make a new key and move the agents to it (the runs
  of machines with the old key then fail).
- **Service**: one task per node, on the node's host network (the agents must be reached
  from this machine and from each other at the node's address), binding the agent root
  alone (``DOCKYARD_AGENT_ROOT``, the same path on every node) and the engine's plugin
  folder, with a memory and a pids limit (:data:`AGENT_MEMORY`, :data:`AGENT_PIDS`): an
  agent that the network reaches holds nothing else of the node. Swarm restarts an agent
  that dies.
- **Root**: a bind needs its source to exist (Docker 20.10 does not make it), so a global
  *job* (:data:`ROOT_JOB`) makes the agent root on every node, also on nodes that join
  later: a one-line ``mkdir`` that binds the root's parent folder, no network listener.

dockyard waits until the agent of every node that is up answers (signed) before a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import docker.errors

from dockyard.agent import DEFAULT_PORT, auth, layout
from dockyard.agent.client import AgentClient, AgentError
from dockyard.backends.swarm.agent_image import agent_image
from dockyard.backends.swarm.ports import AgentPool
from dockyard.errors import EngineUnavailable, RuntimeFailure
from dockyard.home import data_root

if TYPE_CHECKING:
    from dockyard.backends.swarm.runtime import SwarmRuntime

SERVICE = "dockyard-agent"  # on the workers
MANAGER_SERVICE = "dockyard-agent-manager"  # on the managers: these keep the volume leases
LABEL_AGENT = "dockyard.agent"
ROOT_JOB = "dockyard-agent-root"  # the global job that makes the agent root on every node
ROOT_MOUNT = "/dockyard-agent-root"  # where the agent root is, in the agent
PARENT_MOUNT = "/dockyard-agent-parent"  # where the root's parent is, in the job alone
# The agent's own budget: its gate keeps heads at a few MiB; served requests hold a JSON
# body (1 MiB) or a tree's buffers each, SERVED of them; sealing or receiving an output of
# the most entries an output may have (disk.tree_limits) lists a folder at about 750
# bytes an entry, so two such at once stay under it; the rest is page cache.
AGENT_MEMORY = 2 << 30
# A thread is a pid: SERVED + QUEUED request threads, replication, the plugin's calls.
AGENT_PIDS = 1024
JOB_MEMORY = 64 << 20  # (python3 and one mkdir)
JOB_PIDS = 16
MAKE_ROOT = "import os, sys; os.makedirs(sys.argv[1], 0o755, exist_ok=True)"
# On a node: where its engine looks for plugins' sockets (the engine makes it at start).
# Only that folder: /run/docker also holds containers' stdio FIFOs and network namespaces.
PLUGINS = "/run/docker/plugins"
PLUGINS_MOUNT = "/run/docker-plugins"  # where that folder is, in the agent
ENGINE_MOUNT = "/run/dockyard-engine.sock"  # a manager's engine socket, in its agent
ROOT_ENV = "DOCKYARD_AGENT_ROOT"
PORT_ENV = "DOCKYARD_AGENT_PORT"
NEW_KEY_ENV = "DOCKYARD_AGENT_NEW_KEY"
ENGINE_SOCKET_ENV = "DOCKYARD_AGENT_ENGINE_SOCKET"
REPLICAS_ENV = "DOCKYARD_VOLUME_REPLICAS"
DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"
START_TIMEOUT = 120.0  # seconds for every agent to answer after a (re)deployment

Note = Callable[[str], None]


@dataclass(frozen=True)
class AgentSettings:
    root: str
    port: int
    engine_socket: str = DEFAULT_ENGINE_SOCKET  # the managers' engine socket, on their disk
    replicas: int = 1  # other nodes that keep each volume's latest snapshot

    @classmethod
    def from_environment(cls) -> AgentSettings:
        root = os.environ.get(ROOT_ENV) or layout.DEFAULT_ROOT
        path = PurePosixPath(root)
        if not path.is_absolute() or ".." in path.parts or len(path.parts) < 3:
            # (its parent is bound into the job that makes it: never the whole root)
            raise RuntimeFailure(
                f"{ROOT_ENV}: an absolute path at least two folders deep, not {root!r}"
            )
        port = int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
        engine = os.environ.get(ENGINE_SOCKET_ENV) or DEFAULT_ENGINE_SOCKET
        if not PurePosixPath(engine).is_absolute():
            raise RuntimeFailure(f"{ENGINE_SOCKET_ENV}: an absolute path, not {engine!r}")
        try:
            replicas = int(os.environ.get(REPLICAS_ENV) or 1)
        except ValueError:
            replicas = -1
        if not 0 <= replicas <= 16:
            raise RuntimeFailure(f"{REPLICAS_ENV}: a whole number from 0 to 16")
        return cls(str(PurePosixPath(root)), port, engine, replicas)


def key_file(runtime: SwarmRuntime) -> Path:
    """Where this machine keeps the key of the Swarm that ``runtime`` reaches."""
    api: Any = runtime.api
    with runtime._translated("reading the swarm"):
        swarm_id = str(api.inspect_swarm()["ID"])
    return data_root() / "swarm" / f"{swarm_id}.key"


def read_cluster_key(runtime: SwarmRuntime) -> bytes:
    path = key_file(runtime)
    try:
        return auth.read_key(path)
    except FileNotFoundError:
        raise RuntimeFailure(
            f"this machine has no key for the swarm's node agents ({path}): run a pipeline "
            "on the swarm from here first, or copy that file from the machine that did"
        ) from None


def cluster_key(runtime: SwarmRuntime) -> tuple[bytes, str, str]:
    """The cluster key (made on first use), and the id and name of its Swarm secret."""
    api: Any = runtime.api
    path = key_file(runtime)
    try:
        key = auth.read_key(path)
    except FileNotFoundError:
        with runtime._translated("reading the swarm's secrets"):
            others = api.secrets(filters={"label": f"{LABEL_AGENT}=key"})
        if others and os.environ.get(NEW_KEY_ENV) != "1":
            raise RuntimeFailure(
                "the swarm's node agents use a key that this machine does not have: copy "
                f"{path} from the machine that deployed them, or set {NEW_KEY_ENV}=1 to "
                "make a new key (runs from machines with the old key then fail)"
            ) from None
        key = auth.new_key()
        auth.write_key(path, key)
    name = f"dockyard-agent-key-{hashlib.sha256(key).hexdigest()[:12]}"
    with runtime._translated("reading the swarm's secrets"):
        found = [s for s in api.secrets(filters={"name": name}) if s["Spec"]["Name"] == name]
        if found:
            return key, str(found[0]["ID"]), name
        created = api.create_secret(
            name, auth.encode_key(key).encode(), labels={LABEL_AGENT: "key"}
        )
    return key, str(created["ID"]), name


def _service_task(
    image: str,
    settings: AgentSettings,
    secret: tuple[str, str],
    host_network: str,
    managers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The agents' task: on the managers (``managers`` None) with their engine's socket,
    which keeps the volume leases; elsewhere told where the managers' agents are."""
    secret_id, secret_name = secret
    root = PurePosixPath(settings.root)
    env = [
        "DOCKYARD_AGENT_NODE={{.Node.ID}}",
        f"DOCKYARD_AGENT_ROOT={root}",
        f"DOCKYARD_AGENT_MOUNT={ROOT_MOUNT}",
        f"DOCKYARD_AGENT_PORT={settings.port}",
        f"DOCKYARD_AGENT_KEY_FILE=/run/secrets/{secret_name}",
        f"DOCKYARD_AGENT_PLUGIN_DIR={PLUGINS_MOUNT}",
        f"DOCKYARD_AGENT_REPLICAS={settings.replicas}",
    ]
    mounts = [
        {"Type": "bind", "Source": str(root), "Target": ROOT_MOUNT},
        {"Type": "bind", "Source": PLUGINS, "Target": PLUGINS_MOUNT},
    ]
    if managers is None:
        env.append(f"DOCKYARD_AGENT_ENGINE={ENGINE_MOUNT}")
        mounts.append({"Type": "bind", "Source": settings.engine_socket, "Target": ENGINE_MOUNT})
        role = "manager"
    else:
        listed = ",".join(f"{node}@{address}" for node, address in sorted(managers.items()))
        env.append(f"DOCKYARD_AGENT_MANAGERS={listed}")
        role = "worker"
    return {
        "ContainerSpec": {
            "Image": image,
            "Command": ["python3", "-m", "dockyard.agent"],
            "Env": env,
            "Mounts": mounts,
            "Secrets": [
                {
                    "SecretID": secret_id,
                    "SecretName": secret_name,
                    "File": {"Name": secret_name, "UID": "0", "GID": "0", "Mode": 0o400},
                }
            ],
            "Labels": {LABEL_AGENT: "agent"},
            "Init": True,
        },
        "Resources": {"Limits": {"MemoryBytes": AGENT_MEMORY, "Pids": AGENT_PIDS}},
        "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
        "Placement": {"Constraints": [f"node.role=={role}"]},
        "Networks": [{"Target": host_network}],
    }


def _root_task(image: str, settings: AgentSettings) -> dict[str, Any]:
    """The job that makes the agent root on a node (binding its parent, for that alone)."""
    root = PurePosixPath(settings.root)
    return {
        "ContainerSpec": {
            "Image": image,
            "Command": ["python3", "-c", MAKE_ROOT, f"{PARENT_MOUNT}/{root.name}"],
            "Mounts": [{"Type": "bind", "Source": str(root.parent), "Target": PARENT_MOUNT}],
            "Labels": {LABEL_AGENT: "root"},
        },
        "Resources": {"Limits": {"MemoryBytes": JOB_MEMORY, "Pids": JOB_PIDS}},
        "RestartPolicy": {"Condition": "on-failure", "Delay": 5_000_000_000, "MaxAttempts": 3},
    }


def deploy(runtime: SwarmRuntime, note: Note, settings: AgentSettings | None = None) -> AgentPool:
    """Make sure every node runs the current agent; the pool that reaches them."""
    settings = settings or AgentSettings.from_environment()
    key, secret_id, secret_name = cluster_key(runtime)
    image = agent_image(runtime, note)
    nodes = [n for n in runtime.nodes() if n.ready]
    for node in nodes:
        runtime.node_images.ensure(image, node.id)
    api: Any = runtime.api
    with runtime._translated("deploying dockyard's node agents"):
        host = [n for n in api.networks(names=["host"]) if n.get("Driver") == "host"]
        if not host:
            raise RuntimeFailure("the manager has no host network for the node agents")
        managers = {n.id: f"{n.address}:{settings.port}" for n in runtime.nodes() if n.manager}
        secret = (secret_id, secret_name)
        # (first: an agent's task fails, and Swarm starts it again, until its root is made)
        root_job = _root_task(image, settings)
        _ensure_service(runtime, note, ROOT_JOB, root_job, secret_name, {"GlobalJob": {}})
        for name, peers in ((MANAGER_SERVICE, None), (SERVICE, managers)):
            task = _service_task(image, settings, secret, host[0]["Id"], peers)
            _ensure_service(runtime, note, name, task, secret_name)
        _remove_old_keys(api, secret_name)

    pool = AgentPool(_addresses(runtime, settings), key, settings.root)
    _wait_until_answering(runtime, pool, [n.id for n in nodes])
    return pool


def _ensure_service(
    runtime: SwarmRuntime,
    note: Note,
    name: str,
    task: dict[str, Any],
    secret_name: str,
    mode: dict[str, Any] | None = None,
) -> None:
    """Create the global service (or ``mode``) ``name`` running ``task``, or replace it
    when its task changed (its fingerprint label says what it runs)."""
    api: Any = runtime.api
    fingerprint = hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest()[:16]
    existing = [s for s in api.services(filters={"name": name}) if is_named(s, name)]
    current = existing and (existing[0]["Spec"].get("Labels") or {}).get(LABEL_AGENT)
    if current == fingerprint:
        return
    if existing:
        _check_same_key(existing[0], secret_name, key_file(runtime))
        note(f"agent: replacing the node agents ({name})")
        api.remove_service(existing[0]["ID"])
    else:
        note(f"agent: starting a node agent on every node ({name})")
    mode = mode or {"Global": {}}
    api.create_service(task, name=name, labels={LABEL_AGENT: fingerprint}, mode=mode)


def manager_agents(runtime: SwarmRuntime, settings: AgentSettings) -> dict[str, str]:
    """The agents of the manager nodes that are not down (a paused or drained manager's
    agent keeps the leases all the same), by node id."""
    return {
        n.id: f"{n.address}:{settings.port}"
        for n in runtime.known_nodes()
        if n.manager and n.state != "down"
    }


def connect(runtime: SwarmRuntime, settings: AgentSettings | None = None) -> AgentPool:
    """The agents as they are (nothing deployed): for reading what they keep."""
    settings = settings or AgentSettings.from_environment()
    return AgentPool(_addresses(runtime, settings), read_cluster_key(runtime), settings.root)


def _addresses(runtime: SwarmRuntime, settings: AgentSettings) -> Callable[[], dict[str, str]]:
    """Where the agents of the nodes that are up are (the runtime's view of the nodes)."""

    def addresses() -> dict[str, str]:
        return {n.id: f"{n.address}:{settings.port}" for n in runtime.known_nodes() if n.ready}

    return addresses


def _check_same_key(service: Mapping[str, Any], ours: str, path: Path) -> None:
    """Refuse to move running agents to this machine's key when it is not theirs (another
    machine made a new one), unless told to."""
    spec = ((service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec")) or {}
    theirs = [s.get("SecretName") for s in spec.get("Secrets") or []]
    if theirs and ours not in theirs and os.environ.get(NEW_KEY_ENV) != "1":
        raise RuntimeFailure(
            f"the swarm's node agents use another key than this machine's ({path}): copy the "
            f"key from the machine that deployed them, or set {NEW_KEY_ENV}=1 to move them to "
            "this one (runs from machines with the other key then fail)"
        )


def is_named(service: Mapping[str, Any], name: str) -> bool:
    return bool(service["Spec"]["Name"] == name)


def _remove_old_keys(api: Any, keep: str) -> None:
    """Secrets of keys no agent uses any more (best effort: one in use stays)."""
    for secret in api.secrets(filters={"label": f"{LABEL_AGENT}=key"}):
        if secret["Spec"]["Name"] != keep:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_secret(secret["ID"])


def _wait_until_answering(runtime: SwarmRuntime, pool: AgentPool, nodes: list[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = set(nodes)
    last: dict[str, str] = {}
    while waiting:
        addresses = pool.addresses()
        for node in sorted(waiting):
            address = addresses.get(node)
            if address is None:
                waiting.discard(node)  # (down since: not needed)
                continue
            try:
                answer = AgentClient(address, pool.key, node, timeout=5.0).health()
            except AgentError as exc:
                last[node] = str(exc)
                continue
            if answer.get("node") == node:
                waiting.discard(node)
            else:
                last[node] = f"an agent of node {answer.get('node')} answers at {address}"
        if not waiting:
            return
        if time.monotonic() > deadline:
            details = "; ".join(
                f"{node[:12]}: {task_error(runtime, node) or last.get(node, 'no answer')}"
                for node in sorted(waiting)
            )
            raise RuntimeFailure(f"dockyard's node agents did not start: {details}")
        time.sleep(0.5)


def task_error(runtime: SwarmRuntime, node: str) -> str | None:
    api: Any = runtime.api
    with contextlib.suppress(docker.errors.APIError, EngineUnavailable):
        tasks = [
            task
            for service in (SERVICE, MANAGER_SERVICE)
            for task in api.tasks(filters={"service": service, "node": node})
        ]
        tasks.sort(key=lambda t: t.get("UpdatedAt") or "", reverse=True)
        if tasks:
            status = tasks[0].get("Status") or {}
            return str(status.get("Err") or status.get("Message") or status.get("State"))
    return None


__all__ = [
    "MANAGER_SERVICE",
    "SERVICE",
    "AgentSettings",
    "cluster_key",
    "connect",
    "deploy",
    "manager_agents",
]
