"""Fakes of the storage ports (:mod:`dockyard.execution.ports`) for tests: they model *where
bytes live*, not how they are hashed or copied efficiently.

- :class:`FakeOutputs` keeps committed outputs per node: a node's "disk" is a folder under
  the root it is given. An output is on the node whose staging it was; bringing it to
  another node fetches (copies) it there and counts the fetch; :meth:`FakeOutputs.forget`
  loses a node with its disk.
- :class:`FakeWorkspace` makes staging folders on their node's disk, stream FIFOs and log
  paths under its root.
- :class:`~dockyard.testing.fake_volumes.FakeVolumes` (a module of its own) does the same
  for named volumes.

The contract suites in ``tests/contract`` run each of these beside its local
implementation; where they disagree, the local one is right.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from dockyard.disk import keeping, safecopy, safefs, sealing
from dockyard.disk.kept import Staging, StoredOutput
from dockyard.disk.node_disk import make_fifos, safe_name, seed_folder
from dockyard.disk.sealing import Sealed
from dockyard.execution.ports import OutputsLost

_DIGEST = re.compile(r"[0-9a-f]{64}")


def node_disk(root: Path, node: str) -> Path:
    """The folder that stands for ``node``'s disk under ``root``."""
    return root / "nodes" / safe_name(node)


# -- outputs ----------------------------------------------------------------------------------


class FakeOutputs:
    """Content-addressed outputs kept on the disks of the nodes that made or fetched them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fetches = 0  # copies made by bind() to a node that lacked the output
        self._lock = threading.Lock()

    def disk(self, node: str) -> Path:
        return node_disk(self.root, node) / "outputs"

    def seal(self, staging: Staging) -> Sealed:
        return sealing.seal_tree(staging.path)

    def commit(self, staging: Staging, sealed: Sealed) -> StoredOutput:
        where = keeping.keep(staging.path, sealed, self.disk(staging.node))
        return StoredOutput(
            sealed.digest, staging.node, str(where), sealed.size, sealed.files, sealed.changes
        )

    def discard(self, staging: Staging) -> None:
        sealing.discard(staging.path)

    def holders(self, digest: str) -> list[Path]:
        """Where ``digest`` is kept: one folder per node that has it."""
        if not _DIGEST.fullmatch(digest):
            return []
        nodes = self.root / "nodes"
        disks = sorted(nodes.iterdir()) if nodes.is_dir() else []
        return [d / "outputs" / digest for d in disks if (d / "outputs" / digest).is_dir()]

    def exists(self, digest: str) -> bool:
        return bool(self.holders(digest))

    def locate(self, digest: str) -> Path:
        found = self.holders(digest)
        if not found:
            raise FileNotFoundError(f"no node has output {digest!r}")
        return found[0]

    def bind(self, digest: str, node: str) -> str:
        return str(self.disk(node) / digest)

    def bring(self, digests: Sequence[str], node: str) -> None:
        """Fetch (copy) each output a node lacks from a node that has it, and count it."""
        for digest in digests:
            target = self.disk(node) / digest
            with self._lock:
                if target.is_dir():
                    continue
                found = self.holders(digest)
                if not found:
                    raise OutputsLost([digest], f"no node has output {digest[:12]}")
                self.disk(node).mkdir(parents=True, exist_ok=True)
                incoming = self.disk(node) / f".fetching-{uuid.uuid4().hex}"
                shutil.copytree(found[0], incoming, symlinks=True, copy_function=_copy_sparse)
                os.rename(incoming, target)
                self.fetches += 1

    def forget(self, node: str) -> None:
        """Lose ``node`` and its disk: outputs only it had no longer exist."""
        safefs.rmtree(node_disk(self.root, node))


def _copy_sparse(source: str, target: str) -> None:
    """``shutil.copy2``, but holes stay holes (as an agent's fetch keeps them)."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            safecopy.copy_data(src, dst, os.fstat(src).st_size)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    shutil.copystat(source, target)


# -- work folders -----------------------------------------------------------------------------


class FakeWorkspace:
    """Staging folders on their node's disk; stream FIFOs and logs beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def staging(self, run_id: str, instance: str, attempt: int, node: str) -> Staging:
        run = node_disk(self.root, node) / "work" / safe_name(run_id)
        return Staging(node, run / f"{safe_name(instance)}.{attempt}")

    def make(self, staging: Staging) -> None:
        path = staging.path
        for private in (path.parent.parent, path.parent):  # the work and run folders
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
            private.chmod(0o700)
        safefs.rmtree(path)  # left by a run that died
        path.mkdir()
        path.chmod(0o777)  # the image may run as any user

    def streams(
        self, run_id: str, unit: str, attempt: int, producers: Sequence[str], node: str
    ) -> Path:
        parent = self.root / "streams" / safe_name(run_id)
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for level in (parent.parent, parent):
            level.chmod(0o700)  # only the FIFOs' own folder is open to containers
        folder = parent / f"{safe_name(unit)}.{attempt}"
        make_fifos(folder, [safe_name(p) for p in producers])
        return folder

    def seed(self, staging: Staging, sources: Sequence[tuple[Path, str]]) -> None:
        seed_folder(staging.path, sources)

    def provide(self, path: Path, node: str) -> str:
        return str(path)  # every node of the fake sees this machine's files

    def log(self, run_id: str, instance: str, attempt: int) -> Path:
        return self.root / "logs" / safe_name(run_id) / f"{safe_name(instance)}.{attempt}.log"

    def clear(self) -> None:
        nodes = self.root / "nodes"
        for disk in sorted(nodes.iterdir()) if nodes.is_dir() else []:
            safefs.rmtree(disk / "work")
        safefs.rmtree(self.root / "streams")


__all__ = ["FakeOutputs", "FakeWorkspace", "node_disk"]
