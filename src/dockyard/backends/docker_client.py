"""A connection to a Docker Engine (official ``docker`` SDK, low-level API client), and how
its failures become dockyard's: the engine away (:class:`EngineUnavailable`) or a refusal.

docker-py's dicts and exceptions stay in this module and the two that build on it
(:mod:`.docker_images`, :mod:`.local.runtime`); callers see dockyard's own types and errors.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.constants import DEFAULT_DOCKER_API_VERSION, DEFAULT_UNIX_SOCKET
from docker.utils import kwargs_from_env, version_lt

from dockyard.errors import EngineUnavailable, ImageError, RuntimeFailure

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


class DockerClient:
    """The engine's API, and the translation of its failures."""

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


def split_ref(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        return ref, None
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"
