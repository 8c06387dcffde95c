"""Talking to a node agent: signed requests, checked answers, trees in and out.

A call waits as long as the agent works on it (sealing or fetching a large tree takes what
it takes), unless the caller gives a timeout; a peer that vanished (a node cut off) is
found by TCP keepalives within about :data:`DEAD_PEER_SECONDS`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dockyard.agent import API, auth
from dockyard.agent.frames import FrameReader
from dockyard.agent.trees import TreeError, Writable, receive_tree, write_lone_file, write_tree

CONNECT_TIMEOUT = 10.0
UNACKED_MS = 60_000  # data sent and not acknowledged for this long: the peer is gone
PIPE_CHUNK = 1 << 20
KEEPALIVE = (10, 5, 4)  # idle seconds, seconds between probes, probes
DEAD_PEER_SECONDS = KEEPALIVE[0] + KEEPALIVE[1] * KEEPALIVE[2]


class AgentError(Exception):
    """The agent could not be reached, refused, or answered what it should not have."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind  # what kind of refusal the agent said it was, if it said


class _Connection(http.client.HTTPConnection):
    """Connects within CONNECT_TIMEOUT, then reads with ``read_timeout`` (None: as long as
    the peer is alive, which keepalives tell)."""

    def __init__(self, host: str, port: int, read_timeout: float | None):
        connect = CONNECT_TIMEOUT if read_timeout is None else min(CONNECT_TIMEOUT, read_timeout)
        super().__init__(host, port, timeout=connect)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = KEEPALIVE
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_MS)
        self.sock.settimeout(self.read_timeout)


class AgentClient:
    def __init__(self, address: str, key: bytes, node: str, timeout: float | None = None):
        self.address = address  # host:port
        self.key = key
        self.node = node  # whose agent it is: requests are signed for it alone
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AgentClient({self.address!r}, node {self.node!r})"

    # -- calls ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.call("GET", "health")

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        conn, response, nonce = self._request(method, f"{API}/{route}", data)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            conn.close()
        return self._checked(response, nonce, raw)

    def put_tree(self, digest: str, source: Path) -> dict[str, Any]:
        """Send the folder ``source`` to be kept as ``digest`` (checked there)."""
        return self._put(digest, lambda pipe: write_tree(source, pipe))

    def put_lone_file(self, digest: str, fd: int) -> dict[str, Any]:
        """Send the open file ``fd`` to be kept as a tree that holds it alone."""
        return self._put(digest, lambda pipe: write_lone_file(fd, pipe))

    def fetch_into(self, digest: str, store: Path) -> Path:
        """Get the tree ``digest`` and keep it in ``store`` once it checks out."""
        conn, response, nonce = self._request("GET", f"{API}/objects/{digest}", b"")
        try:
            if response.status != 200:
                self._checked(response, nonce, response.read())
            auth.check_reply(self.key, self.node, nonce, 200, None, response.headers)
            return receive_tree(response, digest, store)
        except (auth.AuthError, TreeError, OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def stream(self, route: str, body: dict[str, Any]) -> Iterator[FrameReader]:
        """A call whose answer is a byte stream, signed as a whole (:mod:`.frames`): the
        reader's end comes only once the signature checked out."""
        conn, response, nonce = self._request("POST", f"{API}/{route}", json.dumps(body).encode())
        try:
            if response.status != 200:
                self._checked(response, nonce, response.read())
            try:
                auth.check_reply(self.key, self.node, nonce, 200, None, response.headers)
            except auth.AuthError as exc:
                raise AgentError(f"agent {self.address}: {exc}") from None
            yield FrameReader(response, self.key, nonce)
        finally:
            conn.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, data: bytes
    ) -> tuple[_Connection, http.client.HTTPResponse, str]:
        """Send one signed request (a JSON body, or none); its connection (for the caller
        to close), the answer's head, and the request's nonce."""
        headers = auth.sign_request(self.key, self.node, method, path, data)
        if data:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=data or None, headers=headers)
            return conn, conn.getresponse(), headers[auth.NONCE]
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentError(f"agent {self.address}: {exc}") from None

    def _connection(self) -> _Connection:
        host, _, port = self.address.rpartition(":")
        return _Connection(host.strip("[]"), int(port), self.timeout)

    def _put(self, digest: str, write: Callable[[Writable], None]) -> dict[str, Any]:
        path = f"{API}/objects/{digest}"
        headers = auth.sign_request(self.key, self.node, "PUT", path, None)
        headers["Content-Type"] = "application/x-tar"
        headers["Transfer-Encoding"] = "chunked"
        conn = self._connection()
        reader, writer = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(writer, "wb") as pipe:
                    write(pipe)
            except BrokenPipeError:
                pass  # the agent stopped reading: its answer says why
            except BaseException as exc:  # (handed to the caller below)
                failure.append(exc)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        try:
            with os.fdopen(reader, "rb") as pipe:
                conn.connect()  # (a node that does not answer is that, not a refusal)
                # Refused half-way, the agent answers and stops reading: its answer says why.
                with contextlib.suppress(OSError):
                    conn.request(
                        "PUT", path, body=_chunks(pipe), headers=headers, encode_chunked=True
                    )
                response = conn.getresponse()
                raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            producer.join()
            conn.close()
        if failure:
            raise AgentError(f"sending {digest[:12]}: {failure[0]}")
        return self._checked(response, headers[auth.NONCE], raw)

    def _checked(
        self, response: http.client.HTTPResponse, nonce: str, raw: bytes
    ) -> dict[str, Any]:
        try:
            auth.check_reply(self.key, self.node, nonce, response.status, raw, response.headers)
        except auth.AuthError as exc:
            detail = raw[:200].decode(errors="replace") if response.status == 403 else ""
            raise AgentError(f"agent {self.address}: {exc} {detail}".strip()) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise AgentError(f"agent {self.address}: an answer that is not JSON") from None
        if response.status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            kind = answer.get("kind") if isinstance(answer, dict) else None
            raise AgentError(
                f"agent {self.address}: {message or response.reason}",
                response.status,
                kind if isinstance(kind, str) else None,
            )
        if not isinstance(answer, dict):
            raise AgentError(f"agent {self.address}: an answer that is not a JSON object")
        return answer


def _chunks(pipe: Any) -> Iterator[bytes]:
    while chunk := pipe.read(PIPE_CHUNK):
        yield chunk
