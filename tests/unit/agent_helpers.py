"""A real node agent served in-process on loopback, and a client signed for it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from dockyard.agent.client import AgentClient
from dockyard.agent.gate import Limits
from dockyard.agent.node_store import NodeStore
from dockyard.agent.pace import Rate
from dockyard.agent.quietlog import QuietLog
from dockyard.agent.server import AgentServer

KEY = bytes(range(32))
SECONDS = 20.0  # the most a test waits for the server to stop


@contextlib.contextmanager
def serving(
    tmp_path: Path, limits: Limits | None = None, log: QuietLog | None = None
) -> Iterator[AgentServer]:
    """The agent of node ``nodea`` (its root under ``tmp_path``), until the block ends."""
    root = tmp_path / "agents"
    store = NodeStore("nodea", str(root), str(root), KEY)
    server = AgentServer(("127.0.0.1", 0), store, limits, log)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SECONDS)


def signed_client(server: AgentServer, rate: Rate | None = None) -> AgentClient:
    return AgentClient(f"127.0.0.1:{server.server_address[1]}", KEY, "nodea", rate=rate)
