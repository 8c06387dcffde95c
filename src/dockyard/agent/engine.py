"""The few Docker Engine API calls a manager's agent makes, over the engine's unix socket
(standard library only: the agent's image has no ``docker`` SDK). Only the agents on
manager nodes are given the socket: they keep the volume leases in Swarm's Raft store
(:mod:`dockyard.agent.leases`) and read which nodes are up."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any

from dockyard.errors import AgentFailure

API_VERSION = "v1.41"
TIMEOUT = 30.0


class EngineError(AgentFailure):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def conflict(self) -> bool:
        """An update refused for its version index: someone else updated first."""
        return self.status in (409, 500) and "out of sequence" in str(self)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self.path)
        self.sock = sock


class Engine:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = f"/{API_VERSION}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = _UnixConnection(self.socket_path)
        try:
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"the engine at {self.socket_path} did not answer: {exc}") from None
        finally:
            conn.close()
        if response.status >= 300:
            try:
                message = json.loads(raw).get("message") or response.reason
            except (ValueError, AttributeError):
                message = raw[:200].decode(errors="replace") or response.reason
            raise EngineError(f"{method} {path}: {message}", response.status)
        return json.loads(raw) if raw.strip() else None

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/nodes"))

    def configs(self, prefix: str) -> list[dict[str, Any]]:
        filters = json.dumps({"name": [prefix]})
        return list(self.call("GET", "/configs", params={"filters": filters}))


__all__ = ["Engine", "EngineError"]
