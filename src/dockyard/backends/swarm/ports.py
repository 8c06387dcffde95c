"""The storage ports on a cluster, through the node agents (:mod:`dockyard.agent`).

Outputs are kept on the node that made them, by digest, and fetched by the agent of the
node that needs them from an agent that has them (checked against the digest there). An
attempt's ``/out`` is a folder on its node, made, sealed and kept by that node's agent.
Inputs and the stream helper, which are this machine's files, are sent to a node's agent
as trees named by their digest, once per node and content. Logs stay on this machine.

Calls that the run loop makes itself (discarding a staging folder, asking whether an
output still exists) have a short timeout: a node that stopped answering must not stall
the loop; one that is gone is found lost by the runtime.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from dockyard.agent import layout
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.object_routes import OUTPUT_REFUSED
from dockyard.agent.trees import Bounds
from dockyard.disk import sealing
from dockyard.disk.kept import Staging, StoredOutput
from dockyard.disk.node_disk import safe_name
from dockyard.disk.sealing import Sealed
from dockyard.errors import DockyardError
from dockyard.execution.ports import NodeUnavailable, OutputsLost

LOOP_TIMEOUT = 5.0  # seconds, for a call the run loop waits for
QUICK_TIMEOUT = 30.0  # for a call that does no real work (asking what a node keeps)
WORK_TIMEOUT = 3600.0  # for one that does (sealing, fetching: silent until it is done)
ASK_AT_ONCE = 16  # nodes asked side by side whether they keep an output


class AgentUnavailable(NodeUnavailable):
    """A node's agent could not do what was asked."""


class AgentPool:
    """The agents of the nodes that are up, by node id (``host:port`` each)."""

    def __init__(self, addresses: Callable[[], Mapping[str, str]], key: bytes, root: str):
        self._addresses = addresses  # (on a Swarm, from the runtime's view of the nodes)
        self.key = key
        self.root = root

    def addresses(self) -> Mapping[str, str]:
        try:
            return dict(self._addresses())
        except DockyardError as exc:
            raise AgentUnavailable(f"the nodes' addresses: {exc.message}") from None

    def client(self, node: str, timeout: float | None = None) -> AgentClient:
        address = self.addresses().get(node)
        if address is None:
            raise AgentUnavailable(f"node {node} is not up (no agent to reach)")
        return AgentClient(address, self.key, node, timeout)

    def call(
        self, node: str, route: str, body: Mapping[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        try:
            return self.client(node, timeout).call("POST", route, dict(body))
        except AgentError as exc:
            raise AgentUnavailable(f"node {node}: {exc}") from None


def _staging_body(root: str, staging: Staging) -> dict[str, Any]:
    """What names a staging folder to its agent: its project, run and name."""
    projects = PurePosixPath(layout.node_dir(root, staging.node)) / "projects"
    project, work, run, name = PurePosixPath(staging.path).relative_to(projects).parts
    assert work == "work"
    return {"project": project, "run": run, "name": name}


class AgentOutputs:
    """Committed outputs, kept by the agents of the nodes that made or fetched them."""

    def __init__(self, pool: AgentPool, local: Path):
        self.pool = pool
        self.local = local  # this machine's copies, for locate()
        self._fetching: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def seal(self, staging: Staging) -> Sealed:
        """Seal and keep the output on its node (kept already: the loop's commit then only
        records it, and makes no call that could wait on a node)."""
        try:
            body = _staging_body(self.pool.root, staging)
            client = self.pool.client(staging.node, WORK_TIMEOUT)
            kept = client.call("POST", "staging/commit", body)
        except AgentError as exc:
            if exc.status == 404:  # the folder is gone: the attempt is lost
                raise FileNotFoundError(errno.ENOENT, str(exc)) from None
            if exc.status == OUTPUT_REFUSED:  # the step's doing: the attempt fails
                raise sealing.OutputRefused(str(exc)) from None
            raise AgentUnavailable(f"node {staging.node}: {exc}") from None
        changes = tuple(str(c) for c in kept.get("changes") or [])
        counts = (int(kept[name]) for name in ("size", "files", "data", "entries"))
        size, files, data, entries = counts
        return Sealed(str(kept["digest"]), size, files, changes, data, entries)

    def commit(self, staging: Staging, sealed: Sealed) -> StoredOutput:
        where = layout.object_dir(self.pool.root, staging.node, sealed.digest)
        return StoredOutput(
            sealed.digest, staging.node, str(where), sealed.size, sealed.files, sealed.changes
        )

    def discard(self, staging: Staging) -> None:
        with contextlib.suppress(AgentUnavailable):  # (cleared with the run's work later)
            self.pool.call(
                staging.node,
                "staging/discard",
                _staging_body(self.pool.root, staging),
                LOOP_TIMEOUT,
            )

    def holders(self, digest: str, timeout: float | None = None) -> tuple[list[str], list[str]]:
        """The nodes that are up and keep ``digest``, and those that did not answer (asked
        side by side: a node that does not answer costs one timeout, not one each)."""
        nodes = sorted(self.pool.addresses())
        if not nodes:
            return [], []

        def ask(node: str) -> bool | None:
            try:
                body = {"digests": [digest]}
                answer = self.pool.call(node, "objects/has", body, timeout or QUICK_TIMEOUT)
            except AgentUnavailable:
                return None
            return digest in (answer.get("present") or [])

        with ThreadPoolExecutor(max_workers=min(len(nodes), ASK_AT_ONCE)) as asking:
            answers = dict(zip(nodes, asking.map(ask, nodes), strict=True))
        return (
            [n for n, has in answers.items() if has],
            [n for n, has in answers.items() if has is None],
        )

    def exists(self, digest: str) -> bool:
        return bool(self.holders(digest, LOOP_TIMEOUT)[0])

    def locate(self, digest: str) -> Path:
        """A copy on this machine, fetched from a node that keeps it (checked)."""
        layout.check_digest(digest)
        here = self.local / digest
        if here.is_dir():
            return here
        for node in self.holders(digest)[0]:
            with contextlib.suppress(AgentError, AgentUnavailable):
                return self.pool.client(node).fetch_into(digest, self.local)
        raise FileNotFoundError(errno.ENOENT, f"no node that is up keeps output {digest[:12]}")

    def bind(self, digest: str, node: str) -> str:
        return str(layout.object_dir(self.pool.root, node, digest))

    def bring(self, digests: Sequence[str], node: str) -> None:
        wanted = list(dict.fromkeys(digests))
        answer = self.pool.call(node, "objects/has", {"digests": wanted}, QUICK_TIMEOUT)
        present = set(answer.get("present") or [])
        lost = []
        for digest in wanted:
            if digest in present:
                continue
            with self._lock:
                one = self._fetching.setdefault((node, digest), threading.Lock())
            with one:  # (readers on one node that need one output fetch it once)
                if not self._fetch(digest, node):
                    lost.append(digest)
        if lost:  # (all of them at once: the reader waits for each to be made again)
            named = ", ".join(d[:12] for d in lost)
            raise OutputsLost(lost, f"output(s) {named} kept on no node that is up")

    def _fetch(self, digest: str, node: str) -> bool:
        """Fetch ``digest`` to ``node`` from a node that keeps it; False when none does."""
        answer = self.pool.call(node, "objects/has", {"digests": [digest]}, QUICK_TIMEOUT)
        if digest in (answer.get("present") or []):
            return True  # (fetched meanwhile, for another reader)
        holders, silent = self.holders(digest)
        failures = []
        for holder in (n for n in holders if n != node):
            address = self.pool.addresses().get(holder)
            if address is None:
                continue
            body = {"digest": digest, "source": address, "source_node": holder}
            try:
                self.pool.call(node, "objects/fetch", body, WORK_TIMEOUT)
                return True
            except AgentUnavailable as exc:
                failures.append(exc.message)
        if failures or silent:  # (perhaps to be had later: not lost)
            why = "; ".join(failures) or f"{len(silent)} node(s) that are up did not answer"
            raise AgentUnavailable(f"output {digest[:12]}: {why}")
        return False


class AgentWorkspace:
    """Staging folders and stream pipes on the nodes; logs on this machine."""

    def __init__(self, pool: AgentPool, project: str, state_dir: Path):
        self.pool = pool
        self.project = layout.check_part(project, "project")
        self.logs = state_dir / "logs"
        # a file's status -> its digest, and what it holds (for a folder)
        self._digests: dict[tuple[str, int, int, int], tuple[str, Bounds | None]] = {}
        self._sent: set[tuple[str, str]] = set()  # (node, digest) kept there
        self._sending: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def staging(self, run_id: str, instance: str, attempt: int, node: str) -> Staging:
        name = f"{safe_name(instance)}.{attempt}"
        where = layout.staging_dir(self.pool.root, node, self.project, run_id, name)
        return Staging(node, Path(where))

    def make(self, staging: Staging) -> None:
        body = _staging_body(self.pool.root, staging)
        self.pool.call(staging.node, "staging/make", body, QUICK_TIMEOUT)

    def streams(
        self, run_id: str, unit: str, attempt: int, producers: Sequence[str], node: str
    ) -> Path:
        name = f"{safe_name(unit)}.{attempt}"
        body = {"project": self.project, "run": run_id, "name": name, "producers": [*producers]}
        return Path(str(self.pool.call(node, "streams/make", body, LOOP_TIMEOUT)["path"]))

    def seed(self, staging: Staging, sources: Sequence[tuple[Path, str]]) -> None:
        raise DockyardError(
            "files staged into an output folder before the start (a CWL tool's "
            "InitialWorkDirRequirement) are not supported on a cluster yet"
        )

    def provide(self, path: Path, node: str) -> str:
        """Send a file or folder of this machine to ``node``'s agent, once per content."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            lone = stat.S_ISREG(info.st_mode)
            if not (lone or stat.S_ISDIR(info.st_mode)):
                raise AgentUnavailable(f"{path}: neither a file nor a folder")
            digest, bounds = self._digest(path, fd, info)
            self._send(node, digest, path, fd if lone else None, bounds)
        finally:
            os.close(fd)
        where = layout.object_dir(self.pool.root, node, digest)
        return str(where / sealing.LONE_FILE) if lone else str(where)

    def _digest(self, path: Path, fd: int, info: os.stat_result) -> tuple[str, Bounds | None]:
        key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            known = self._digests.get(key)
        if known is None:
            if stat.S_ISREG(info.st_mode):
                known = (sealing.lone_file_digest(fd), None)
            else:
                tally = sealing.tree_tally(path)  # (sent as this; checked there)
                known = (tally.digest, Bounds.of(tally))
            with self._lock:
                self._digests[key] = known
        return known

    def _send(
        self, node: str, digest: str, path: Path, fd: int | None, bounds: Bounds | None
    ) -> None:
        with self._lock:
            if (node, digest) in self._sent:
                return
            one = self._sending.setdefault((node, digest), threading.Lock())
        with one:  # two attempts on one node that read one input send it once
            if (node, digest) in self._sent:
                return
            client = self.pool.client(node, WORK_TIMEOUT)
            try:
                present = client.call("POST", "objects/has", {"digests": [digest]})["present"]
                if digest not in present:
                    if fd is None:
                        client.put_tree(digest, path, bounds)
                    else:
                        client.put_lone_file(digest, fd)
            except AgentError as exc:
                raise AgentUnavailable(f"sending {path} to node {node}: {exc}") from None
            with self._lock:
                self._sent.add((node, digest))

    def log(self, run_id: str, instance: str, attempt: int) -> Path:
        return self.logs / run_id / f"{safe_name(instance)}.{attempt}.log"

    def clear(self) -> None:
        for node in sorted(self.pool.addresses()):
            with contextlib.suppress(AgentUnavailable):
                self.pool.call(node, "work/clear", {"project": self.project}, LOOP_TIMEOUT)


__all__ = ["AgentOutputs", "AgentPool", "AgentUnavailable", "AgentWorkspace"]
