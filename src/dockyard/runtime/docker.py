"""The Docker Engine adapter (official ``docker`` SDK, low-level API client).

docker-py's dicts and exceptions stay in this module; callers see dockyard's own
types and errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.constants import DEFAULT_DOCKER_API_VERSION, DEFAULT_UNIX_SOCKET
from docker.utils import kwargs_from_env, version_lt

from dockyard.errors import EngineUnavailable, ImageError, RuntimeFailure
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    LOCAL_NODE,
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Node,
)

STOP_GRACE_SECONDS = 10
MIN_API_VERSION = "1.24"
# Enough connections for every concurrently waiting container plus control calls.
MAX_POOL_SIZE = 256
START_HINT = (
    "start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &`), or point "
    "DOCKER_HOST at a running engine"
)


# How a request fails when the engine is not there to answer it: refused or reset
# connections, a socket that is gone, a stream (wait, logs) cut off mid-answer.
_AWAY = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
)


def ping_socket(path: str, timeout: float = 10.0) -> None:
    """``GET /_ping`` over a new connection to the engine's unix socket; raise OSError unless
    it answers 200. (docker-py would leave the socket of a refused connection to the
    garbage collector.)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status = sock.recv(64).split(b"\r\n", 1)[0]
    if not (status.startswith(b"HTTP/1.") and status.split(b" ")[1:2] == [b"200"]):
        raise ConnectionError(f"the engine answered {status.decode(errors='replace')!r}")


class DockerRuntime:
    """A :class:`~dockyard.runtime.base.Runtime` on a Docker Engine (local or ``DOCKER_HOST``)."""

    def __init__(self, base_url: str | None = None):
        kwargs: dict[str, Any] = dict(kwargs_from_env())
        if base_url is not None:
            kwargs["base_url"] = base_url
        url = str(kwargs.get("base_url") or DEFAULT_UNIX_SOCKET)
        self.url = url
        self.socket_path: str | None = None
        if url.startswith(("unix://", "http+unix://")):
            socket_path = self.socket_path = url.split("://", 1)[1]
            if not os.path.exists(socket_path):
                # docker-py leaks the socket of a failed connect; there is nothing to try anyway.
                raise self._away(FileNotFoundError(f"no socket at {socket_path}"))
        # Ask the engine which API version it speaks with a client that makes no request in
        # its constructor, so that a failure leaves no half-built client (and socket) behind.
        probe = docker.APIClient(version=MIN_API_VERSION, **kwargs)
        try:
            server = str(probe.version(api_version=False)["ApiVersion"])
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._away(exc) from exc
        finally:
            probe.close()
        version = server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else None
        # Any: docker-py's loosely typed dicts stay inside this adapter.
        self.api: Any = docker.APIClient(version=version, max_pool_size=MAX_POOL_SIZE, **kwargs)
        # Pings go over a connection of their own, made anew each time: a pooled connection
        # can outlive the engine's listener (a stopping engine closes its socket first and
        # still answers on open connections), and a ping must say whether it answers now.
        self._probe: Any = docker.APIClient(version=server, max_pool_size=1, **kwargs)
        self._probe_lock = threading.Lock()

    def close(self) -> None:
        self.api.close()
        self._probe.close()

    def ping(self) -> None:
        if self.socket_path is not None:
            try:
                ping_socket(self.socket_path)
            except OSError as exc:
                raise self._away(exc) from exc
            return
        with self._probe_lock:
            try:
                self._probe.ping()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise self._away(exc) from exc
            finally:
                self._probe.close()

    # -- errors -------------------------------------------------------------------------------

    def _away(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"cannot reach the Docker Engine at {self.url} ({exc}); {START_HINT}"
        )

    def _answers(self) -> bool:
        try:
            self.ping()
        except EngineUnavailable:
            return False
        return True

    def _failure(self, what: str, exc: docker.errors.APIError) -> EngineUnavailable | None:
        """An error answer of an engine that is shutting down or restarting is no verdict on
        the request: it is the engine going away (5xx, and a fresh connection fails)."""
        if exc.status_code is not None and exc.status_code >= 500 and not self._answers():
            return self._away(exc)
        return None

    @contextlib.contextmanager
    def _translated(
        self, what: str, error: type[RuntimeFailure | ImageError] = RuntimeFailure
    ) -> Iterator[None]:
        """docker-py's failures as dockyard's: the engine away, or ``error`` for ``what``."""
        try:
            yield
        except _AWAY as exc:
            raise self._away(exc) from exc
        except docker.errors.APIError as exc:
            raise self._failure(what, exc) or error(f"{what}: {exc.explanation or exc}") from exc

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

    # -- images -------------------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        with self._translated(f"inspecting image {ref}"):
            try:
                return str(self.api.inspect_image(ref)["Id"])
            except docker.errors.NotFound:  # (ImageNotFound is one)
                return None

    def image_labels(self, ref: str) -> Mapping[str, str]:
        with self._translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return dict(config.get("Labels") or {})

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        with self._translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return tuple(config.get("Entrypoint") or ()), tuple(config.get("Cmd") or ())

    def pull(self, ref: str) -> str:
        repository, tag = _split_ref(ref)
        with self._translated(
            f"image {ref!r} is not present on this engine and could not be pulled", ImageError
        ):
            self.api.pull(repository, tag=tag)
        image = self.image_id(ref)
        if image is None:
            raise ImageError(f"image {ref!r} could not be pulled")
        return image

    def import_image(
        self,
        tarball: Path,
        tag: str,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        command: Sequence[str],
    ) -> str:
        # Values quoted as the Dockerfile syntax wants them: "a b" is one value, not two.
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in env.items()]
        changes += [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        changes.append(f"CMD {json.dumps(list(command))}")
        repository, version = _split_ref(tag)
        with self._translated(f"importing {tag}", ImageError):
            self.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=changes
            )
        return self._made(tag, f"importing {tag}")

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        with self._translated("listing images"):
            found = self.api.images(
                filters={"label": [f"{k}={v}" for k, v in labels.items()]}, quiet=True
            )
        return str(found[0]) if found else None

    def tag_image(self, image: str, ref: str) -> None:
        repository, version = _split_ref(ref)
        with self._translated(f"tagging {image} as {ref}"):
            self.api.tag(image, repository, tag=version)

    def remove_image(self, image: str) -> bool:
        with self._translated(f"removing image {image}"):
            try:
                self.api.remove_image(image)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a container or another tag still uses it
                    return False
                raise
        return True

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        log: list[str] = []
        with self._translated(f"building {context} as {tag} failed", ImageError):
            for chunk in self.api.build(
                path=str(context),
                tag=tag,
                labels=dict(labels),
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
            ):
                if "stream" in chunk:
                    log.append(str(chunk["stream"]))
                if "error" in chunk:
                    tail = "".join(log[-5:]).strip()
                    raise ImageError(
                        f"building {context} as {tag} failed: {chunk['error']}"
                        + (f"\n{tail}" if tail else "")
                    )
        return self._made(tag, f"building {context} as {tag}")

    def _made(self, tag: str, what: str) -> str:
        """The id of the image just made as ``tag``."""
        image = self.image_id(tag)
        if image is None:
            raise ImageError(f"{what} produced no image")
        return image

    # -- containers ---------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        host_config = self.api.create_host_config(
            # Mounts, not "src:dst:mode" binds: a path may contain ':' (a file named a:b).
            mounts=[
                docker.types.Mount(b.target, b.source, type="bind", read_only=b.readonly)
                for b in spec.binds
            ],
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
        if spec.network not in (None, "none"):
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
            state = self.api.inspect_container(container_id)["State"]
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


def _split_ref(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        return ref, None
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"
