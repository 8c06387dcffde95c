"""A CWL workflow on the three-node local Swarm (`dockyard-cwl --backend swarm`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.testing.swarm import LocalSwarm
from tests.integration.test_cwl_docker import SCATTER_GATHER, runner, write

pytest.importorskip("cwltool")
pytestmark = [pytest.mark.docker, pytest.mark.swarm]


def test_a_scattered_workflow_runs_on_the_swarm(tmp_path: Path, on_swarm: LocalSwarm) -> None:
    workflow = write(tmp_path, "greet.cwl", SCATTER_GATHER)
    job = write(tmp_path, "job.yml", "names: [ada, grace, linus, barbara]\n")
    cache = tmp_path / "state"
    done = runner(
        "--backend", "swarm", "--outdir", tmp_path / "o", "--cachedir", cache, workflow, job
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["all"]
    assert Path(found["path"]).read_text() == (
        "hello ada\nhello grace\nhello linus\nhello barbara\n"
    )


def test_initial_work_dir_on_the_swarm_is_refused_clearly(
    tmp_path: Path, on_swarm: LocalSwarm
) -> None:
    tool = write(
        tmp_path,
        "iwd.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          InitialWorkDirRequirement: {listing: [{entryname: a.txt, entry: "x"}]}
        baseCommand: [cat, a.txt]
        inputs: []
        outputs: []
        """,
    )
    done = runner("--backend", "swarm", "--outdir", tmp_path / "o", tool)
    assert done.returncode == 33  # (a requirement dockyard does not support there)
    assert "not supported on a cluster yet" in done.stderr
