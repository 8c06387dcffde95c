"""The ports on one machine: outputs under ``.dockyard/outputs``, work folders under
``.dockyard/work`` and ``.dockyard/logs``, named volumes under the data root. Every node
is this machine, so what a container binds is the path itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dockyard.disk.node_disk import LocalOutputs, LocalWorkspace, safe_name
from dockyard.disk.volumes import Snapshot, VolumeInfo, VolumeStore
from dockyard.execution.ports import Ports
from dockyard.runtime.base import Bind
from dockyard.spec.loader import PipelineFile
from dockyard.state.hashing import InputHasher

__all__ = ["LocalOutputs", "LocalVolumes", "LocalWorkspace", "local_ports", "safe_name"]


class LocalVolumes:
    """Named volumes in :class:`~dockyard.disk.volumes.VolumeStore`, held with ``flock``."""

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
        from dockyard.disk.volume_stream import send

        return send(self.store, name, out, base, target)

    def receive(self, name: str, inp: BinaryIO) -> Snapshot:
        from dockyard.disk.volume_stream import receive

        return receive(self.store, name, inp)

    def remove(self, name: str) -> None:
        self.store.remove(name)

    def live(self, name: str) -> Path:
        return self.store.live(name)

    def digest(self, name: str, hasher: InputHasher, *, settled: bool = False) -> str:
        # A volume may change during the run (an earlier step wrote it): walked each time,
        # its unchanged files still come from the stat cache.
        return hasher.digest(self.store.live(name), may_change=True)

    def settle(self, name: str) -> None:
        pass  # (a write is the volume's content as it is made)

    def mount(
        self, name: str, target: str, readonly: bool, node: str, version: str | None = None
    ) -> Bind:
        return Bind(str(self.store.live(name)), target, readonly=readonly)


def local_ports(pf: PipelineFile) -> Ports:
    """The ports of a run on this machine: everything under the pipeline's state folder,
    named volumes under the data root."""
    return Ports(LocalOutputs(pf.state_dir), LocalWorkspace(pf.state_dir), LocalVolumes())
