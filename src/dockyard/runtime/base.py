"""The narrow interface between dockyard and a container engine: four ports, one per
resource (as docker-py has one mixin per resource) — the nodes it runs on, containers,
images, networks — and :class:`Runtime`, an engine that has all four.

Engine-specific types (docker-py dicts, HTTP errors) never cross this boundary:
adapters translate them into these dataclasses and into :mod:`dockyard.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LABEL_PIPELINE = "dockyard.pipeline"
LABEL_RUN = "dockyard.run"
LABEL_INSTANCE = "dockyard.instance"
LABEL_ATTEMPT = "dockyard.attempt"
LABEL_PROJECT = "dockyard.project"  # which .dockyard folder (pipelines may share a name)
LABEL_KEY = "dockyard.key"  # the instance's cache key when the attempt started
LABEL_CPUS = "dockyard.cpus"  # what it was given, for `dockyard node ls`
LABEL_MEMORY = "dockyard.memory"
LOCAL_NODE = "local"  # the one node of an engine that is not a cluster
NO_NETWORK = "none"  # a container on no network: its loopback interface alone

# Every container starts with no capability but these (the engine's default set less
# NET_RAW, MKNOD, SYS_CHROOT, SETFCAP, SETPCAP, NET_BIND_SERVICE, AUDIT_WRITE, FSETID):
# what a root process in a step needs to hand files and itself to another user, as a
# database's entrypoint does (chown, setpriv --reuid/--regid --init-groups, root reading
# a 0700 folder of another user, init forwarding a signal to a process of another uid).
# A step or service asks for more with cap_add.
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID")


@dataclass(frozen=True)
class Bind:
    """A host path bound into a container; or, with ``driver``, a named volume of that
    volume driver (``source`` is then the volume's name; ``""``: a volume the engine knows
    already, with its driver)."""

    source: str
    target: str
    readonly: bool = True
    driver: str | None = None


@dataclass(frozen=True)
class Health:
    """A readiness probe the engine runs inside the container."""

    command: tuple[str, ...]  # exec form
    interval: float
    timeout: float
    retries: int


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...] | None
    cpus: float | None  # None: no quota of its own (its cgroup_parent caps it)
    memory: int
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    binds: tuple[Bind, ...] = ()
    name: str | None = None
    entrypoint: tuple[str, ...] | None = None  # None: the image's own
    cgroup_parent: str | None = None  # see dockyard.execution.cgroups
    network: str | None = None  # made by create_network; None: the default; NO_NETWORK
    aliases: tuple[str, ...] = ()  # host names on that network
    health: Health | None = None
    pids: int | None = None  # processes and threads at once; None: the engine's default
    cap_add: tuple[str, ...] = ()  # capabilities beyond DEFAULT_CAPABILITIES
    node: str | None = None  # which node it must run on (None: wherever the engine is)
    # The CPUs it takes from the pool where that is less than its limit (planning.packing):
    # what a cluster's scheduler reserves for it. None: its cpus.
    reserved_cpus: float | None = None
    workdir: str | None = None  # where its command starts (None: the image's WORKDIR)


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int | None
    oom_killed: bool = False
    timed_out: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: Mapping[str, str]
    state: str  # created | running | exited (| paused, restarting, removing, dead)
    node: str = LOCAL_NODE

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def started(self) -> bool:
        """Whether it was ever started (a created container's exit status means nothing)."""
        return self.state != "created"


@dataclass(frozen=True)
class HostCapacity:
    cpus: float
    memory: int


@dataclass(frozen=True)
class Node:
    """A machine the engine runs containers on."""

    id: str
    name: str
    capacity: HostCapacity
    state: str = "ready"  # ready | down | draining (what the engine says)
    address: str = ""  # where the node is reached (its node agent), on a cluster
    manager: bool = False  # it keeps the cluster's state (on a Swarm: a manager node)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class Nodes(Protocol):
    """The machines of an engine, and whether it answers."""

    def ping(self) -> None:
        """Raise :class:`~dockyard.errors.EngineUnavailable` unless the engine answers a new
        connection now."""

    def close(self) -> None:
        """Let go of the connection to the engine."""

    def nodes(self) -> list[Node]:
        """Every node with its capacity and state (one for a plain Docker Engine)."""

    def capacity(self) -> HostCapacity:
        """The capacity of the engine's ready nodes together."""

    def shares_host_cgroups(self) -> bool:
        """True when the engine runs on this host with the cgroupfs driver, so that
        dockyard may create parent cgroups for its containers."""


class Images(Protocol):
    """The images an engine holds, and making them."""

    def image_id(self, ref: str) -> str | None:
        """The content digest (image id) of a local image, or None when absent."""

    def pull(self, ref: str) -> str:
        """Fetch ``ref``; return its image id or raise :class:`~dockyard.errors.ImageError`."""

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        """Build ``context``'s Dockerfile as ``tag``; return the image id."""

    def import_image(
        self,
        tarball: Path,
        tag: str,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        command: Sequence[str],
    ) -> str:
        """Make an image of a root file system packed as ``tarball``; return its id."""

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        """The id of a local image carrying all of ``labels``, or None."""

    def tag_image(self, image: str, ref: str) -> None:
        """Give the local image ``image`` the name ``ref`` too."""

    def remove_image(self, image: str) -> bool:
        """Delete a local image that nothing uses (by id); False when it is in use."""

    def image_labels(self, ref: str) -> Mapping[str, str]: ...

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The image's (ENTRYPOINT, CMD), each possibly empty."""


class Containers(Protocol):
    """Running containers: create, start, watch, read, stop, remove, find."""

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container, on ``spec.node`` if given; return its id."""

    def start(self, container_id: str) -> None: ...

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        """Wait for exit. After ``timeout`` seconds the container is stopped (TERM, then
        KILL after a grace period) and the status says ``timed_out``."""

    def kill(self, container_id: str) -> None:
        """SIGKILL a running container (its waiter then sees it exit). Absent is fine."""

    def logs(self, container_id: str) -> bytes:
        """stdout and stderr, interleaved as the engine recorded them."""

    def remove(self, container_id: str) -> None:
        """Remove a container, killing it first if it runs. Absent containers are fine."""

    def health(self, container_id: str) -> str:
        """``running`` (no probe), ``starting``, ``healthy``, ``unhealthy``, ``exited``, or
        (on a cluster) ``lost``: its node is down or gone, so it runs nowhere one can reach."""

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying all of ``labels``."""

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """One container as it is now, or None when it does not exist."""


class Networks(Protocol):
    """Networks for services and the steps that use them."""

    def create_network(self, name: str, labels: Mapping[str, str]) -> str: ...

    def remove_network(self, name: str) -> None:
        """Remove a network; absent is fine."""

    def networks(self, labels: Mapping[str, str]) -> list[str]:
        """Names of the networks carrying all of ``labels``."""


class Runtime(Nodes, Images, Containers, Networks, Protocol):
    """A container engine: all four ports (the Docker Engine, a Swarm, the fake)."""
