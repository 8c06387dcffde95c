"""Node agents as threads on loopback, for tests: real HTTP, real files, one folder per
node under one root (as the local test cluster's nodes share a disk)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.agent.leases import LeaseAccess
from dockyard.agent.node_volumes import NodeVolumes
from dockyard.agent.server import AgentServer, NodeStore
from dockyard.agent.volume_routes import AgentPeers, LocalLeases, RemoteLeases
from dockyard.backends.swarm.ports import AgentPool
from dockyard.disk.volumes import VolumeStore
from dockyard.testing.fake_leases import MemoryLeases

TEST_KEY = bytes(range(32))


@contextlib.contextmanager
def running_agents(root: Path, nodes: Sequence[str], key: bytes = TEST_KEY) -> Iterator[AgentPool]:
    """One agent per node; the pool reaches those still running (:func:`stop` one to lose
    its node)."""
    servers = {
        node: AgentServer(("127.0.0.1", 0), NodeStore(node, str(root), str(root), key))
        for node in nodes
    }
    for server in servers.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    running = dict(servers)

    def addresses() -> dict[str, str]:
        return {n: f"127.0.0.1:{s.server_address[1]}" for n, s in running.items()}

    pool = AgentPool(addresses, key, str(root))
    pool.stop = lambda node: _stop(running.pop(node))  # type: ignore[attr-defined]
    try:
        yield pool
    finally:
        for server in running.values():
            _stop(server)


def _stop(server: AgentServer) -> None:
    server.shutdown()
    server.server_close()


@dataclass
class VolumeCluster:
    """Agents that keep volumes, one per node on its own loopback address (all on one
    port, as on a cluster); the first node is the manager, which keeps the leases."""

    leases: MemoryLeases
    servers: dict[str, AgentServer]
    port: int

    def volumes(self, node: str) -> NodeVolumes:
        found = self.servers[node].store.volumes
        assert found is not None
        return found

    def address(self, node: str) -> str:
        return f"{self.leases.addresses[node]}:{self.port}"

    def settle(self) -> None:
        """Wait for the snapshots the last unmounts take, then for every replication under
        way, then for the snapshot trees each node builds after a hand-off."""
        for server in self.servers.values():
            if server.store.volumes is not None:
                server.store.volumes.releaser.wait(30.0)
        for server in self.servers.values():
            if server.store.volumes is not None:
                server.store.volumes.replicator.wait(30.0)
        for server in self.servers.values():
            if server.store.volumes is not None:
                server.store.volumes.settler.wait(30.0)


@contextlib.contextmanager
def volume_agents(
    root: Path, nodes: Sequence[str], key: bytes = TEST_KEY, replicas: int = 1
) -> Iterator[VolumeCluster]:
    port = _free_port()
    leases = MemoryLeases({node: f"127.0.0.{i + 2}" for i, node in enumerate(nodes)})
    manager = nodes[0]
    servers = {}
    for node in nodes:
        store = NodeStore(node, str(root), str(root), key)
        access: LeaseAccess
        if node == manager:
            store.leases = access = LocalLeases(leases, port, node, time.time)
        else:
            access = RemoteLeases({manager: f"{leases.addresses[manager]}:{port}"}, key, node)
        store.volumes = NodeVolumes(
            node=node,
            store=VolumeStore(root / node),
            host_root=root / node / "volumes",
            leases=access,
            peers=AgentPeers(key),
            replicas=replicas,
            log=lambda message: None,
        )
        servers[node] = AgentServer((leases.addresses[node], port), store)
    for server in servers.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    cluster = VolumeCluster(leases, servers, port)
    try:
        yield cluster
    finally:
        cluster.settle()
        for server in servers.values():
            _stop(server)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
