"""Outputs between node agents: sparse files stay sparse, a fetch is bounded by what the
holder's seal counted, and an output past the limits fails its attempt (not its node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.agent.client import AgentError
from dockyard.agent.trees import Bounds, read_record
from dockyard.backends.swarm.ports import AgentOutputs, AgentUnavailable, AgentWorkspace
from dockyard.disk import sealing
from dockyard.disk.kept import Staging
from dockyard.testing.agents import running_agents

GiB = 1 << 30


def _staging(workspace: AgentWorkspace, node: str, name: str) -> Staging:
    staging = workspace.staging("run-1", name, 1, node)
    workspace.make(staging)
    return staging


def test_a_sparse_output_is_fetched_sparse_by_another_node(tmp_path: Path) -> None:
    with running_agents(tmp_path / "agents", ["n1", "n2"]) as pool:
        outputs = AgentOutputs(pool, tmp_path / "local")
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        staging = _staging(workspace, "n1", "sparse")
        with (staging.path / "z").open("wb") as fh:
            fh.truncate(64 * GiB)
            fh.write(b"data")
        sealed = outputs.seal(staging)
        assert (sealed.size, sealed.data, sealed.entries) == (64 * GiB, 1 << 16, 1)
        digest = outputs.commit(staging, sealed).digest
        outputs.bring([digest], "n2")
        there = Path(outputs.bind(digest, "n2")) / "z"
        assert there.stat().st_size == 64 * GiB and there.stat().st_blocks * 512 < 1 << 20
        n2_store = tmp_path / "agents" / "n2" / "outputs"
        assert read_record(n2_store, digest) == Bounds.of(sealed)  # (n2 can pass it on)
        local = outputs.locate(digest) / "z"
        assert local.stat().st_blocks * 512 < 1 << 20


def test_a_fetch_is_bounded_by_the_holders_record(tmp_path: Path) -> None:
    with running_agents(tmp_path / "agents", ["n1", "n2"]) as pool:
        outputs = AgentOutputs(pool, tmp_path / "local")
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        staging = _staging(workspace, "n1", "dense")
        (staging.path / "f").write_bytes(os.urandom(3 << 20))
        digest = outputs.commit(staging, outputs.seal(staging)).digest
        store = tmp_path / "agents" / "n1" / "outputs"
        record = store.with_name("outputs.records") / digest
        record.write_text('{"size": 3145728, "data": 1048576, "files": 1, "entries": 1}')
        with pytest.raises(AgentError, match="more data than it holds"):
            pool.client("n1").fetch_into(digest, tmp_path / "elsewhere")
        record.unlink()  # (kept by an agent that kept no records)
        with pytest.raises(AgentError, match="no record of what it holds"):
            pool.client("n1").fetch_into(digest, tmp_path / "elsewhere")
        assert not (tmp_path / "elsewhere" / digest).exists()


def test_an_output_past_the_limits_fails_its_attempt_not_its_node(tmp_path: Path) -> None:
    with running_agents(tmp_path / "agents", ["n1"]) as pool:
        outputs = AgentOutputs(pool, tmp_path / "local")
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        staging = _staging(workspace, "n1", "deep")
        fd = os.open(staging.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(1001):
                os.mkdir("d", dir_fd=fd)
                deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = deeper
        finally:
            os.close(fd)
        with pytest.raises(sealing.OutputRefused, match="more than 1,000 deep") as caught:
            outputs.seal(staging)
        assert not isinstance(caught.value, AgentUnavailable)  # (a lost attempt reruns)
        outputs.discard(staging)
        assert not staging.path.exists()


def test_an_input_folder_is_sent_within_its_bounds(tmp_path: Path) -> None:
    reads = tmp_path / "reads"
    reads.mkdir()
    with (reads / "sparse.bin").open("wb") as fh:
        fh.truncate(GiB)
    (reads / "r1.fq").write_text("@r1\nACGT\n")
    with running_agents(tmp_path / "agents", ["n1"]) as pool:
        workspace = AgentWorkspace(pool, "proj", tmp_path / "state")
        folder = Path(workspace.provide(reads, "n1"))
        assert (folder / "sparse.bin").stat().st_blocks == 0
        assert read_record(folder.parent, folder.name) == Bounds(GiB + 9, 9, 2, 2)
