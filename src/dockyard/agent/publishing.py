"""Publishing what a node's last unmount snapshotted: the lease released with the snapshot
as the volume's content, under the epoch the mount took. A node that was fenced meanwhile
is refused (its live folder is no longer trusted); when no manager's agent answers, the
node keeps the lease and what was written, and publishes later, for as long as it takes
(:data:`PUBLISH_RETRY` growing to :data:`PUBLISH_RETRY_MAX` between tries), unless the
volume was mounted there again meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dockyard.agent.leases import Fenced, Lease, LeaseAccess, NoSuchVolume
from dockyard.agent.replication import Replicator
from dockyard.agent.volume_records import Records

PUBLISH_RETRY = 2.0  # seconds before the first try again to publish (the store was away)
PUBLISH_RETRY_MAX = 10.0  # (a mount elsewhere may wait for it: RELEASE_WAIT)
LATER = object()  # (a publish that waits for the lease store)


class Publisher:
    def __init__(
        self,
        leases: LeaseAccess,
        records: Records,
        replicator: Replicator,
        log: Callable[[str], None],
    ):
        self.leases = leases
        self.records = records
        self.replicator = replicator
        self.log = log

    def resume(self) -> None:
        """Publish what an agent that stopped could not publish (at the agent's start)."""
        for name in self.records.names():
            state = self.records.state(name)
            if state.get("unpublished"):
                self.later(name)

    def publish(self, name: str, state: dict[str, Any], snapshot: str) -> Lease | None:
        """Publish ``snapshot`` under the state's epoch (the caller holds the volume's
        lock); None when refused (a fenced node: its live folder is not trusted any more)
        or when the lease store cannot be reached (then it is tried again, in the
        background, until it answers)."""
        lease = self._release(name, state, snapshot)
        if lease is LATER:
            self.later(name)
            return None
        return lease  # type: ignore[return-value]

    def _release(self, name: str, state: dict[str, Any], snapshot: str) -> Lease | object | None:
        epoch = state["epoch"]
        try:
            lease = self.leases.release(name, epoch, snapshot)
        except (Fenced, NoSuchVolume) as exc:
            self.log(f"unmount of {name}: {exc}")
            self.records.save(name, {**state, "mounts": [], "clean": None, "unpublished": None})
            return None
        except Exception as exc:  # (no manager's agent answers: still held by this node)
            self.log(f"unmount of {name}: publishing later: {exc}")
            self.records.save(name, {**state, "mounts": [], "clean": None, "unpublished": snapshot})
            return LATER
        self.records.save(name, {**state, "mounts": [], "clean": snapshot, "unpublished": None})
        return lease

    def later(self, name: str) -> None:
        """Publish the snapshot the state names once the lease store answers again (tried
        with a growing pause, for as long as it takes), unless the volume was mounted here
        again meanwhile: it holds the lease still, and its next unmount publishes."""

        def again() -> None:
            wait = PUBLISH_RETRY
            while True:
                time.sleep(wait)
                wait = min(wait * 2, PUBLISH_RETRY_MAX)
                with self.records.lock(name):
                    state = self.records.state(name)
                    snapshot = state.get("unpublished")
                    if not snapshot or state["mounts"]:
                        return
                    lease = self._release(name, state, snapshot)
                if lease is None:
                    return
                if isinstance(lease, Lease):
                    self.replicator.later(name, snapshot, state.get("holders") or [])
                    return

        threading.Thread(target=again, daemon=True).start()


__all__ = ["PUBLISH_RETRY", "PUBLISH_RETRY_MAX", "Publisher"]
