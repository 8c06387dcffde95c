"""The Docker Engine adapter: a :class:`~dockyard.runtime.base.Runtime` on one engine
(local, or ``DOCKER_HOST``): its one node, containers and networks here, images in
:mod:`.docker_images`, the connection and error translation in :mod:`.docker_client`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import docker
import docker.errors
import requests.exceptions

from dockyard.backends.docker_client import ping_socket
from dockyard.backends.docker_images import DockerImages
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    LOCAL_NODE,
    NO_NETWORK,
    Bind,
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Node,
)

STOP_GRACE_SECONDS = 10


class DockerRuntime(DockerImages):
    """A :class:`~dockyard.runtime.base.Runtime` on a Docker Engine (local or ``DOCKER_HOST``)."""

    def shares_host_cgroups(self) -> bool:
        base_url = str(getattr(self.api, "base_url", ""))
        if not base_url.startswith("http+docker://localhost"):  # docker-py's unix socket URL
            return False
        with self._translated("reading the engine's info"):
            info = self.api.info()
        return bool(info.get("CgroupDriver") == "cgroupfs")

    def nodes(self) -> list[Node]:
        """A plain engine is one node: this one."""
        with self._translated("reading the engine's info"):
            info = self.api.info()
        capacity = HostCapacity(cpus=float(info["NCPU"]), memory=int(info["MemTotal"]))
        return [Node(LOCAL_NODE, str(info.get("Name") or LOCAL_NODE), capacity)]

    def capacity(self) -> HostCapacity:
        return self.nodes()[0].capacity

    # -- containers ---------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        host_config = self.api.create_host_config(
            # Mounts, not "src:dst:mode" binds: a path may contain ':' (a file named a:b).
            mounts=[_mount(b) for b in spec.binds],
            nano_cpus=None if spec.cpus is None else round(spec.cpus * 1e9),
            cgroup_parent=spec.cgroup_parent,
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap beyond the limit: the limit is the limit
            security_opt=["no-new-privileges:true"],
            privileged=False,
            pids_limit=spec.pids,
            # Only the capabilities a step needs (see DEFAULT_CAPABILITIES), not the
            # engine's default set, which lets root forge packets and make device nodes.
            cap_drop=["ALL"],
            cap_add=sorted({*DEFAULT_CAPABILITIES, *spec.cap_add}),
            network_mode=spec.network,
            # A tiny init as PID 1 forwards SIGTERM (so timeouts stop steps promptly) and
            # reaps orphaned processes of tools that leave them behind.
            init=True,
        )
        networking = None
        if spec.network not in (None, NO_NETWORK):
            networking = self.api.create_networking_config(
                {spec.network: self.api.create_endpoint_config(aliases=list(spec.aliases))}
            )
        health = None
        if spec.health is not None:
            h = spec.health
            health = {
                "test": ["CMD", *h.command],
                "interval": int(h.interval * 1e9),
                "timeout": int(h.timeout * 1e9),
                "retries": h.retries,
                "start_period": 0,
            }
        with self._translated(f"creating a container from {spec.image}"):
            created = self.api.create_container(
                image=spec.image,
                command=list(spec.command) if spec.command is not None else None,
                environment=dict(spec.env),
                labels=dict(spec.labels),
                host_config=host_config,
                name=spec.name,
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                networking_config=networking,
                healthcheck=health,
                working_dir=spec.workdir,
            )
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        with self._translated(f"starting container {container_id[:12]}"):
            self.api.start(container_id)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        short = container_id[:12]
        timed_out = False
        with self._translated(f"waiting for {short}"):
            try:
                try:
                    result = self.api.wait(container_id, timeout=timeout)
                except requests.exceptions.RequestException as exc:
                    if timeout is None or not _is_timeout(exc):
                        raise
                    timed_out = True
                    self.api.stop(container_id, timeout=STOP_GRACE_SECONDS)
                    result = self.api.wait(container_id)
                code = int(result.get("StatusCode", -1))
                error = (result.get("Error") or {}).get("Message") or None
                oom = False
                if code != 0:
                    state = self.api.inspect_container(container_id)["State"]
                    oom = bool(state.get("OOMKilled"))
                    error = error or state.get("Error") or None
            except docker.errors.NotFound:
                return ExitStatus(None, error="the container disappeared")
        return ExitStatus(code, oom_killed=oom, timed_out=timed_out, error=error)

    def inspect(self, container_id: str) -> ContainerInfo | None:
        with self._translated(f"inspecting container {container_id[:12]}"):
            try:
                found = self.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None
        return ContainerInfo(
            id=str(found["Id"]),
            name=str(found.get("Name") or "?").lstrip("/"),
            labels=(found.get("Config") or {}).get("Labels") or {},
            state=str((found.get("State") or {}).get("Status") or "unknown"),
        )

    def kill(self, container_id: str) -> None:
        with self._translated(f"killing {container_id[:12]}"):
            try:
                self.api.kill(container_id)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: not running any more, which is what we wanted
                    raise

    def logs(self, container_id: str) -> bytes:
        with self._translated(f"reading the logs of {container_id[:12]}"):
            try:
                return bytes(self.api.logs(container_id, stdout=True, stderr=True))
            except docker.errors.NotFound:
                return b""

    def remove(self, container_id: str) -> None:
        with self._translated(f"removing {container_id[:12]}"):
            try:
                self.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if not (exc.status_code == 409 and "already in progress" in str(exc.explanation)):
                    raise

    def health(self, container_id: str) -> str:
        with self._translated(f"inspecting container {container_id[:12]}"):
            try:
                state = self.api.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                return "exited"  # (removed: as gone as it gets)
        if not state.get("Running"):
            return "exited"
        return str((state.get("Health") or {}).get("Status") or "running")

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        with self._translated(f"creating network {name}"):
            return str(self.api.create_network(name, driver="bridge", labels=dict(labels))["Id"])

    def remove_network(self, name: str) -> None:
        with (
            self._translated(f"removing network {name}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.api.remove_network(name)

    def networks(self, labels: Mapping[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with self._translated("listing networks"):
            return [str(n["Name"]) for n in self.api.networks(filters=filters)]

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with self._translated("listing containers"):
            found = self.api.containers(all=True, filters=filters)
        return [
            ContainerInfo(
                id=c["Id"],
                name=(c.get("Names") or ["?"])[0].lstrip("/"),
                labels=c.get("Labels") or {},
                state=str(c.get("State") or "unknown"),
            )
            for c in found
        ]


def _is_timeout(exc: Exception) -> bool:
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return "timed out" in str(exc).lower()


__all__ = ["DockerRuntime", "ping_socket"]


def _mount(bind: Bind) -> docker.types.Mount:
    if bind.driver is not None:
        return docker.types.Mount(
            bind.target,
            bind.source,
            type="volume",
            read_only=bind.readonly,
            driver_config=docker.types.DriverConfig(bind.driver) if bind.driver else None,
        )
    return docker.types.Mount(bind.target, bind.source, type="bind", read_only=bind.readonly)
