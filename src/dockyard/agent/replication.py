"""Replication of a volume's published snapshots: after each publish, the snapshot is sent
in the background to a number of other nodes that are up (each pulls the increment over
what it keeps) and recorded as a holder in the volume's lease."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dockyard.agent.background import Background
from dockyard.agent.leases import LeaseAccess

if TYPE_CHECKING:
    from dockyard.agent.fetching import Peers


class Replicator:
    def __init__(
        self,
        node: str,
        leases: LeaseAccess,
        peers: Peers,
        replicas: int,
        log: Callable[[str], None],
    ):
        self.node = node
        self.leases = leases
        self.peers = peers
        self.replicas = replicas  # other nodes that keep each published snapshot
        self.log = log
        self.threads = Background()

    def later(self, name: str, snapshot: str, prefer: list[str]) -> None:
        """Send ``snapshot`` to :attr:`replicas` other nodes that are up, in the background:
        first to those in ``prefer`` (they kept the one before: they need the increment)."""
        if self.replicas <= 0:
            return
        self.threads.start(lambda: self._send(name, snapshot, prefer))

    def wait(self, timeout: float) -> None:
        """Wait for the replications under way (for tests and a clean stop)."""
        self.threads.wait(timeout)

    def _send(self, name: str, snapshot: str, prefer: list[str]) -> None:
        try:
            _, nodes = self.leases.get(name)
            others = sorted(
                (n for n in nodes if n != self.node), key=lambda n: (n not in prefer, n)
            )
            done = 0
            for node in others:
                if done >= self.replicas:
                    break
                try:
                    here = {self.node: nodes[self.node]} if self.node in nodes else {}
                    self.peers.pull(node, nodes[node], name, snapshot, here)
                    self.leases.holder(name, snapshot, node)
                    done += 1
                except Exception as exc:  # (the next node, then the next publish)
                    self.log(f"replicating {name} to {node[:12]}: {exc}")
        except Exception as exc:
            self.log(f"replicating {name}: {exc}")


__all__ = ["Replicator"]
