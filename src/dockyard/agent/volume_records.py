"""What an agent records of each volume it keeps a copy of (``ROOT/NODE/volumes/NAME/
node.json``), and the lock that one call on that volume holds at a time.

The record says: the lease epoch this node's mounts hold (``epoch``), the mounts Docker made
(``mounts``: their ids), whether the live folder is the published snapshot untouched
(``clean``: its uuid; trusted only in the machine's start that wrote it, ``boot``), the
volume's incarnation it belongs to, the nodes that kept the
snapshot before (``holders``: replication goes to them first), that the last unmount's
snapshot is yet to be taken (``releasing``, :mod:`dockyard.agent.releasing`), and a
snapshot that waits to be published (``unpublished``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockyard.disk import durable
from dockyard.disk.volumes import VolumeStore


def fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "mounts": [], "clean": None}


class Records:
    def __init__(self, store: VolumeStore):
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        with self._locks_lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _file(self, name: str) -> Path:
        return self.store.folder(name) / "node.json"

    def state(self, name: str) -> dict[str, Any]:
        """The record; a live folder recorded clean before the machine last started is not
        trusted (what was written to it then may not have reached the disk)."""
        try:
            state = dict(json.loads(self._file(name).read_text()))
        except (OSError, ValueError):
            return fresh_state()
        if state.get("clean") and state.get("boot") != durable.BOOT:
            state["clean"] = None
        return state

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Replace the record at once (written aside, then renamed over it)."""
        path = self._file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps({**state, "boot": durable.BOOT}))
        os.replace(scratch, path)

    def names(self) -> list[str]:
        """The volumes this node keeps a copy of."""
        if not self.store.root.is_dir():
            return []
        return sorted(p.name for p in self.store.root.iterdir() if self.store.exists(p.name))


__all__ = ["Records", "fresh_state"]
