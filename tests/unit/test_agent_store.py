"""The storage ports through node agents (dockyard.backends.swarm.ports), between two nodes:
what the single-node contract suite cannot show."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.agent.client import AgentClient, AgentError
from dockyard.backends.swarm.ports import AgentOutputs, AgentUnavailable, AgentWorkspace
from dockyard.disk import sealing
from dockyard.errors import EngineUnavailable
from dockyard.execution.ports import OutputsLost
from dockyard.testing.agents import running_agents


def _committed(outputs: AgentOutputs, workspace: AgentWorkspace, node: str, text: str) -> str:
    staging = workspace.staging("run-1", f"step[{text}]", 1, node)
    workspace.make(staging)
    (staging.path / "result.txt").write_text(text)
    return outputs.commit(staging, outputs.seal(staging)).digest


def test_an_output_is_brought_to_the_node_that_reads_it(tmp_path: Path) -> None:
    with running_agents(tmp_path / "agents", ["n1", "n2"]) as pool:
        outputs = AgentOutputs(pool, tmp_path / "local")
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        digest = _committed(outputs, workspace, "n1", "42")
        there = Path(outputs.bind(digest, "n2"))
        assert not there.exists()  # bind names; bring fetches
        outputs.bring([digest, digest], "n2")
        assert (there / "result.txt").read_text() == "42"
        assert sealing.tree_digest(there)[0] == digest
        assert outputs.holders(digest) == (["n1", "n2"], [])
        local = outputs.locate(digest)
        assert local == tmp_path / "local" / digest and (local / "result.txt").read_text() == "42"


def test_an_output_kept_only_on_a_lost_node_no_longer_exists(tmp_path: Path) -> None:
    with running_agents(tmp_path / "agents", ["n1", "n2"]) as pool:
        outputs = AgentOutputs(pool, tmp_path / "local")
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        digest = _committed(outputs, workspace, "n1", "42")
        staging = workspace.staging("run-1", "other", 1, "n1")
        workspace.make(staging)
        pool.stop("n1")  # type: ignore[attr-defined]
        assert not outputs.exists(digest)  # a cache hit on it is not one: it is made again
        with pytest.raises(OutputsLost, match="no node that is up"):
            outputs.bring([digest], "n2")
        outputs.discard(staging)  # a staging on a lost node: nothing to do, no error
        with pytest.raises(AgentUnavailable):
            workspace.make(workspace.staging("run-1", "x", 1, "n1"))


def test_inputs_are_sent_once_per_node_and_content(tmp_path: Path, monkeypatch) -> None:
    sent: list[str] = []
    for name in ("put_tree", "put_lone_file"):
        original = getattr(AgentClient, name)

        def counted(self, digest, *args, _original=original):  # type: ignore[no-untyped-def]
            sent.append(digest)
            return _original(self, digest, *args)

        monkeypatch.setattr(AgentClient, name, counted)
    reads = tmp_path / "reads"
    reads.mkdir()
    (reads / "r1.fq").write_text("@r1\nACGT\n")
    reference = tmp_path / "ref.fa"
    reference.write_text(">chr1\nACGT\n")
    with running_agents(tmp_path / "agents", ["n1", "n2"]) as pool:
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        folder = Path(workspace.provide(reads, "n1"))
        lone = Path(workspace.provide(reference, "n1"))
        assert (folder / "r1.fq").read_text() == "@r1\nACGT\n"
        assert lone.name == sealing.LONE_FILE and lone.read_text() == ">chr1\nACGT\n"
        assert folder.is_relative_to(tmp_path / "agents" / "n1" / "outputs")
        assert workspace.provide(reads, "n1") == str(folder)  # sent once
        assert len(sent) == 2
        workspace.provide(reads, "n2")
        assert len(sent) == 3
        reference.write_text(">chr1\nACGTT\n")  # changed: sent again, under its new digest
        assert workspace.provide(reference, "n1") != str(lone)
        assert len(sent) == 4


def test_a_link_is_not_provided(tmp_path: Path) -> None:
    (tmp_path / "ref.fa").write_text(">chr1\n")
    (tmp_path / "link").symlink_to(tmp_path / "ref.fa")
    with running_agents(tmp_path / "agents", ["n1"]) as pool:
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        with pytest.raises(OSError):
            workspace.provide(tmp_path / "link", "n1")


def test_nodes_whose_addresses_cannot_be_read_are_an_agent_failure(tmp_path: Path) -> None:
    """(The last addresses seen hold while the manager is away: the runtime's view of the
    nodes keeps them, see test_swarm_tasks.py; with none seen yet, a clear failure.)"""
    with running_agents(tmp_path / "agents", ["n1"]) as pool:

        def addresses() -> dict[str, str]:
            raise EngineUnavailable("the manager is restarting")

        pool._addresses = addresses
        with pytest.raises(AgentUnavailable, match="restarting"):
            AgentOutputs(pool, tmp_path / "local").exists("a" * 64)


def test_a_tree_sent_to_an_agent_that_went_away_is_an_agent_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "reads").mkdir()
    with pytest.raises(AgentError):  # (not a crash in the sending thread)
        AgentClient(f"127.0.0.1:{port}", bytes(32), "n1").put_tree("a" * 64, tmp_path / "reads")
