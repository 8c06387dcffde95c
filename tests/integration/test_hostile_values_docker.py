"""Hole 6 on the real engine: a file name is data, never code run in the step's container."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_PIPELINE
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker

NAMES = ["$(id>&2).txt", "a`id`.txt", "a;id.txt", "sp ace.txt", "it's.txt", "a|b.txt", "a:b.txt"]


def data(folder: Path) -> None:
    (folder / "data").mkdir()
    for name in NAMES:
        (folder / "data" / name).write_text(f"content of {name}\n")


def test_shell_syntax_in_a_file_name_is_refused_before_anything_starts(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          count:
            image: "{BUSYBOX_IMAGE}"
            scatter: {{f: {{glob: "data/*.txt"}}}}
            inputs: {{data: ./data}}
            command: "wc -c /in/data/${{f}}"
    """)
    data(path.parent)
    for command in ("validate", "run"):
        code = main([command, "-f", str(path)])
        output = " ".join(capsys.readouterr().err.split())
        assert code == 2, output
        assert "'$(id>&2).txt'" in output and "shell syntax" in output
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
    assert not (path.parent / ".dockyard").exists()  # no run, no state


def test_in_the_exec_form_a_file_name_reaches_the_step_as_one_plain_argument(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          show:
            image: "{BUSYBOX_IMAGE}"
            resources: {{cpus: 0.25, memory: 16m}}
            scatter: {{f: {{glob: "data/*.txt"}}}}
            inputs: {{file: "data/${{f}}"}}
            env: {{NAME: "${{f}}"}}
            command: [sh, -c, 'printf "[%s] [%s] " "$1" "$NAME"; cat /in/file', sh, "${{f}}"]
    """)
    data(path.parent)
    code = main(["run", "-f", str(path)])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    for name in NAMES:
        assert main(["logs", "-f", str(path), f"show[{name}]"]) == 0
        logs = capsys.readouterr().out
        assert logs == f"[{name}] [{name}] content of {name}\n", logs
        assert "uid=" not in logs
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
