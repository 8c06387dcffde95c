"""What a node does with a volume after a hand-off, in the background, so that the next
mount waits for none of it: build the full trees of the snapshots kept as their changes,
write the live folder's index, and prune old snapshots (removing their files once the
volume is let go)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.agent.background import Background
from dockyard.disk import safefs
from dockyard.disk.volumes import VolumeStore

if TYPE_CHECKING:
    from dockyard.agent.volume_records import Records

KEEP_SNAPSHOTS = 4  # per volume and node: the bases for increments, and rollbacks
READ_GRACE = 24 * 3600.0  # a snapshot a container read is kept this long after


class Busy:
    """The snapshots being sent from this node: pruning leaves them alone."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, name: str, snapshots: list[str]) -> Iterator[None]:
        keys = [(name, s) for s in snapshots]
        with self._lock:
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._counts[key] -= 1
                    if not self._counts[key]:
                        del self._counts[key]

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._counts


class Settler:
    def __init__(self, store: VolumeStore, records: Records, log: Callable[[str], None]):
        self.store = store
        self.records = records
        self.log = log
        self.busy = Busy()
        self.threads = Background()
        self._asked: dict[str, bool] = {}  # volume: asked again while its thread works
        self._lock = threading.Lock()

    def later(self, name: str) -> None:
        """:meth:`settle`, in the background, at the lowest CPU priority: it starts as a
        hand-off ends, beside the container that the hand-off was for, which must not wait
        for it. One thread a volume: asked again while it works, it settles once more after
        (what was asked meanwhile is then settled too), however many times it was asked."""
        with self._lock:
            if name in self._asked:
                self._asked[name] = True  # (again, once the one under way is done)
                return
            self._asked[name] = False

        def work() -> None:
            with contextlib.suppress(OSError):  # (nice 19, this thread only)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            done = False
            try:
                while not done:
                    self.settle(name)  # (which logs what fails)
                    with self._lock:
                        done = not self._asked[name]
                        if done:
                            del self._asked[name]  # (in the same hold: none is lost)
                        else:
                            self._asked[name] = False
            finally:
                if not done:
                    with self._lock:
                        self._asked.pop(name, None)

        self.threads.start(work)

    def wait(self, timeout: float) -> None:
        """Wait for the work under way (for tests and a clean stop)."""
        self.threads.wait(timeout)

    def settle(self, name: str) -> None:
        try:
            if self.store.exists(name):
                self.store.settle(name)
        except Exception as exc:  # (the next unmount or pull settles again)
            self.log(f"building the snapshot trees of {name}: {exc}")
        try:
            with self.records.lock(name):
                trash = self._prune(name)
            for path in trash:
                safefs.rmtree(path)
        except Exception as exc:
            self.log(f"pruning {name}: {exc}")

    def _prune(self, name: str) -> list[Path]:
        """Keep the newest :data:`KEEP_SNAPSHOTS` snapshots, and those read by a container
        within :data:`READ_GRACE` seconds (it binds the snapshot itself); return the
        folders of those dropped, for the caller to remove once it let go of the volume."""
        if not self.store.exists(name):
            return []
        trash = []
        snaps = self.store.snapshots(name)
        unbuilt = {s.parent for s in snaps if s.parent and not self.store.has_tree(name, s)}
        for snap in snaps[:-KEEP_SNAPSHOTS]:
            if (name, snap.uuid) in self.busy or snap.uuid in unbuilt:
                continue  # (being sent, or a tree is yet to be built from it: next time)
            mark = self.store.snapshot_folder(name, snap) / "read"
            with contextlib.suppress(FileNotFoundError):
                if time.time() - mark.stat().st_mtime < READ_GRACE:
                    continue
            dropped = self.store.drop_snapshot(name, snap, later=True)
            if dropped is not None:
                trash.append(dropped)
        return trash


__all__ = ["KEEP_SNAPSHOTS", "READ_GRACE", "Settler"]
