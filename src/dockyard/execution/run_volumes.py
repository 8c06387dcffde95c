"""The named volumes of one run: created, locked, snapshotted around it, and digested.

A run takes every volume its steps and services mount before it starts (writers alone,
readers together), snapshots the ones it may write before and after (the run's lineage,
and what ``dockyard volume rollback`` goes back to), and digests volumes for the cache:
a read-only mount's content is part of its reader's key, and a cached writer's result
holds only while the volume still holds what it left there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from dockyard.events import Event
from dockyard.execution.ports import VolumeBackend
from dockyard.planning.graph import Graph, Instance, InstanceId
from dockyard.spec.loader import PipelineFile
from dockyard.state.hashing import InputHasher


class RunVolumes:
    def __init__(self, pf: PipelineFile, backend: VolumeBackend):
        self.pf = pf
        self.backend = backend
        self.taken: set[str] = set()  # the volumes this run holds
        # (instance, volume) -> the digest its key was made with (what it must read)
        self.read_versions: dict[tuple[InstanceId, str], str] = {}
        self.written: list[str] = []  # the ones this run may write, sorted

    def take(self, graph: Graph, held: contextlib.ExitStack, *, wait: bool) -> None:
        """Create the volumes the run uses and lock them for as long as ``held`` lives."""
        writes: dict[str, bool] = {}
        for instance in graph.instances.values():
            for volume, _, readonly in instance.volumes:
                writes[volume] = writes.get(volume, False) or not readonly
        for name in {n for i in graph.instances.values() for n in i.services}:
            for volume, mount in self.pf.pipeline.services[name].volumes.items():
                writes[volume] = writes.get(volume, False) or not mount.readonly
        for volume in sorted(writes):
            seed = self.pf.pipeline.volumes[volume].seed
            self.backend.ensure(volume, (self.pf.root / seed).resolve() if seed else None)
            self.taken.add(volume)
            held.enter_context(self.backend.hold(volume, exclusive=writes[volume], wait=wait))
            if writes[volume]:
                self.written.append(volume)

    def snapshot_written(self, when: str, at: float) -> list[Event]:
        """Snapshot every volume the run may write; one ``volume`` event each."""
        events = []
        for volume in self.written:
            snap = self.backend.snapshot(volume)
            detail = {"volume": volume, "snapshot": snap.id, "when": when}
            events.append(Event("volume", at, detail=detail))
        return events

    def read_keys(self, instance: Instance, hasher: InputHasher) -> list[tuple[str, str]]:
        """Cache-key entries for the volumes ``instance`` mounts read-only (remembered: it
        mounts what its key says, where the backend keeps versions)."""
        keys = []
        for volume, path, readonly in instance.volumes:
            if readonly:
                digest = self.backend.digest(volume, hasher)
                self.read_versions[(instance.id, volume)] = digest
                keys.append((f"volume:{volume}:{path}", digest))
        return keys

    def mounts(self, instance: Instance) -> tuple[tuple[str, str, bool, str | None], ...]:
        """(volume, mount path, read-only, version) of each volume ``instance`` mounts."""
        return tuple(
            (volume, path, readonly, self.read_versions.get((instance.id, volume)))
            for volume, path, readonly in instance.volumes
        )

    def written_by(self, instance: Instance, hasher: InputHasher) -> dict[str, str]:
        """What ``instance`` left in the volumes it mounts read-write (after it ran)."""
        return {
            volume: self._digest(volume, hasher)
            for volume, _, readonly in instance.volumes
            if not readonly
        }

    def hold(self, left: Mapping[str, str], hasher: InputHasher) -> bool:
        """Whether each volume still holds what a step ``left`` there."""
        return all(
            volume in self.taken and self._digest(volume, hasher) == digest
            for volume, digest in left.items()
        )

    def _digest(self, volume: str, hasher: InputHasher) -> str:
        return self.backend.digest(volume, hasher, settled=True)
