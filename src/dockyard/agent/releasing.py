"""The snapshot a node's last unmount publishes, taken after the unmount has returned.

Docker waits for ``Unmount`` before it goes on (removing the container, the next one's
start), and a planned move's next mount is on another node: the snapshot's walk of the live
folder (one stat per entry, :mod:`dockyard.disk.live_index`) would be downtime that grows
with the number of files. So the last unmount only marks the lease *releasing*
(:func:`dockyard.agent.leases.releasing`: still held, no other node mounts it, but a mount
elsewhere waits for it rather than being refused) and returns; a thread of its own takes the
snapshot and publishes it, while the engines stop one container and start the next.

Nothing writes the live folder meanwhile: a mount on this node takes the volume's lock
first, and one that comes before the snapshot takes the lease back under its epoch and goes
on with the live folder as it is (its own next unmount publishes). A snapshot that cannot
be taken (a full disk) gives the lease back: the volume stays what was published before,
as it would have for an unmount that failed. An agent that stops before it published takes
the snapshot when it starts again (the record says ``releasing``). When the lease store does
not answer, the unmount takes the snapshot at once and publishes later
(:mod:`dockyard.agent.publishing`)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from dockyard.agent.background import Background
from dockyard.agent.leases import Fenced, LeaseAccess, NoSuchVolume
from dockyard.agent.publishing import Publisher
from dockyard.agent.replication import Replicator
from dockyard.agent.volume_records import Records
from dockyard.disk.volumes import VolumeStore


class Releaser:
    def __init__(
        self,
        store: VolumeStore,
        records: Records,
        leases: LeaseAccess,
        publisher: Publisher,
        replicator: Replicator,
        settle_later: Callable[[str], None],
        log: Callable[[str], None],
    ):
        self.store = store
        self.records = records
        self.leases = leases
        self.publisher = publisher
        self.replicator = replicator
        self.settle_later = settle_later
        self.log = log
        self.threads = Background()

    def unmounted(self, name: str, state: dict[str, Any]) -> str | None:
        """The volume's last mount on this node ended (the caller holds its lock; ``state``
        has no mounts left): mark the lease releasing and take the snapshot in the
        background. Returns why the snapshot could not be taken, when it was taken at once
        (the lease store did not answer) and failed."""
        began = time.monotonic()
        releasing = {**state, "mounts": [], "releasing": True}
        try:
            self.leases.releasing(name, state["epoch"])
        except (Fenced, NoSuchVolume) as exc:  # (taken over meanwhile: nothing is kept)
            self.log(f"unmount of {name}: {exc}")
            self.records.save(name, {**releasing, "releasing": None, "clean": None})
            return None
        except Exception as exc:  # (no manager's agent answers: still held by this node)
            self.log(f"unmount of {name}: taking its snapshot now ({exc})")
            self.records.save(name, releasing)
            return self._release(name, releasing, began)
        self.records.save(name, releasing)
        self.log(
            f"unmount of {name}: {time.monotonic() - began:.3f} s (its snapshot is taken and "
            "published in the background)"
        )
        self.threads.start(lambda: self.release(name))
        return None

    def release(self, name: str) -> None:
        """Take and publish the snapshot the record waits for, if it still does (a mount on
        this node since took the lease back)."""
        with self.records.lock(name):
            self._release(name, self.records.state(name), time.monotonic())

    def resume(self) -> None:
        """Take the snapshots an agent that stopped did not take (at the agent's start)."""
        for name in self.records.names():
            if self.records.state(name).get("releasing"):
                self.threads.start(functools.partial(self.release, name))

    def wait(self, timeout: float) -> None:
        self.threads.wait(timeout)

    def _release(self, name: str, state: dict[str, Any], began: float) -> str | None:
        if not state.get("releasing") or state["mounts"]:
            return None
        done = {**state, "releasing": None}
        try:
            snap = self.store.snapshot(name, defer=True, quiet=True)  # (no mount left)
            self.store.sync(name, snap)  # (on the disk before the cluster counts on it)
        except Exception as exc:  # (a full disk): the lease goes back, the writes are lost
            self.records.save(name, {**done, "clean": None})
            with contextlib.suppress(Exception):
                self.leases.give_back(name, state["epoch"])
            problem = (
                f"volume {name!r}: its snapshot could not be taken ({exc}); what was "
                "written in its last mount on this node is not kept"
            )
            self.log(problem)
            return problem
        taken = time.monotonic()
        published = self.publisher.publish(name, done, snap.uuid)
        ended = time.monotonic()
        self.log(
            f"snapshot of {name}: {ended - began:.3f} s (snapshot {snap.uuid[:12]} of "
            f"{snap.files} files in {taken - began:.3f} s, {snap.copied_bytes} bytes copied; "
            f"published in {ended - taken:.3f} s)"
        )
        if published is not None:
            self.replicator.later(name, snap.uuid, state.get("holders") or [])
        self.settle_later(name)
        return None


def unpublished_writes(state: dict[str, Any]) -> bool:
    """Whether the live folder holds writes this node has not published yet (its snapshot
    is still to be taken, or waits for the lease store)."""
    return bool(state.get("releasing") or state.get("unpublished"))


__all__ = ["Releaser", "unpublished_writes"]
