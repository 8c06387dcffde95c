"""The fake of the VolumeBackend port (:mod:`dockyard.execution.ports`) for tests: it models
*where bytes live*, not how they are copied efficiently. :class:`FakeVolumes` keeps live
volumes as real folders (containers bind them) and snapshots in memory, holds in-process
through the ``HOLD`` table, and sends and receives a stream format of its own. The contract
suite in ``tests/contract`` runs it beside the local implementation; where they disagree,
the local one is right.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dockyard.disk import safefs
from dockyard.disk.volume_stream import StreamError
from dockyard.disk.volumes import (
    Snapshot,
    VolumeInfo,
    VolumeInUse,
    check_name,
    check_ref,
    check_tag,
)
from dockyard.errors import PlanError, UnknownReference
from dockyard.lifecycles import HOLD, Hold, HoldEvent, advance
from dockyard.runtime.base import Bind
from dockyard.state.hashing import InputHasher
from dockyard.testing.fake_volume_stream import FakeStream, Tree, parts_of, sorted_tree

# -- volumes ----------------------------------------------------------------------------------


def read_tree(root: Path, file_perms: Callable[[int], int]) -> Tree:
    """Folders, files (``file_perms`` of their permission bits) and links under ``root``,
    no link followed; devices, FIFOs and sockets are not data."""
    tree: Tree = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as found:
            for entry in found:
                path = f"{rel}/{entry.name}" if rel else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                perms = stat.S_IMODE(mode) & 0o777
                if stat.S_ISDIR(mode):
                    tree[path] = (stat.S_IFDIR | perms, b"")
                    pending.append(path)
                elif stat.S_ISLNK(mode):
                    tree[path] = (stat.S_IFLNK | 0o777, os.fsencode(os.readlink(entry.path)))
                elif stat.S_ISREG(mode):
                    data = Path(entry.path).read_bytes()
                    tree[path] = (stat.S_IFREG | file_perms(perms), data)
    return sorted_tree(tree)


def mirror(tree: Tree, live: Path, file_perms: Callable[[int], int]) -> int:
    """Make the folder ``live`` (kept itself: containers bind it) hold ``tree``; return the
    bytes of the files written."""
    current = read_tree(live, lambda m: m)
    for rel in sorted(current, key=parts_of, reverse=True):  # what must go, entries first
        want = tree.get(rel)
        if want is None or stat.S_IFMT(want[0]) != stat.S_IFMT(current[rel][0]):
            safefs.rmtree(live / rel)
    current = read_tree(live, lambda m: m)
    copied = 0
    for rel, (mode, data) in tree.items():
        path, have = live / rel, current.get(rel)
        if stat.S_ISDIR(mode):
            if have is None:
                path.mkdir()
                path.chmod(stat.S_IMODE(mode))
        elif stat.S_ISLNK(mode):
            if have != (mode, data):
                safefs.rmtree(path)
                os.symlink(os.fsdecode(data), path)
        elif have is None or have[1] != data or (have[0] | 0o222) != (mode | 0o222):
            safefs.rmtree(path)
            path.write_bytes(data)
            path.chmod(file_perms(stat.S_IMODE(mode)))
            copied += len(data)
    return copied


def _size(tree: Tree) -> tuple[int, int]:
    """(files, bytes) of ``tree``."""
    files = [data for mode, data in tree.values() if stat.S_ISREG(mode)]
    return len(files), sum(len(data) for data in files)


@dataclass
class _Volume:
    created: float
    snapshots: list[tuple[Snapshot, Tree]] = field(default_factory=list)


class _Holds:
    """Who holds which volume, moved on through the ``HOLD`` table; a waiter waits on a
    condition, for ``timeout`` seconds at most."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._changed = threading.Condition()
        self._held: dict[str, tuple[Hold, int]] = {}  # name -> (state, holders)

    def _allows(self, name: str, event: HoldEvent) -> bool:
        return (self._held.get(name, (Hold.FREE, 0))[0], event) in HOLD

    @contextlib.contextmanager
    def hold(self, name: str, *, exclusive: bool, wait: bool) -> Iterator[None]:
        event = HoldEvent.WRITE if exclusive else HoldEvent.READ
        with self._changed:
            patience = self.timeout if wait else 0
            if not self._changed.wait_for(lambda: self._allows(name, event), patience):
                waited = f" (waited {patience:g} s)" if wait else ""
                raise VolumeInUse(
                    f"volume {name!r} is in use by another run "
                    f"({'using' if exclusive else 'writing'} it){waited}"
                )
            state, holders = self._held.get(name, (Hold.FREE, 0))
            self._held[name] = (advance(HOLD, state, event), holders + 1)
        try:
            yield
        finally:
            with self._changed:
                state, holders = self._held[name]
                last = HoldEvent.LAST_RELEASED if holders == 1 else HoldEvent.RELEASED
                state = advance(HOLD, state, last)
                if state is Hold.FREE:
                    del self._held[name]
                else:
                    self._held[name] = (state, holders - 1)
                self._changed.notify_all()


class FakeVolumes:
    """Named volumes: live folders under ``root``, snapshots in memory."""

    def __init__(self, root: Path, *, hold_timeout: float = 10.0) -> None:
        self.root = root
        self._volumes: dict[str, _Volume] = {}
        self._holds = _Holds(hold_timeout)

    def live(self, name: str) -> Path:
        return self.root / "volumes" / check_name(name)

    def digest(self, name: str, hasher: InputHasher, *, settled: bool = False) -> str:
        return hasher.digest(self.live(name), may_change=True)

    def settle(self, name: str) -> None:
        pass  # (a write is the volume's content as it is made)

    def mount(
        self, name: str, target: str, readonly: bool, node: str, version: str | None = None
    ) -> Bind:
        return Bind(str(self.live(name)), target, readonly)  # volumes do not move in the fake

    def exists(self, name: str) -> bool:
        return check_name(name) in self._volumes

    def _volume(self, name: str) -> _Volume:
        if not self.exists(name):
            raise UnknownReference(f"no volume {name!r} under {self.root}")
        return self._volumes[name]

    def ensure(self, name: str, seed: Path | None = None) -> None:
        if self.exists(name):
            return
        live = self.live(name)
        live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        creating = live.parent / f".creating-{name}"
        safefs.rmtree(creating)
        creating.mkdir()
        if seed is not None:
            mirror(read_tree(seed, lambda m: m), creating, lambda m: m)
        creating.chmod(0o777)  # containers may run as any user
        os.rename(creating, live)
        self._volumes[name] = _Volume(time.time())

    def hold(
        self, name: str, *, exclusive: bool, wait: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return self._holds.hold(check_name(name), exclusive=exclusive, wait=wait)

    def all(self) -> list[VolumeInfo]:
        return [self.inspect(name) for name in sorted(self._volumes)]

    def inspect(self, name: str) -> VolumeInfo:
        volume = self._volume(name)
        files, size = _size(read_tree(self.live(name), lambda m: m))
        live = str(self.live(name))
        return VolumeInfo(name, live, volume.created, files, size, len(volume.snapshots))

    def snapshots(self, name: str) -> list[Snapshot]:
        volume = self._volumes.get(check_name(name))
        return [snap for snap, _ in volume.snapshots] if volume else []

    def _find(self, name: str, ref: str) -> tuple[Snapshot, Tree]:
        check_ref(ref)
        for snap, tree in self._volume(name).snapshots:
            if str(snap.id) == ref or snap.tag == ref:
                return snap, tree
        raise UnknownReference(f"volume {name!r} has no snapshot {ref!r}")

    def _add(self, name: str, tree: Tree, tag: str | None, snap_uuid: str) -> Snapshot:
        volume = self._volume(name)
        previous = volume.snapshots[-1][1] if volume.snapshots else {}
        number = volume.snapshots[-1][0].id + 1 if volume.snapshots else 1
        files, size = _size(tree)
        copied = sum(
            len(data)
            for rel, (mode, data) in tree.items()
            if stat.S_ISREG(mode) and previous.get(rel) != (mode, data)
        )
        snap = Snapshot(number, tag, time.time(), files, size, copied, snap_uuid)
        volume.snapshots.append((snap, tree))
        return snap

    def snapshot(self, name: str, tag: str | None = None) -> Snapshot:
        if tag is not None:
            check_tag(tag)
        volume = self._volume(name)
        if tag is not None and any(s.tag == tag for s, _ in volume.snapshots):
            raise PlanError(f"volume {name!r} already has a snapshot tagged {tag!r}")
        tree = read_tree(self.live(name), lambda m: m & 0o555)
        return self._add(name, tree, tag, uuid.uuid4().hex)

    def rollback(self, name: str, ref: str) -> int:
        _, tree = self._find(name, ref)
        return mirror(tree, self.live(name), lambda m: (m & 0o777) | 0o200)

    def remove(self, name: str) -> None:
        self._volume(name)
        with self.hold(name, exclusive=True):
            safefs.rmtree(self.live(name))
            del self._volumes[name]

    def send(
        self, name: str, out: BinaryIO, base: str | None = None, target: str | None = None
    ) -> tuple[int, int]:
        snaps = self._volume(name).snapshots
        if not snaps and target is None:
            raise UnknownReference(f"volume {name!r} has no snapshot to send")
        snap, tree = self._find(name, target) if target is not None else snaps[-1]
        old = self._find(name, base) if base is not None else None
        data = FakeStream.write(snap, tree, old)
        out.write(data)
        return data.count(b"\n") - 2, len(data)  # the records and the end

    def receive(self, name: str, inp: BinaryIO) -> Snapshot:
        check_name(name)
        stream = FakeStream.read(inp.read())
        tree = stream.apply(self._base(name, stream))
        with self.hold(name, exclusive=True):
            self._base(name, stream)  # still true now that the volume is held
            self.ensure(name)
            snaps = self._volumes[name].snapshots
            tag = stream.tag if all(s.tag != stream.tag for s, _ in snaps) else None
            snap = self._add(name, tree, tag, stream.snapshot)
            mirror(tree, self.live(name), lambda m: (m & 0o777) | 0o200)
        return snap

    def _base(self, name: str, stream: FakeStream) -> Tree:
        snaps = self._volumes[name].snapshots if self.exists(name) else []
        if any(s.uuid == stream.snapshot for s, _ in snaps):
            raise StreamError(f"volume {name!r} already has snapshot {stream.snapshot}")
        if stream.base is None:
            return {}
        for snap, tree in snaps:
            if snap.uuid == stream.base:
                return tree
        raise StreamError(f"volume {name!r} has no snapshot {stream.base} to apply this onto")


__all__ = ["FakeVolumes", "Tree", "read_tree"]
