"""`dockyard node ls`: what dockyard's running containers hold on each node."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from dockyard.backends.choice import LOCAL, Backend
from dockyard.cli import main
from dockyard.cli import node as node_cli
from dockyard.cli.node import pool_use
from dockyard.runtime.base import (
    LABEL_CPUS,
    LABEL_MEMORY,
    LABEL_PIPELINE,
    ContainerInfo,
    HostCapacity,
    Node,
)
from dockyard.testing import FakeRuntime

NODES = [
    Node("n1", "one", HostCapacity(2, 4096)),
    Node("n2", "two", HostCapacity(2, 4096), state="down"),
]


def container(name: str, node: str, state: str = "running", **labels: str) -> ContainerInfo:
    return ContainerInfo(name, name, {LABEL_PIPELINE: "p", **labels}, state, node)


def test_running_containers_of_dockyard_count_on_their_node() -> None:
    uses = pool_use(
        NODES,
        [
            container("a", "n1", **{LABEL_CPUS: "0.5", LABEL_MEMORY: "100"}),
            container("b", "n1", **{LABEL_CPUS: "1", LABEL_MEMORY: "200"}),
            container("c", "n2", **{LABEL_CPUS: "1", LABEL_MEMORY: "300"}),
            container("ended", "n1", state="exited", **{LABEL_CPUS: "1", LABEL_MEMORY: "1"}),
            ContainerInfo("other", "other", {}, "running", "n1"),  # not dockyard's
            container("elsewhere", "n9", **{LABEL_CPUS: "1", LABEL_MEMORY: "1"}),
        ],
    )
    by_node = {u.node.id: (u.cpus, u.memory, sorted(u.instances)) for u in uses}
    assert by_node == {"n1": (1.5, 300, ["a", "b"]), "n2": (1.0, 300, ["c"])}


def _backend(agents: dict[str, str] | None, setups: list[str] | None = None) -> Backend:
    runtime = FakeRuntime(cluster=NODES)

    def setup(rt: object, note: Callable[[str], None]) -> None:
        assert setups is not None
        note("agent: starting a node agent on every node")
        setups.append("deployed")

    return replace(
        LOCAL,
        name="cluster",
        runtime=lambda: runtime,
        setup=setup if setups is not None else None,
        agents=(lambda rt: agents) if agents is not None else None,
    )


def test_node_ls_shows_each_agent_s_health_on_a_backend_with_agents(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = "[Errno 111] Connection refused \x1b[31m"
    backend = _backend({"n1": "ok", "n2": refused})
    monkeypatch.setattr(node_cli, "choose", lambda name: backend)
    assert main(["node", "ls", "--json"]) == 0
    rows = {row["id"]: row["agent"] for row in json.loads(capsys.readouterr().out)}
    assert rows == {"n1": "ok", "n2": refused}
    assert main(["node", "ls"]) == 0
    shown = capsys.readouterr().out
    # (markup and escapes shown as text; the table may wrap the cell)
    assert "[Errno" in shown and "\\x1b[31m" in shown and "\x1b" not in shown


def test_node_ls_has_no_agent_column_where_there_are_no_agents(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(node_cli, "choose", lambda name: _backend(None))
    assert main(["node", "ls", "--json"]) == 0
    assert all("agent" not in row for row in json.loads(capsys.readouterr().out))


def test_node_setup_deploys_then_says_how_each_agent_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setups: list[str] = []
    monkeypatch.setattr(node_cli, "choose", lambda name: _backend({"n1": "ok"}, setups))
    assert main(["node", "setup"]) == 0
    said = capsys.readouterr()
    assert setups == ["deployed"]
    assert "starting a node agent" in said.err
    assert said.out.splitlines() == ["one: agent ok", "two: agent no answer"]


def test_node_setup_on_the_local_backend_has_nothing_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["node", "setup", "--backend", "local"]) == 0
    assert "needs nothing set up" in capsys.readouterr().out
