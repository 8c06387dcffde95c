"""Talking to a node agent: signed requests, checked answers, trees in and out."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockyard.agent import API, auth
from dockyard.agent.trees import TreeError, receive_tree, write_lone_file, write_tree

TIMEOUT = 30.0  # seconds without a byte from the agent
PIPE_CHUNK = 1 << 20


class AgentError(Exception):
    """The agent could not be reached, refused, or answered what it should not have."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AgentClient:
    def __init__(self, address: str, key: bytes, timeout: float = TIMEOUT):
        self.address = address  # host:port
        self.key = key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AgentClient({self.address!r})"

    # -- calls ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.call("GET", "health")

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        conn, nonce = self._request(method, f"{API}/{route}", data)
        try:
            response = conn.getresponse()
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
        conn, nonce = self._request("GET", f"{API}/objects/{digest}", b"")
        try:
            response = conn.getresponse()
            if response.status != 200:
                self._checked(response, nonce, response.read())
            auth.check_reply(self.key, nonce, 200, None, response.headers)
            return receive_tree(response, digest, store)
        except auth.AuthError as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        except TreeError as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            conn.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        host, _, port = self.address.rpartition(":")
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout)

    def _request(
        self, method: str, path: str, data: bytes
    ) -> tuple[http.client.HTTPConnection, str]:
        headers = auth.sign_request(self.key, method, path, data)
        if data:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=data or None, headers=headers)
        except OSError as exc:
            conn.close()
            raise AgentError(f"agent {self.address}: {exc}") from None
        return conn, headers[auth.NONCE]

    def _put(self, digest: str, write: Any) -> dict[str, Any]:
        path = f"{API}/objects/{digest}"
        headers = auth.sign_request(self.key, "PUT", path, None)
        headers["Content-Type"] = "application/x-tar"
        headers["Transfer-Encoding"] = "chunked"
        conn = self._connection()
        reader, writer = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(writer, "wb") as pipe:
                    write(pipe)
            except BaseException as exc:  # (handed to the caller below)
                failure.append(exc)

        import threading

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        try:
            with os.fdopen(reader, "rb") as pipe:
                conn.request("PUT", path, body=_chunks(pipe), headers=headers, encode_chunked=True)
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
            auth.check_reply(self.key, nonce, response.status, raw, response.headers)
        except auth.AuthError as exc:
            detail = raw[:200].decode(errors="replace") if response.status == 403 else ""
            raise AgentError(f"agent {self.address}: {exc} {detail}".strip()) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise AgentError(f"agent {self.address}: an answer that is not JSON") from None
        if response.status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise AgentError(f"agent {self.address}: {message or response.reason}", response.status)
        if not isinstance(answer, dict):
            raise AgentError(f"agent {self.address}: an answer that is not a JSON object")
        return answer


def _chunks(pipe: Any) -> Iterator[bytes]:
    while chunk := pipe.read(PIPE_CHUNK):
        yield chunk
