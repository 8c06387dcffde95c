"""Docker's volume plugin protocol, served by the agent on its node's
``/run/docker/plugins/dockyard.sock``: ``docker run -v NAME:/data --volume-driver dockyard``
(and Swarm mounts with ``volume-driver=dockyard``) mount the volumes the agents keep.

The socket is root's alone (0600 in a folder of root's): whoever can talk to it can mount
any volume, like whoever can talk to the engine. Docker calls it as plain HTTP over the
socket, a JSON object in and out; an ``Err`` in the answer is what ``docker`` prints. The
driver's scope is ``global``: a name means one volume on the whole swarm, and the engine
asks the driver, not its own records, whether it exists.

``Mount`` does no full copy (Docker gives it two minutes): what it may fetch is the
increment between the snapshot this node keeps and the published one; planned moves and
replication put that snapshot here beforehand (:mod:`dockyard.agent.node_volumes`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from dockyard.agent.leases import LeaseError
from dockyard.agent.node_volumes import NodeVolumes
from dockyard.agent.refused import Refused

NAME = "dockyard"
SOCKET_DIR = "/run/docker/plugins"
MAX_BODY = 1 << 16
SLOW_CALL = 0.25  # seconds: a call that took longer is logged (Mount and Unmount log each)
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class _Handler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "docker"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"agent plugin: {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # (the refusals are in the answers, which the engine logs and prints)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._answer({"Err": "a body that is too large, or not counted"}, 400)
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._answer({"Err": "the body is not a JSON object"}, 400)
            return
        call = CALLS.get(self.path)
        if call is None:
            self._answer({"Err": f"no such call: {self.path}"}, 404)
            return
        began = time.monotonic()
        try:
            self._answer({"Err": "", **call(self.server.volumes, body)})
        except (Refused, LeaseError) as exc:
            self._answer({"Err": str(exc)})
        except Exception as exc:  # (anything else, said to Docker rather than a hang-up)
            self._answer({"Err": f"dockyard agent: {type(exc).__name__}: {exc}"})
        took = time.monotonic() - began
        if took >= SLOW_CALL:
            self.server.volumes.log(f"{self.path} of {body.get('Name')}: {took:.3f} s")

    def _answer(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _name(body: dict[str, Any]) -> str:
    name = body.get("Name")
    if not isinstance(name, str):
        raise Refused("Name: the volume's name")
    return name


def _id(body: dict[str, Any]) -> str:
    mount_id = body.get("ID")
    if not isinstance(mount_id, str) or not mount_id or len(mount_id) > 128:
        raise Refused("ID: the mount's id")
    return mount_id


def _describe(volumes: NodeVolumes, name: str, lease: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"Name": name}
    if volumes.store.exists(name) and volumes.mounted(name):
        found["Mountpoint"] = volumes.mountpoint(name)
    if lease is not None:
        found["Status"] = {
            "owner": lease.owner,
            "epoch": lease.epoch,
            "held": lease.held,
            "snapshot": lease.snapshot,
            "holders": list(lease.holders),
        }
    return found


def _create(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("Opts") or {}
    if options:
        raise Refused(f"the dockyard driver takes no options (given: {', '.join(options)})")
    volumes.create(_name(body))
    return {}


def _get(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    name = _name(body)
    lease, _ = volumes.leases.get(name)
    if lease is None:
        raise Refused(f"no volume {name!r} on this swarm")
    return {"Volume": _describe(volumes, name, lease)}


def _list(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    return {"Volumes": [_describe(volumes, lease.volume, lease) for lease in volumes.leases.all()]}


def _path(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    name = _name(body)
    mounted = volumes.store.exists(name) and volumes.mounted(name)
    return {"Mountpoint": volumes.mountpoint(name) if mounted else ""}


def _unmount(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    volumes.unmount(_name(body), _id(body))
    return {}


def _remove(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    volumes.forget(_name(body))
    return {}


def _activate(volumes: NodeVolumes, body: dict[str, Any]) -> dict[str, Any]:
    """An engine that starts activates its plugins: the mounts an engine before it made
    are void (their containers died with it)."""
    volumes.void_mounts()
    return {"Implements": ["VolumeDriver"]}


CALLS: dict[str, Callable[[NodeVolumes, dict[str, Any]], dict[str, Any]]] = {
    "/Plugin.Activate": _activate,
    "/VolumeDriver.Capabilities": lambda volumes, body: {"Capabilities": {"Scope": "global"}},
    "/VolumeDriver.Create": _create,
    "/VolumeDriver.Remove": _remove,
    "/VolumeDriver.Mount": lambda v, b: {"Mountpoint": v.mount(_name(b), _id(b))},
    "/VolumeDriver.Unmount": _unmount,
    "/VolumeDriver.Path": _path,
    "/VolumeDriver.Get": _get,
    "/VolumeDriver.List": _list,
}


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, volumes: NodeVolumes):
        self.volumes = volumes
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # (left by an agent that was killed)
        old = os.umask(0o177)  # the socket is made 0600: root's alone
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True)
        thread.start()
        return thread


__all__ = ["CALLS", "NAME", "SOCKET_DIR", "PluginServer"]
