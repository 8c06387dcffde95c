"""Where a pipeline runs: the one place that turns a backend's name into its runtime and
its ports. ``--backend NAME`` or ``DOCKYARD_BACKEND``; ``local`` (the Docker Engine at
``DOCKER_HOST`` or the local socket, files on this machine) is the default; ``swarm`` runs
each step as a Swarm service placed by dockyard (``DOCKER_HOST`` names a manager). A backend
is an entry here and implementations of the ports, not branches in the run loop.

On the Swarm backend, committed outputs, inputs and attempts' work folders live on the
nodes, kept and moved by dockyard's node agents (:mod:`dockyard.agent`, deployed by
:mod:`dockyard.runtime.swarm_agents`); named volumes are still this machine's folders, bound
by path (nodes that use them must see them at the same path).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.errors import InvalidInput
from dockyard.execution import Ports
from dockyard.runtime.base import Runtime
from dockyard.spec.loader import PipelineFile
from dockyard.storage.local import LocalVolumes
from dockyard.storage.ports import VolumeBackend

Note = Callable[[str], None]

DEFAULT = "local"
ENVIRONMENT = "DOCKYARD_BACKEND"


@dataclass(frozen=True)
class Backend:
    name: str
    runtime: Callable[[], Runtime]  # connects to the engine (exit 3 when it cannot)
    ports: Callable[[PipelineFile, Runtime, Note], Ports]  # may set up the engine (agents)
    volumes: Callable[[], VolumeBackend]  # needs no engine


def _docker() -> Runtime:
    from dockyard.runtime.docker import DockerRuntime

    return DockerRuntime()


def _swarm() -> Runtime:
    from dockyard.runtime.swarm import SwarmRuntime

    return SwarmRuntime()


def _local_ports(pf: PipelineFile, runtime: Runtime, note: Note) -> Ports:
    return Ports.local(pf)


def _swarm_ports(pf: PipelineFile, runtime: Runtime, note: Note) -> Ports:
    from dockyard.planning.preflight import project_id
    from dockyard.runtime.swarm import SwarmRuntime
    from dockyard.runtime.swarm_agents import deploy
    from dockyard.storage.agents import AgentOutputs, AgentWorkspace

    assert isinstance(runtime, SwarmRuntime)
    pool = deploy(runtime, note)
    return Ports(
        AgentOutputs(pool, pf.state_dir / "outputs"),
        AgentWorkspace(pool, project_id(pf), pf.state_dir),
        LocalVolumes(),
    )


LOCAL = Backend(
    "local",
    runtime=_docker,
    ports=_local_ports,
    volumes=LocalVolumes,
)
SWARM = Backend(
    "swarm",
    runtime=_swarm,
    ports=_swarm_ports,
    volumes=LocalVolumes,
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
