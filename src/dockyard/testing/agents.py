"""Node agents as threads on loopback, for tests: real HTTP, real files, one folder per
node under one root (as the local test cluster's nodes share a disk)."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from dockyard.agent.server import AgentServer, NodeStore
from dockyard.storage.agents import AgentPool

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

    ticks = itertools.count(step=60)  # (each look at the addresses is a fresh one)
    pool = AgentPool(addresses, key, str(root), clock=lambda: float(next(ticks)))
    pool.stop = lambda node: _stop(running.pop(node))  # type: ignore[attr-defined]
    try:
        yield pool
    finally:
        for server in running.values():
            _stop(server)


def _stop(server: AgentServer) -> None:
    server.shutdown()
    server.server_close()
