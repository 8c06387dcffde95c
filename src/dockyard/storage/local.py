"""The ports on one machine: outputs under ``.dockyard/outputs``, work folders under
``.dockyard/work`` and ``.dockyard/logs``, named volumes under the data root. Every node
is this machine, so what a container binds is the path itself."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dockyard.execution.stream import make_fifos
from dockyard.storage import outputs as sealing
from dockyard.storage.outputs import Sealed
from dockyard.storage.ports import Staging, StoredOutput
from dockyard.storage.volumes import Snapshot, VolumeInfo, VolumeStore

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
        where = sealing.place(staging.path, sealed, self.root)
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

    def streams(self, run_id: str, unit: str, attempt: int, producers: Sequence[str]) -> Path:
        self._private(self.work / run_id / "streams")
        folder = self.work / run_id / "streams" / f"{safe_name(unit)}.{attempt}"
        make_fifos(folder, [safe_name(p) for p in producers])
        return folder

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


class LocalVolumes:
    """Named volumes in :class:`~dockyard.storage.volumes.VolumeStore`, held with ``flock``."""

    def __init__(self, store: VolumeStore | None = None):
        self.store = store or VolumeStore()

    def ensure(self, name: str, seed: Path | None = None) -> None:
        self.store.ensure(name, seed)

    @contextmanager
    def hold(self, name: str, *, exclusive: bool, wait: bool = False) -> Iterator[None]:
        with self.store.lock(name, exclusive=exclusive, wait=wait):
            yield

    def exists(self, name: str) -> bool:
        return self.store.exists(name)

    def all(self) -> list[VolumeInfo]:
        return self.store.all()

    def inspect(self, name: str) -> VolumeInfo:
        return self.store.inspect(name)

    def snapshots(self, name: str) -> list[Snapshot]:
        return self.store.snapshots(name)

    def snapshot(self, name: str, tag: str | None = None) -> Snapshot:
        return self.store.snapshot(name, tag)

    def rollback(self, name: str, ref: str) -> int:
        return self.store.rollback(name, self.store.find(name, ref))

    def send(
        self, name: str, out: BinaryIO, base: str | None = None, target: str | None = None
    ) -> tuple[int, int]:
        from dockyard.storage.volume_stream import send

        return send(self.store, name, out, base, target)

    def receive(self, name: str, inp: BinaryIO) -> Snapshot:
        from dockyard.storage.volume_stream import receive

        return receive(self.store, name, inp)

    def remove(self, name: str) -> None:
        self.store.remove(name)

    def live(self, name: str) -> Path:
        return self.store.live(name)

    def bind(self, name: str, node: str) -> str:
        return str(self.store.live(name))
