"""Packing by use on the real engine: the kernel's counters tell what a step used, and the
next run reserves that, so more of it runs at once; the declared cpus stay its limit."""

from __future__ import annotations

import json

import pytest

from dockyard.cli import main
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker


def overlapping(attempts: list[dict[str, float]]) -> int:
    """The most attempts that ran at the same moment."""
    edges = sorted(
        [(a["started_at"], 1) for a in attempts] + [(a["ended_at"], -1) for a in attempts]
    )
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_a_step_that_used_little_cpu_packs_tighter_next_time(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          wait:
            image: "{BUSYBOX_IMAGE}"
            scatter: {{n: [a, b, c, d]}}
            resources: {{cpus: 1, memory: 16m}}
            command: "sleep 1.5; cat /sys/fs/cgroup/cpu.max > /out/limit || true"
    """)
    runs = []
    for _ in range(2):
        assert main(["run", "-f", str(path), "--no-cache", "--max-cpus", "1"]) == 0
        capsys.readouterr()
        assert main(["status", "-f", str(path), "--json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    first, second = ([a for i in run["instances"] for a in i["attempts"]] for run in runs)
    if any(a["cpu_seconds"] is None for a in first):
        pytest.skip("the engine's cgroups are not readable here: no CPU use to pack by")
    # a first run knows nothing: each reserves its 1 CPU, one at a time on 1 CPU
    assert overlapping(first) == 1
    assert all(a["reserved_cpus"] is None for a in first)
    # the second knows each used next to nothing: all four at once, each still limited to 1
    assert overlapping(second) == 4
    assert all(a["reserved_cpus"] == pytest.approx(0.05) for a in second)
    assert all(a["cpus"] == 1.0 for a in second)
    sizing = {s["step"]: s for s in runs[1]["steps"]}["wait"]
    assert sizing["cpus_used"] < 0.1 and "CPU over-asked" in " ".join(sizing["notes"])
