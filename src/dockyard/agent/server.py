"""The node agent's HTTP server (``python3 -m dockyard.agent``).

Configuration by environment, as the Swarm service gives it:

``DOCKYARD_AGENT_NODE``      this node's Swarm id (the service templates ``{{.Node.ID}}``)
``DOCKYARD_AGENT_ROOT``      the agent root on the node's disk (what containers bind)
``DOCKYARD_AGENT_MOUNT``     where that root is in the agent's own file system (default: same)
``DOCKYARD_AGENT_KEY_FILE``  the cluster key (a Swarm secret under /run/secrets)
``DOCKYARD_AGENT_PORT``      the TCP port (default 7480), on every address of the node

Every request must be signed (:mod:`dockyard.agent.auth`); bodies are JSON, except a tree
sent or fetched (a tar stream, :mod:`dockyard.agent.trees`). Answers are JSON, signed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.agent import API, DEFAULT_PORT, auth, layout, volume_routes
from dockyard.agent.chunked import Chunked
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.engine import Engine, EngineError
from dockyard.agent.frames import FrameWriter
from dockyard.agent.leases import LeaseError, SwarmLeases
from dockyard.agent.node_store import NodeStore
from dockyard.agent.node_volumes import NodeVolumes
from dockyard.agent.node_volumes import Refused as VolumeRefused
from dockyard.agent.plugin import SOCKET_DIR, PluginServer
from dockyard.agent.trees import TreeError, receive_tree, write_tree
from dockyard.agent.volume_routes import AgentPeers, LeaseService, RemoteLeases, ServiceLeases
from dockyard.errors import DockyardError
from dockyard.storage import outputs as sealing
from dockyard.storage.volumes import VolumeStore

MAX_JSON = 1 << 20
VERSION = "1"
IDLE_SECONDS = 60.0  # silence within a request (a body being sent) that drops it
HEAD_SECONDS = 10.0  # for the request line and headers, all of them
MAX_CONNECTIONS = 128
SLOT_WAIT = 30.0  # how long a connection waits for a free slot before it is closed


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.0"  # one request per connection; answers end at close
    timeout = IDLE_SECONDS  # a client that sends nothing for this long is dropped

    def setup(self) -> None:
        super().setup()
        # The whole head within HEAD_SECONDS, however slowly its bytes come.
        self.head_deadline = threading.Timer(HEAD_SECONDS, self._drop)
        self.head_deadline.daemon = True
        self.head_deadline.start()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.head_deadline.cancel()
        super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code >= 400:  # (refusals only: the log stays small)
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"agent: {self.address_string()} {format % args}\n")

    def _serve(self, method: str) -> None:
        self.head_deadline.cancel()  # (the head is in)
        store = self.server.store
        try:
            checked = store.verifier.check(method, self.path, self.headers)
        except auth.AuthError as exc:
            self._answer(403, {"error": str(exc)}, nonce="")
            return
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
        except (VolumeRefused, LeaseError, volume_routes.Unavailable) as exc:
            self._answer(409, {"error": str(exc)})
        except EngineError as exc:
            self._answer(503, {"error": f"the lease store: {exc}"})
        except (layout.LayoutError, TreeError) as exc:
            self._answer(400, {"error": str(exc)})
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

    def _receive(self, digest: str) -> dict[str, Any]:
        layout.check_digest(digest)
        store = self.server.store
        if "chunked" not in (self.headers.get("Transfer-Encoding") or ""):
            raise Refused(411, "a tree is sent chunked")
        where = receive_tree(Chunked(self.rfile), digest, store.outputs())
        return {"path": str(layout.object_dir(store.host, store.node, digest)), "kept": bool(where)}

    def _send(self, digest: str) -> None:
        tree = self.server.store.outputs() / digest
        if not tree.is_dir():
            raise Refused(404, f"no tree {digest[:12]} on this node")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
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

    def _answer(self, status: int, body: dict[str, Any], nonce: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if nonce != "":
            store = self.server.store
            mac = auth.sign_reply(store.key, store.node, self.nonce, status, data)
            self.send_header(auth.REPLY, mac)
        self.end_headers()
        self.wfile.write(data)


# -- calls ------------------------------------------------------------------------------------


def _health(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    return {"node": store.node, "root": store.host, "version": VERSION}


def _make(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    staging, workspace, host = store.staging(body)
    with store.lock(staging):
        workspace.make(staging)
    return {"path": str(host)}


def _commit(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    """Seal a staging folder and keep it by its digest, on this node (where it is)."""
    staging, _, _ = store.staging(body)
    with store.lock(staging):
        if not staging.path.is_dir():
            raise Refused(404, "the staging folder is gone")
        sealed = sealing.seal_tree(staging.path)
        sealing.place(staging.path, sealed, store.outputs())
    store.unlock(staging)
    return {
        "digest": sealed.digest,
        "size": sealed.size,
        "files": sealed.files,
        "changes": list(sealed.changes),
        "path": str(layout.object_dir(store.host, store.node, sealed.digest)),
    }


def _discard(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    staging, _, _ = store.staging(body)
    with store.lock(staging):
        sealing.discard(staging.path)
    store.unlock(staging)
    return {}


def _clear(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    project = layout.check_part(body.get("project"), "project")
    work = store.here(layout.project_dir(store.host, store.node, project)) / "work"
    sealing.discard(work)
    return {}


def _streams(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    """A streamed chain's FIFOs, named like a staging folder (the chain and its attempt)."""
    staging, workspace, _ = store.staging(body)
    producers = body.get("producers")
    if not isinstance(producers, list) or not all(isinstance(p, str) for p in producers):
        raise Refused(400, "producers: a list of names")
    folder = workspace.make_streams(staging.path.parent.name, staging.path.name, producers)
    return {"path": str(store.on_host(folder))}


def _has(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    digests = body.get("digests")
    if not isinstance(digests, list):
        raise Refused(400, "digests: a list")
    root = store.outputs()
    return {"present": [d for d in map(layout.check_digest, digests) if (root / d).is_dir()]}


def _fetch(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    """Get a tree from the agent at ``source`` (host:port) and keep it, checked."""
    digest = layout.check_digest(body.get("digest"))
    source, source_node = body.get("source"), body.get("source_node")
    if not isinstance(source, str) or not isinstance(source_node, str):
        raise Refused(400, "source, source_node: the agent that holds the tree, and its node")
    where = layout.object_dir(store.host, store.node, digest)
    if not (store.outputs() / digest).is_dir():
        try:
            AgentClient(source, store.key, source_node).fetch_into(digest, store.outputs())
        except AgentError as exc:
            raise Refused(502, f"from {source}: {exc}") from None
    return {"path": str(where)}


ROUTES: dict[tuple[str, str], Callable[[NodeStore, dict[str, Any]], dict[str, Any]]] = {
    **volume_routes.ROUTES,
    ("GET", "health"): _health,
    ("POST", "staging/make"): _make,
    ("POST", "staging/commit"): _commit,
    ("POST", "staging/discard"): _discard,
    ("POST", "streams/make"): _streams,
    ("POST", "work/clear"): _clear,
    ("POST", "objects/has"): _has,
    ("POST", "objects/fetch"): _fetch,
}


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # (a burst of readers must not wait for SYN retries)

    def __init__(self, address: tuple[str, int], store: NodeStore):
        super().__init__(address, Handler)
        self.store = store
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """At most MAX_CONNECTIONS served at once; one more waits a while for a slot."""
        if not self.slots.acquire(timeout=SLOT_WAIT):
            self.shutdown_request(request)
            return
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


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
    leases: ServiceLeases | RemoteLeases
    if engine:
        store.lease_service = LeaseService(SwarmLeases(Engine(engine)), port)
        leases = ServiceLeases(store.lease_service, store.node, time.time)
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
    host, port = server.server_address[:2]
    print(f"dockyard agent {server.store.node} on {host!s}:{port}", flush=True)
    server.serve_forever()


__all__ = ["AgentServer", "NodeStore", "main"]
