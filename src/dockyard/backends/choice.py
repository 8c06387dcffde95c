"""Where a pipeline runs: the one place that turns a backend's name into its runtime and
its ports. ``--backend NAME`` or ``DOCKYARD_BACKEND``; ``local`` (the Docker Engine at
``DOCKER_HOST`` or the local socket, files on this machine) is the default; ``swarm`` runs
each step as a Swarm service placed by dockyard (``DOCKER_HOST`` names a manager). A backend
is an entry here and implementations of the ports, not branches in the run loop.

On the Swarm backend, committed outputs, inputs, attempts' work folders and named volumes
live on the nodes, kept and moved by dockyard's node agents (:mod:`dockyard.agent`,
deployed by :mod:`dockyard.backends.swarm.agents`; volumes: :mod:`dockyard.backends.swarm.volumes`).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dockyard.backends.local.ports import LocalOutputs, LocalVolumes, local_ports
from dockyard.errors import InvalidInput
from dockyard.execution.ports import OutputStore, Ports, VolumeBackend
from dockyard.runtime.base import Runtime
from dockyard.spec.loader import PipelineFile

Note = Callable[[str], None]

DEFAULT = "local"
ENVIRONMENT = "DOCKYARD_BACKEND"


@dataclass(frozen=True)
class Backend:
    name: str
    runtime: Callable[[], Runtime]  # connects to the engine (exit 3 when it cannot)
    ports: Callable[[PipelineFile, Runtime, Note], Ports]  # may set up the engine (agents)
    outputs: Callable[[PipelineFile, Runtime], OutputStore]  # to read them: sets up nothing
    volumes: Callable[[], VolumeBackend]  # to manage them: sets up nothing
    setup: Callable[[Runtime, Note], None] | None = None  # deploys what a run needs there
    agents: Callable[[Runtime], Mapping[str, str]] | None = None  # each node's agent: "ok"?


def _docker() -> Runtime:
    from dockyard.backends.local.runtime import DockerRuntime

    return DockerRuntime()


def _swarm() -> Runtime:
    from dockyard.backends.swarm.runtime import SwarmRuntime

    return SwarmRuntime()


def _local_ports(pf: PipelineFile, runtime: Runtime, note: Note) -> Ports:
    return local_ports(pf)


def _local_outputs(pf: PipelineFile, runtime: Runtime) -> OutputStore:
    return LocalOutputs(pf.state_dir)


def _swarm_ports(pf: PipelineFile, runtime: Runtime, note: Note) -> Ports:
    from dockyard.backends.swarm.agents import AgentSettings, deploy, manager_agents
    from dockyard.backends.swarm.ports import AgentOutputs, AgentWorkspace
    from dockyard.backends.swarm.runtime import SwarmRuntime
    from dockyard.backends.swarm.volumes import SwarmVolumes

    assert isinstance(runtime, SwarmRuntime)
    settings = AgentSettings.from_environment()
    pool = deploy(runtime, note, settings)
    workspace = AgentWorkspace(pool, _cluster_project(pf), pf.state_dir)
    volumes = SwarmVolumes(
        pool,
        lambda: manager_agents(runtime, settings),
        workspace.provide,
        replicas=settings.replicas,
    )
    return Ports(AgentOutputs(pool, pf.state_dir / "outputs"), workspace, volumes)


def _swarm_volumes() -> VolumeBackend:
    from dockyard.backends.swarm.agents import AgentSettings, connect, manager_agents
    from dockyard.backends.swarm.runtime import SwarmRuntime
    from dockyard.backends.swarm.volumes import SwarmVolumes

    runtime = SwarmRuntime()
    settings = AgentSettings.from_environment()
    return SwarmVolumes(
        connect(runtime, settings),
        lambda: manager_agents(runtime, settings),
        replicas=settings.replicas,
        names=lambda: {n.id: n.name for n in runtime.nodes()},
    )


def _swarm_outputs(pf: PipelineFile, runtime: Runtime) -> OutputStore:
    from dockyard.backends.swarm.agents import connect
    from dockyard.backends.swarm.ports import AgentOutputs
    from dockyard.backends.swarm.runtime import SwarmRuntime

    assert isinstance(runtime, SwarmRuntime)
    return AgentOutputs(connect(runtime), pf.state_dir / "outputs")


def _swarm_setup(runtime: Runtime, note: Note) -> None:
    from dockyard.backends.swarm.agents import deploy
    from dockyard.backends.swarm.runtime import SwarmRuntime

    assert isinstance(runtime, SwarmRuntime)
    deploy(runtime, note)


def _swarm_agents(runtime: Runtime) -> Mapping[str, str]:
    from dockyard.backends.swarm.agent_health import agent_health
    from dockyard.backends.swarm.runtime import SwarmRuntime

    assert isinstance(runtime, SwarmRuntime)
    return agent_health(runtime)


def _cluster_project(pf: PipelineFile) -> str:
    """The pipeline's folder on a cluster's nodes: its state folder *on this machine* (two
    machines may keep their pipelines at the same path)."""
    from dockyard.planning.preflight import project_id

    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = socket.gethostname()
    return hashlib.sha256(f"{machine}\0{project_id(pf)}".encode()).hexdigest()[:16]


LOCAL = Backend(
    "local",
    runtime=_docker,
    ports=_local_ports,
    outputs=_local_outputs,
    volumes=LocalVolumes,
)
SWARM = Backend(
    "swarm",
    runtime=_swarm,
    ports=_swarm_ports,
    outputs=_swarm_outputs,
    volumes=_swarm_volumes,
    setup=_swarm_setup,
    agents=_swarm_agents,
)
BACKENDS = {backend.name: backend for backend in (LOCAL, SWARM)}


def choose(name: str | None = None) -> Backend:
    """The backend named on the command line, else by ``DOCKYARD_BACKEND``, else local."""
    wanted = name or os.environ.get(ENVIRONMENT) or DEFAULT
    try:
        return BACKENDS[wanted]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        origin = "--backend" if name else ENVIRONMENT
        raise InvalidInput(f"{origin}: unknown backend {wanted!r} (known: {known})") from None
