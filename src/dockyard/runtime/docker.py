"""The Docker Engine adapter (official ``docker`` SDK, low-level API client).

docker-py's dicts and exceptions stay in this module; callers see dockyard's own
types and errors.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.constants import DEFAULT_DOCKER_API_VERSION, DEFAULT_UNIX_SOCKET
from docker.utils import kwargs_from_env, version_lt

from dockyard.errors import EngineUnavailable, ImageError, RuntimeFailure
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
)

STOP_GRACE_SECONDS = 10
MIN_API_VERSION = "1.24"
# Enough connections for every concurrently waiting container plus control calls.
MAX_POOL_SIZE = 256
START_HINT = (
    "start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &`), or point "
    "DOCKER_HOST at a running engine"
)


def _engine_error(exc: Exception) -> EngineUnavailable:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return EngineUnavailable(f"cannot reach the Docker Engine at {where} ({exc}); {START_HINT}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.ConnectionError, ConnectionError) as exc:
        raise _engine_error(exc) from exc
    except docker.errors.APIError as exc:
        raise RuntimeFailure(f"{what}: {exc.explanation or exc}") from exc


@contextlib.contextmanager
def _image_errors(what: str) -> Iterator[None]:
    """Making an image: an engine that is away as such, anything else as ImageError."""
    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        raise _engine_error(exc) from exc
    except docker.errors.APIError as exc:
        raise ImageError(f"{what}: {exc.explanation or exc}") from exc


class DockerRuntime:
    """A :class:`~dockyard.runtime.base.Runtime` on a Docker Engine (local or ``DOCKER_HOST``)."""

    def __init__(self, base_url: str | None = None):
        kwargs: dict[str, Any] = dict(kwargs_from_env())
        if base_url is not None:
            kwargs["base_url"] = base_url
        url = str(kwargs.get("base_url") or DEFAULT_UNIX_SOCKET)
        if url.startswith(("unix://", "http+unix://")):
            socket_path = url.split("://", 1)[1]
            if not os.path.exists(socket_path):
                # docker-py leaks the socket of a failed connect; there is nothing to try anyway.
                raise _engine_error(FileNotFoundError(f"no socket at {socket_path}"))
        # Ask the engine which API version it speaks with a client that makes no request in
        # its constructor, so that a failure leaves no half-built client (and socket) behind.
        probe = docker.APIClient(version=MIN_API_VERSION, **kwargs)
        try:
            server = str(probe.version(api_version=False)["ApiVersion"])
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _engine_error(exc) from exc
        finally:
            probe.close()
        version = server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else None
        # Any: docker-py's loosely typed dicts stay inside this adapter.
        self.api: Any = docker.APIClient(version=version, max_pool_size=MAX_POOL_SIZE, **kwargs)

    def close(self) -> None:
        self.api.close()

    def ping(self) -> None:
        try:
            self.api.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _engine_error(exc) from exc

    def shares_host_cgroups(self) -> bool:
        base_url = str(getattr(self.api, "base_url", ""))
        if not base_url.startswith("http+docker://localhost"):  # docker-py's unix socket URL
            return False
        with _translated("reading the engine's info"):
            info = self.api.info()
        return bool(info.get("CgroupDriver") == "cgroupfs")

    def capacity(self) -> HostCapacity:
        with _translated("reading the engine's info"):
            info = self.api.info()
        return HostCapacity(cpus=float(info["NCPU"]), memory=int(info["MemTotal"]))

    # -- images -------------------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.NotFound:
            return None
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc

    def image_labels(self, ref: str) -> Mapping[str, str]:
        with _translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return dict(config.get("Labels") or {})

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        with _translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return tuple(config.get("Entrypoint") or ()), tuple(config.get("Cmd") or ())

    def pull(self, ref: str) -> str:
        repository, tag = _split_ref(ref)
        try:
            self.api.pull(repository, tag=tag)
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc
        except docker.errors.APIError as exc:
            raise ImageError(
                f"image {ref!r} is not present on this engine and could not be pulled: "
                f"{exc.explanation or exc}"
            ) from exc
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
        with _image_errors(f"importing {tag}"):
            self.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=changes
            )
        return self._made(tag, f"importing {tag}")

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        with _translated("listing images"):
            found = self.api.images(
                filters={"label": [f"{k}={v}" for k, v in labels.items()]}, quiet=True
            )
        return str(found[0]) if found else None

    def tag_image(self, image: str, ref: str) -> None:
        repository, version = _split_ref(ref)
        with _translated(f"tagging {image} as {ref}"):
            self.api.tag(image, repository, tag=version)

    def remove_image(self, image: str) -> bool:
        try:
            self.api.remove_image(image)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a container or another tag still uses it
                return False
            raise RuntimeFailure(f"removing image {image}: {exc.explanation or exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc
        return True

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        log: list[str] = []
        with _image_errors(f"building {context} as {tag} failed"):
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
        with _translated(f"creating a container from {spec.image}"):
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
        with _translated(f"starting container {container_id[:12]}"):
            self.api.start(container_id)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        timed_out = False
        try:
            result = self.api.wait(container_id, timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if timeout is None or not _is_timeout(exc):
                raise _engine_error(exc) from exc
            timed_out = True
            with _translated(f"stopping container {container_id[:12]}"):
                self.api.stop(container_id, timeout=STOP_GRACE_SECONDS)
                result = self.api.wait(container_id)
        except docker.errors.NotFound:
            return ExitStatus(None, error="the container disappeared")
        except docker.errors.APIError as exc:
            raise RuntimeFailure(f"waiting for {container_id[:12]}: {exc.explanation}") from exc
        code = int(result.get("StatusCode", -1))
        error = (result.get("Error") or {}).get("Message") or None
        oom = False
        if code != 0:
            try:
                state = self.api.inspect_container(container_id)["State"]
                oom = bool(state.get("OOMKilled"))
                error = error or state.get("Error") or None
            except docker.errors.NotFound:
                pass
        return ExitStatus(code, oom_killed=oom, timed_out=timed_out, error=error)

    def kill(self, container_id: str) -> None:
        try:
            self.api.kill(container_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running any more, which is what we wanted
                raise RuntimeFailure(f"killing {container_id[:12]}: {exc.explanation}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc

    def logs(self, container_id: str) -> bytes:
        try:
            return bytes(self.api.logs(container_id, stdout=True, stderr=True))
        except docker.errors.NotFound:
            return b""
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc

    def remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise RuntimeFailure(f"removing {container_id[:12]}: {exc.explanation}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc

    def health(self, container_id: str) -> str:
        with _translated(f"inspecting container {container_id[:12]}"):
            state = self.api.inspect_container(container_id)["State"]
        if not state.get("Running"):
            return "exited"
        return str((state.get("Health") or {}).get("Status") or "running")

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        with _translated(f"creating network {name}"):
            return str(self.api.create_network(name, driver="bridge", labels=dict(labels))["Id"])

    def remove_network(self, name: str) -> None:
        try:
            self.api.remove_network(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeFailure(f"removing network {name}: {exc.explanation}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _engine_error(exc) from exc

    def networks(self, labels: Mapping[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _translated("listing networks"):
            return [str(n["Name"]) for n in self.api.networks(filters=filters)]

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _translated("listing containers"):
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
