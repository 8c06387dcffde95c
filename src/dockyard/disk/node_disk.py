"""Committed outputs and work folders on one machine's disk: what the local backend uses
for every node, and what a node agent (:mod:`dockyard.agent`) uses on its own node. Only the
standard library and dockyard's sealing code, so that it runs in the agent's image too."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from dockyard.disk import keeping, sealing
from dockyard.disk.kept import Staging, StoredOutput
from dockyard.disk.sealing import Sealed

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def safe_name(text: str) -> str:
    """``text`` as a file or container name: unchanged when it is one already, else its
    unsafe characters replaced and a short hash added so that names stay distinct."""
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class LocalOutputs:
    def __init__(self, state_dir: Path):
        self.root = state_dir / "outputs"

    def seal(self, staging: Staging) -> Sealed:
        return sealing.seal_tree(staging.path)

    def commit(self, staging: Staging, sealed: Sealed) -> StoredOutput:
        where = keeping.keep(staging.path, sealed, self.root)
        return StoredOutput(
            sealed.digest, staging.node, str(where), sealed.size, sealed.files, sealed.changes
        )

    def discard(self, staging: Staging) -> None:
        sealing.discard(staging.path)

    def exists(self, digest: str) -> bool:
        return os.path.isdir(os.path.join(self.root, digest))

    def locate(self, digest: str) -> Path:
        return self.root / digest

    def bind(self, digest: str, node: str) -> str:
        return str(self.root / digest)

    def bring(self, digests: Sequence[str], node: str) -> None:
        pass  # every node is this machine


class LocalWorkspace:
    def __init__(self, state_dir: Path):
        self.work = state_dir / "work"
        self.logs = state_dir / "logs"

    def staging(self, run_id: str, instance: str, attempt: int, node: str) -> Staging:
        return Staging(node, self.work / run_id / f"{safe_name(instance)}.{attempt}")

    def make(self, staging: Staging) -> None:
        path = staging.path
        try:
            path.mkdir(mode=0o700)
        except FileNotFoundError:  # the run's first
            self._private(path.parent)
            path.mkdir(mode=0o700, exist_ok=True)
        except FileExistsError:  # left by a run that died
            sealing.discard(path)
            path.mkdir(mode=0o700)
        path.chmod(0o777)  # the image may run as any user; the parents stay private

    def streams(
        self, run_id: str, unit: str, attempt: int, producers: Sequence[str], node: str
    ) -> Path:
        return self.make_streams(run_id, f"{safe_name(unit)}.{attempt}", producers)

    def make_streams(self, run_id: str, name: str, producers: Sequence[str]) -> Path:
        """The FIFOs of one streamed chain's attempt (``name``) in the run's folder."""
        self._private(self.work / run_id / "streams")
        folder = self.work / run_id / "streams" / name
        make_fifos(folder, [safe_name(p) for p in producers])
        return folder

    def seed(self, staging: Staging, sources: Sequence[tuple[Path, str]]) -> None:
        seed_folder(staging.path, sources)

    def provide(self, path: Path, node: str) -> str:
        return str(path)

    def _private(self, folder: Path) -> None:
        """``folder`` and the folders between it and the work folder, private to root:
        what is inside is for containers (any user), what leads to it is not."""
        path = self.work
        for part in ("", *folder.relative_to(self.work).parts):
            path = path / part
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)

    def log(self, run_id: str, instance: str, attempt: int) -> Path:
        return self.logs / run_id / f"{safe_name(instance)}.{attempt}.log"

    def clear(self) -> None:
        sealing.discard(self.work)


def fifo_name(producer: str) -> str:
    return f"{producer}.fifo"


def make_fifos(folder: Path, producers: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    for producer in producers:
        path = folder / fifo_name(producer)
        if not path.exists():
            os.mkfifo(path, 0o666)


def seed_folder(folder: Path, sources: Sequence[tuple[Path, str]]) -> None:
    """Copy each source (this machine's file or folder, links copied as links) to its path
    relative to ``folder``, which nothing but this process writes yet; what is copied is
    left writable for the container, whichever user it runs as."""
    for source, rel in sources:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or any(p in ("..", ".") for p in parts):
            raise ValueError(f"{rel!r} is not a path inside the output folder")
        target = folder.joinpath(*parts)
        for parent in reversed(target.relative_to(folder).parents[:-1]):
            (folder / parent).mkdir(mode=0o777, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
        _open_to_all(target)


def _open_to_all(path: Path) -> None:
    """Read and write for every user (the container's may be any), links left alone."""
    if path.is_symlink():
        return
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777)
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    mode = os.stat(os.path.join(root, name)).st_mode
                    os.chmod(os.path.join(root, name), 0o666 | (mode & 0o111))
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    else:
        os.chmod(path, 0o666 | (path.stat().st_mode & 0o111))
