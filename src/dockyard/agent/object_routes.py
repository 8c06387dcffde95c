"""The agent's calls on trees and work folders (the JSON ones; trees themselves are
streamed by the server), by (method, route)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from dockyard.agent import layout
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.node_store import NodeStore
from dockyard.disk import keeping, sealing
from dockyard.errors import AgentFailure

VERSION = "1"
OUTPUT_REFUSED = 422  # a staging folder not kept as an output (too deep, too many entries)


class Refused(AgentFailure):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
        try:
            sealed = sealing.seal_tree(staging.path)
        except sealing.OutputRefused as exc:  # (the step's doing: its attempt fails)
            raise Refused(OUTPUT_REFUSED, exc.message) from None
        keeping.keep(staging.path, sealed, store.outputs())
    store.unlock(staging)
    return {
        "digest": sealed.digest,
        "size": sealed.size,
        "files": sealed.files,
        "data": sealed.data,
        "entries": sealed.entries,
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
    present = [d for d in map(layout.check_digest, digests) if (root / d).is_dir()]
    records = {d: asdict(r) for d in present if (r := keeping.read_record(root, d)) is not None}
    return {"present": present, "records": records}  # (the most a fetch of each carries)


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
    ("GET", "health"): _health,
    ("POST", "staging/make"): _make,
    ("POST", "staging/commit"): _commit,
    ("POST", "staging/discard"): _discard,
    ("POST", "streams/make"): _streams,
    ("POST", "work/clear"): _clear,
    ("POST", "objects/has"): _has,
    ("POST", "objects/fetch"): _fetch,
}


__all__ = ["ROUTES", "VERSION", "Refused"]
