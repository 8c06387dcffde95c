"""The node agent's HTTP server (``python3 -m dockyard.agent``).

Configuration by environment, as the Swarm service gives it:

``DOCKYARD_AGENT_NODE``      this node's Swarm id (the service templates ``{{.Node.ID}}``)
``DOCKYARD_AGENT_ROOT``      the agent root on the node's disk (what containers bind)
``DOCKYARD_AGENT_MOUNT``     where that root is in the agent's own file system (default: same)
``DOCKYARD_AGENT_KEY_FILE``  the cluster key (a Swarm secret under /run/secrets)
``DOCKYARD_AGENT_PORT``      the TCP port (default 7480), on every address of the node

Every request must be signed (:mod:`dockyard.agent.auth`); bodies are JSON, except a tree
sent or fetched (a tree stream, :mod:`dockyard.agent.trees`). Answers are JSON, signed.
Connections are taken and their heads read by :mod:`.gate` (one thread, under budgets that
no one without the key can exhaust); a signed request is then served by a thread of its
own, at most :data:`~dockyard.agent.gate.SERVED` at once.
"""

from __future__ import annotations

import io
import json
import os
import resource
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.agent import API, DEFAULT_PORT, auth, layout, object_routes, volume_routes
from dockyard.agent.chunked import Chunked
from dockyard.agent.engine import Engine, EngineError
from dockyard.agent.frames import FrameWriter
from dockyard.agent.gate import Gate, Limits, Refusal, refusal
from dockyard.agent.head import Head, answer
from dockyard.agent.leases import LeaseAccess, LeaseError
from dockyard.agent.node_store import NodeStore
from dockyard.agent.node_volumes import NodeVolumes
from dockyard.agent.object_routes import Refused
from dockyard.agent.plugin import SOCKET_DIR, PluginServer
from dockyard.agent.quietlog import QuietLog
from dockyard.agent.refused import Refused as VolumeRefused
from dockyard.agent.swarm_leases import SwarmLeases
from dockyard.agent.trees import Bounds, TreeError, receive_tree, write_tree
from dockyard.agent.volume_routes import AgentPeers, LocalLeases, RemoteLeases
from dockyard.disk.volumes import VolumeStore
from dockyard.errors import AgentFailure, DockyardError

MAX_JSON = 1 << 20
IDLE_SECONDS = 60.0  # silence within a signed request (a body being sent) that drops it
FILES = 65536  # descriptors the agent asks for: 512 heads, 128 served requests of ~67 each
# (a deep tree copied holds a descriptor for each folder down its path), and room to spare


class _Rest(io.RawIOBase):
    """The rest of a request: what the gate read past the head, then the socket."""

    def __init__(self, start: bytes, sock: socket.socket):
        self.start = memoryview(start)
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.start:
            size = min(len(buffer), len(self.start))
            buffer[:size] = self.start[:size]
            self.start = self.start[size:]
            return size
        return self.sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    """Serves one signed request whose head the gate read and the verifier checked."""

    server: AgentServer
    protocol_version = "HTTP/1.0"  # one request per connection; answers end at close
    timeout = IDLE_SECONDS  # a client that sends nothing for this long is dropped

    def __init__(
        self,
        request: socket.socket,
        client_address: tuple[str, int],
        server: AgentServer,
        head: Head,
        checked: auth.Checked,
    ):
        self.head, self.checked = head, checked
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # (the gate may have read past the head: that comes first)
        self.rfile = io.BufferedReader(_Rest(self.head.rest, self.connection))

    def handle(self) -> None:
        head = self.head
        self.close_connection = True
        self.command, self.path, self.request_version = head.method, head.path, head.version
        self.requestline, self.headers = head.line, head.headers
        try:
            self._serve(head.method)
            self.wfile.flush()
        except TimeoutError as exc:
            self.log_error("request timed out: %r", exc)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code >= 400:  # (refusals only: the log stays small)
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.line(f"{self.address_string()} {format % args}")

    def _serve(self, method: str) -> None:
        store = self.server.store
        checked = self.checked
        self.nonce = checked.nonce
        try:
            route = self.path.removeprefix(API).split("/")[1:]
            if method == "PUT" and len(route) == 2 and route[0] == "objects":
                self._answer(200, self._receive(route[1]))
                return
            if checked.streamed:
                raise Refused(400, "only a tree may be streamed")
            if method == "GET" and len(route) == 2 and route[0] == "objects":
                self._send(layout.check_digest(route[1]))
                return
            body = self._json_body(checked)
            if (method, "/".join(route)) == ("POST", "volumes/send"):
                self._stream(volume_routes.send_stream(store, body))
                return
            handler = ROUTES.get((method, "/".join(route)))
            if handler is None:
                raise Refused(404, f"no such call: {method} {self.path}")
            self._answer(200, handler(store, body))
        except Refused as exc:
            self._answer(exc.status, {"error": exc.message})
        except volume_routes.Refusal as exc:
            kind = {"kind": exc.kind} if exc.kind else {}
            self._answer(exc.status, {"error": exc.message, **kind})
        except (VolumeRefused, LeaseError) as exc:
            self._answer(409, {"error": str(exc)})
        except EngineError as exc:
            self._answer(503, {"error": f"the lease store: {exc}"})
        except (layout.LayoutError, TreeError) as exc:
            self._answer(400, {"error": str(exc)})
        except AgentFailure as exc:  # (a peer agent that failed us, one too slow)
            self._answer(502, {"error": str(exc)})
        except (DockyardError, ValueError) as exc:  # (a volume in use, a bad record)
            self._answer(409, {"error": str(exc)})
        except OSError as exc:
            self._answer(500, {"error": f"{exc.strerror or exc} ({exc.filename or ''})"})

    def _json_body(self, checked: auth.Checked) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if not 0 <= length <= MAX_JSON:
            raise Refused(413, "request too large")
        raw = self.rfile.read(length)
        if not self.server.store.verifier.body_matches(checked, self.headers, raw):
            raise Refused(403, "the body is not the one that was signed")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body is not a JSON object")
        return body

    def _receive(self, name: str) -> dict[str, Any]:
        digest, _, query = name.partition("?")  # (its bounds: in the path, which is signed)
        layout.check_digest(digest)
        store = self.server.store
        codings = (self.headers.get("Transfer-Encoding") or "").split(",")
        if codings[-1].strip().lower() != "chunked":  # (a token: any case, as the head took it)
            raise Refused(411, "a tree is sent chunked")
        bounds = Bounds.from_query(query)
        receive_tree(Chunked(self.rfile), digest, store.outputs(), bounds)  # (or it raises)
        return {"path": str(layout.object_dir(store.host, store.node, digest))}

    def _send(self, digest: str) -> None:
        tree = self.server.store.outputs() / digest
        if not tree.is_dir():
            raise Refused(404, f"no tree {digest[:12]} on this node")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        store = self.server.store
        self.send_header(auth.REPLY, auth.sign_reply(store.key, store.node, self.nonce, 200, None))
        self.end_headers()
        write_tree(tree, self.wfile)  # (checked by digest where it arrives)

    def _stream(self, write: Callable[[BinaryIO], object]) -> None:
        """Answer with a stream signed as a whole (cut short, it fails its check there)."""
        store = self.server.store
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(auth.REPLY, auth.sign_reply(store.key, store.node, self.nonce, 200, None))
        self.end_headers()
        out = FrameWriter(self.wfile, store.key, self.nonce)
        try:
            write(out)  # type: ignore[arg-type]
        except Exception as exc:  # (the answer has begun: the stream ends unsigned)
            self.log_message("sending a volume stream: %s", exc)
            self.close_connection = True
            return
        out.close()

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        store = self.server.store
        mac = auth.sign_reply(store.key, store.node, self.nonce, status, data)
        self.send_header(auth.REPLY, mac)
        self.end_headers()
        self.wfile.write(data)


class AgentServer(socketserver.TCPServer):
    """The agent on ``address``: :meth:`serve_forever` runs the gate; signed requests are
    served by threads of their own (``limits``: :class:`~dockyard.agent.gate.Limits`)."""

    allow_reuse_address = True
    request_queue_size = 1024  # (a burst of connects must not wait for SYN retries)

    def __init__(
        self,
        address: tuple[str, int],
        store: NodeStore,
        limits: Limits | None = None,
        log: QuietLog | None = None,
    ):
        super().__init__(address, socketserver.BaseRequestHandler)  # (the gate's Handler)
        self.store = store
        self.limits = limits or Limits()
        self.log = log or QuietLog()
        store.verifier.log = self.log.line  # (trouble with its journal: told in the agent's log)
        self.workers = threading.BoundedSemaphore(self.limits.served + self.limits.queued)
        self.slots = threading.BoundedSemaphore(self.limits.served)
        self.gate = Gate(self.socket, self.limits, self._on_head, self.log)
        self._serving = threading.Event()
        self._serving.set()  # (set: not serving)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving.clear()
        try:
            self.gate.run(poll_interval)
        finally:
            self._serving.set()

    def shutdown(self) -> None:
        self.gate.stop()
        self._serving.wait()

    def server_close(self) -> None:
        super().server_close()
        self.gate.close()

    def _on_head(self, sock: socket.socket, address: tuple[str, int], head: Head) -> Refusal | None:
        """In the gate: a request that is not signed is refused there; a signed one is
        served by a thread of its own, or refused (signed) when too many are."""
        try:
            checked = self.store.verifier.check(head.method, head.path, head.headers)
        except auth.AuthError as exc:
            return refusal(403, str(exc), drain=_declared(head))
        if not self.workers.acquire(blocking=False):
            message = f"{self.limits.served + self.limits.queued} requests at once: try again"
            return self._busy(checked, message, _declared(head))
        thread = threading.Thread(target=self._serve, args=(sock, address, head, checked))
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # (no thread to be had: the pids limit, say)
            self.workers.release()
            return self._busy(checked, f"cannot serve now: {exc}", _declared(head))
        return None

    def _serve(
        self, sock: socket.socket, address: tuple[str, int], head: Head, checked: auth.Checked
    ) -> None:
        try:
            if self.slots.acquire(timeout=self.limits.slot_wait):
                try:
                    Handler(sock, address, self, head, checked)
                finally:
                    self.slots.release()
            else:
                busy = self._busy(checked, f"no slot in {self.limits.slot_wait} s", 0)
                sock.settimeout(IDLE_SECONDS)
                sock.sendall(busy.answer)
        except Exception as exc:  # (a thread's end is never silent)
            self.log.line(f"{address[0]} {head.line}: {type(exc).__name__}: {exc}")
        finally:
            self.workers.release()
            self.shutdown_request(sock)

    def _busy(self, checked: auth.Checked, message: str, drain: int) -> Refusal:
        """A 503, signed (the client knows it is its agent that is busy)."""
        body = json.dumps({"error": message}).encode()
        mac = auth.sign_reply(self.store.key, self.store.node, checked.nonce, 503, body)
        return Refusal(503, message, answer(503, body, {auth.REPLY: mac}), drain)


ROUTES: dict[tuple[str, str], Callable[[NodeStore, dict[str, Any]], dict[str, Any]]] = {
    **volume_routes.ROUTES,
    **object_routes.ROUTES,
}


def _declared(head: Head) -> int:
    """The body a request says it has, up to MAX_JSON (read out before a refusal's close)."""
    length = head.headers.get("Content-Length") or "0"
    return min(int(length), MAX_JSON) if length.isdigit() else 0


def from_environment() -> AgentServer:
    env = os.environ
    node = layout.check_part(env.get("DOCKYARD_AGENT_NODE"), "DOCKYARD_AGENT_NODE")
    host = env.get("DOCKYARD_AGENT_ROOT") or layout.DEFAULT_ROOT
    key = auth.read_key(env["DOCKYARD_AGENT_KEY_FILE"])
    port = int(env.get("DOCKYARD_AGENT_PORT") or DEFAULT_PORT)
    store = NodeStore(node, host, env.get("DOCKYARD_AGENT_MOUNT") or host, key)
    _add_volumes(store, port, env)
    return AgentServer((env.get("DOCKYARD_AGENT_ADDRESS") or "", port), store)


def _add_volumes(store: NodeStore, port: int, env: os._Environ[str]) -> None:
    """Volumes, when the agent is told where the leases are: the engine's socket (a
    manager's agent), or the managers' agents (``ID@HOST:PORT,...``)."""
    managers = {}
    for entry in filter(None, (env.get("DOCKYARD_AGENT_MANAGERS") or "").split(",")):
        manager, _, address = entry.partition("@")
        managers[layout.check_part(manager, "manager")] = address
    engine = env.get("DOCKYARD_AGENT_ENGINE")
    leases: LeaseAccess
    if engine:
        store.leases = LocalLeases(SwarmLeases(Engine(engine)), port, store.node, time.time)
        leases = store.leases
    elif managers:
        leases = RemoteLeases(managers, store.key, store.node)
    else:
        return
    node_dir = Path(layout.node_dir(store.inside, store.node))
    store.volumes = NodeVolumes(
        node=store.node,
        store=VolumeStore(node_dir),
        host_root=Path(layout.node_dir(store.host, store.node)) / "volumes",
        leases=leases,
        peers=AgentPeers(store.key),
        replicas=int(env.get("DOCKYARD_AGENT_REPLICAS") or 1),
    )


def main() -> None:
    try:
        server = from_environment()
        volumes = server.store.volumes
        plugin_dir = os.environ.get("DOCKYARD_AGENT_PLUGIN_DIR") or SOCKET_DIR
        if volumes is not None:
            volumes.resume()
            PluginServer(Path(plugin_dir) / "dockyard.sock", volumes).start()
    except (KeyError, OSError, ValueError, auth.AuthError) as exc:
        sys.exit(f"dockyard agent: cannot start: {exc}")
    _more_files()
    host, port = server.server_address[:2]
    print(f"dockyard agent {server.store.node} on {host!s}:{port}", flush=True)
    server.serve_forever()


def _more_files() -> None:
    """Room for the gate's budgets: a container's soft limit may be 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES if hard == resource.RLIM_INFINITY else min(FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


__all__ = ["AgentServer", "NodeStore", "main"]
