"""How a node gets a snapshot of a volume that it lacks: from a node that keeps it, as the
increment over the newest snapshot both keep (:mod:`dockyard.disk.volume_stream`), each
node that keeps it tried in turn; and how a mount makes the live folder the published
snapshot (:meth:`Fetcher.bring`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from dockyard.agent.leases import Lease
from dockyard.agent.refused import Refused
from dockyard.disk import safefs
from dockyard.disk.volumes import Snapshot, VolumeStore, mirror


class Peers(Protocol):
    """The other nodes' agents: a snapshot stream from one of them."""

    def open_send(
        self, node: str, address: str, volume: str, snapshot: str, have: list[str]
    ) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def pull(
        self, node: str, address: str, volume: str, snapshot: str, sources: dict[str, str]
    ) -> None:
        """Ask that node to keep ``snapshot``, pulled from ``sources`` (replication)."""


@dataclass
class Fetcher:
    node: str
    store: VolumeStore
    peers: Peers

    def have(self, name: str) -> list[Snapshot]:
        """The snapshots this node keeps of ``name``, oldest first."""
        if not self.store.exists(name):
            return []
        return [s for s in self.store.snapshots(name) if s.uuid]

    def find(self, name: str, snapshot: str) -> Snapshot | None:
        if not self.store.exists(name):
            return None
        return next((s for s in self.store.snapshots(name) if s.uuid == snapshot), None)

    def bring(self, name: str, lease: Lease, nodes: dict[str, str], clean: str | None) -> None:
        """Make the live folder the published snapshot (fetched when this node lacks it: the
        increment over what the live folder is, ``clean``, if it is one both nodes keep)."""
        self.store.ensure(name)
        if not lease.snapshot:
            empty = self.store.scratch()
            self.store.indexes.drop(self.store.index_path(name))
            try:
                mirror(empty, self.store.live(name))
            finally:
                safefs.rmtree(empty)
            return
        snap = self.find(name, lease.snapshot)
        if snap is None:
            sources = {h: nodes[h] for h in lease.holders if h in nodes and h != self.node}
            if not sources:
                raise Refused(
                    f"volume {name!r}: its latest snapshot ({lease.snapshot[:12]}) is kept on "
                    f"node(s) {', '.join(h[:12] for h in lease.holders)}, none of which is up"
                )
            self.fetch(name, lease.snapshot, sources, live_is=clean)  # (receiving makes it live)
            return
        self.store.rollback(name, snap, quiet=True)

    def fetch(
        self,
        name: str,
        snapshot: str,
        sources: dict[str, str],
        live: bool = True,
        live_is: str | None = None,
    ) -> Snapshot:
        """Receive ``snapshot`` from one of ``sources`` (node: agent address); the live
        folder becomes it too, unless ``live`` is False. ``live_is``: the snapshot the
        agent's record says the live folder is, untouched since."""
        from dockyard.disk.volume_stream import receive

        if not sources:
            raise Refused(
                f"volume {name!r}: snapshot {snapshot[:12]} is kept on no node that is up"
            )
        problems = []
        for node, address in sources.items():
            try:
                have = [s.uuid for s in self.have(name)]
                with self.peers.open_send(node, address, name, snapshot, have) as inp:
                    return receive(
                        self.store,
                        name,
                        inp,
                        live=live,
                        expect=snapshot,
                        live_is=live_is,
                        quiet=True,  # (no container has it mounted here)
                    )
            except Exception as exc:  # (each source in turn; all their reasons are told)
                problems.append(f"{node[:12]}: {exc}")
        raise Refused(
            f"volume {name!r}: snapshot {snapshot[:12]} could not be fetched: "
            + "; ".join(problems)
        )


__all__ = ["Fetcher", "Peers"]
