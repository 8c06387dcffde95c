"""A node's folders as its agent sees them, the agent's verifier of requests, and what it
serves of volumes (their port on this node, and the leases on a manager)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dockyard.agent import auth, layout
from dockyard.disk.kept import Staging
from dockyard.disk.node_disk import LocalWorkspace

if TYPE_CHECKING:
    from dockyard.agent.node_volumes import NodeVolumes
    from dockyard.agent.volume_routes import LocalLeases


@dataclass
class NodeStore:
    """This node's folders, as the agent sees them (``inside``) and as containers bind
    them (``host``)."""

    node: str
    host: str
    inside: str
    key: bytes
    volumes: NodeVolumes | None = None  # (an agent that serves no volumes has none)
    leases: LocalLeases | None = None  # on a manager's agent: the leases it keeps

    def __post_init__(self) -> None:
        journal = Path(layout.node_dir(self.inside, self.node)) / ".nonces"
        self.verifier = auth.Verifier(self.key, self.node, journal)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        node_dir = Path(layout.node_dir(self.inside, self.node))
        node_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        node_dir.chmod(0o755)  # containers (any user) read outputs under it

    def here(self, path: PurePosixPath) -> Path:
        """A path under the host root, as the agent reaches it."""
        return Path(self.inside) / path.relative_to(self.host)

    def lock(self, staging: Staging) -> threading.Lock:
        """One call at a time on a staging folder (a discard never runs beside its commit)."""
        with self._locks_lock:
            return self._locks.setdefault(str(staging.path), threading.Lock())

    def unlock(self, staging: Staging) -> None:
        with self._locks_lock:
            self._locks.pop(str(staging.path), None)

    def on_host(self, path: Path) -> PurePosixPath:
        """Where a path the agent reaches is on the node's disk."""
        return PurePosixPath(self.host) / path.relative_to(self.inside)

    def outputs(self) -> Path:
        return self.here(layout.outputs_dir(self.host, self.node))

    def staging(self, body: dict[str, Any]) -> tuple[Staging, LocalWorkspace, PurePosixPath]:
        """The staging folder a request names (project, run, name), and its workspace."""
        project = layout.check_part(body.get("project"), "project")
        run = layout.check_part(body.get("run"), "run")
        name = layout.check_part(body.get("name"), "name")
        host = layout.staging_dir(self.host, self.node, project, run, name)
        workspace = LocalWorkspace(self.here(layout.project_dir(self.host, self.node, project)))
        return Staging(self.node, self.here(host)), workspace, host


__all__ = ["NodeStore"]
