"""The other half of `validate` agreeing with `run`: what validate accepts at the very
edge of each bound, the real engine runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.names import CAPABILITIES
from dockyard.runtime.base import DEFAULT_CAPABILITIES, LABEL_PIPELINE
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker


def test_a_step_at_every_lower_bound_runs(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    longest = "n" * 180 + ".txt"  # edge[...] is the longest instance name, 190 characters
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        volumes: {{scratch: {{}}}}
        steps:
          edge:
            image: "{BUSYBOX_IMAGE}"
            resources: {{cpus: 0.01, memory: 6m, pids: 8}}
            retries: {{max: 1, memory_factor: 64, backoff: 720h}}
            timeout: 720h
            cap_add: [net_raw]
            scatter: {{f: {{glob: "data/*.txt"}}}}
            inputs: {{file: "data/${{f}}"}}
            env: {{my.setting-1: "${{f}}"}}
            volumes: {{scratch: /./scratch}}
            command: [sh, -c, 'cat /in/file; grep CapEff /proc/self/status; ls -d /scratch']
    """)
    (path.parent / "data").mkdir()
    (path.parent / "data" / longest).write_text("longest name\n")
    assert main(["validate", "-f", str(path)]) == 0, capsys.readouterr()
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["logs", "-f", str(path), f"edge[{longest}]"]) == 0
    logs = capsys.readouterr().out
    assert logs.startswith("longest name\n") and "/scratch" in logs
    effective = re.search(r"CapEff:\s*([0-9a-f]+)", logs)
    assert effective is not None, logs
    mask = int(effective.group(1), 16)
    assert {c for bit, c in enumerate(CAPABILITIES) if mask >> bit & 1} == {
        *DEFAULT_CAPABILITIES,
        "NET_RAW",
    }
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
