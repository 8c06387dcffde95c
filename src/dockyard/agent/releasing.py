"""The snapshot a node's last unmount publishes, taken after the unmount has returned.

Docker waits for ``Unmount`` before it goes on (removing the container, the next one's
start), and a planned move's next mount is on another node: the snapshot's walk of the live
folder (one stat per entry, :mod:`dockyard.disk.live_index`) would be downtime that grows
with the number of files. So the last unmount only marks the lease *releasing*
(:func:`dockyard.agent.leases.releasing`: still held, no other node mounts it, but a mount
elsewhere waits for it rather than being refused) and returns; a thread of its own takes the
snapshot and publishes it, while the engines stop one container and start the next.

Nothing writes the live folder meanwhile: a mount on this node takes the volume's lock
first, and one that comes before the snapshot takes it itself, then goes on (what the
container before it wrote is published all the same). The record says ``releasing`` before
the lease does, so that an agent that stops before it published takes the snapshot when it
starts again. A snapshot that cannot be taken (a full disk) gives the lease back: the
volume stays what was published before, as for an unmount that failed (the agent's log says
so; a lease store that does not answer then is tried again until it does). When the lease
store does not answer the unmount, the lease is not marked releasing (mounts elsewhere are
refused, as for any holder), the snapshot is still taken in the background, and the publish
is tried until it gets through (:mod:`dockyard.agent.publishing`)."""

from __future__ import annotations

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

GIVE_BACK_RETRY = 2.0  # seconds before a lease that could not be given back is tried again


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

    def unmounted(self, name: str, state: dict[str, Any]) -> None:
        """The volume's last mount on this node ended (the caller holds its lock; ``state``
        has no mounts left): note that its snapshot is to be taken (first: an agent that
        stops after this takes it when it starts), mark the lease releasing, and take the
        snapshot in the background."""
        began = time.monotonic()
        self.records.save(name, {**state, "mounts": [], "releasing": True})
        try:
            self.leases.releasing(name, state["epoch"])
        except (Fenced, NoSuchVolume) as exc:  # (taken over meanwhile: nothing is kept)
            self.log(f"unmount of {name}: {exc}")
            self.records.save(name, {**state, "mounts": [], "releasing": None, "clean": None})
            return
        except Exception as exc:  # (no manager's agent answers: still held by this node, and
            # mounts elsewhere are refused, not kept waiting; the publish is tried until it
            # gets through, :mod:`dockyard.agent.publishing`)
            self.log(f"unmount of {name}: the lease is not marked releasing ({exc})")
        self.log(
            f"unmount of {name}: {time.monotonic() - began:.3f} s (its snapshot is taken and "
            "published in the background)"
        )
        self.threads.start(functools.partial(self.release, name))

    def release(self, name: str) -> None:
        """Take and publish the snapshot the record waits for, if it still does."""
        try:
            with self.records.lock(name):
                self.release_locked(name, self.records.state(name))
        except Exception as exc:  # (a thread of its own: nobody else would say it)
            self.log(f"releasing {name}: {type(exc).__name__}: {exc}")

    def release_locked(self, name: str, state: dict[str, Any]) -> None:
        """:meth:`release`, by a caller that holds the volume's lock (a mount on this node
        that comes first takes the snapshot itself, so that what the container before it
        wrote is published, as it would have been had the mount come later)."""
        if not state.get("releasing") or state["mounts"]:
            return
        began = time.monotonic()
        done = {**state, "releasing": None}
        try:
            snap = self.store.snapshot(name, defer=True, quiet=True)  # (no mount left)
            self.store.sync(name, snap)  # (on the disk before the cluster counts on it)
        except Exception as exc:  # (a full disk): the lease goes back, the writes are lost
            self.log(
                f"volume {name!r}: its snapshot could not be taken ({exc}); what was "
                "written in its last mount on this node is not kept"
            )
            self._give_back(name, done)
            return
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

    def _give_back(self, name: str, done: dict[str, Any]) -> None:
        """Give the lease back unpublished, then say so in the record; a lease store that
        does not answer is tried again (the record still says releasing meanwhile, so that
        a restarted agent tries too), until it answers."""
        if not self._gave_back(name, done):
            self.threads.start(functools.partial(self._give_back_later, name))

    def _gave_back(self, name: str, done: dict[str, Any]) -> bool:
        try:
            self.leases.give_back(name, done["epoch"])
        except Exception as exc:
            self.log(f"releasing {name}: the lease could not be given back ({exc}): again later")
            return False
        self.records.save(name, {**done, "clean": None})
        return True

    def _give_back_later(self, name: str) -> None:
        while True:
            time.sleep(GIVE_BACK_RETRY)
            with self.records.lock(name):
                state = self.records.state(name)
                if not state.get("releasing") or state["mounts"]:
                    return  # (done meanwhile: by a mount here, or a restarted agent)
                if self._gave_back(name, {**state, "releasing": None}):
                    return

    def resume(self) -> None:
        """Take the snapshots an agent that stopped did not take (at the agent's start)."""
        for name in self.records.names():
            if self.records.state(name).get("releasing"):
                self.threads.start(functools.partial(self.release, name))

    def wait(self, timeout: float) -> None:
        self.threads.wait(timeout)


def unpublished_writes(state: dict[str, Any]) -> bool:
    """Whether the live folder holds writes this node has not published yet (its snapshot
    is still to be taken, or waits for the lease store)."""
    return bool(state.get("releasing") or state.get("unpublished"))


__all__ = ["Releaser", "unpublished_writes"]
