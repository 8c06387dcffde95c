"""`dockyard run` on the real Docker Engine: the acceptance checks of the foundation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_PIPELINE, LABEL_RUN
from dockyard.state.store import Store
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker
MIB = 1024**2


def dockyard(path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([args[0], "-f", str(path), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def latest_store(path: Path) -> Store:
    return Store(path.parent / ".dockyard" / "state.db")


def test_diamond_with_scatter_and_gather_runs_to_completion(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 32m}}}}
        steps:
          a: {{command: "echo root > /out/a.txt"}}
          b:
            needs: [a]
            scatter: {{sample: [x, y, z]}}
            command: "cat /in/a/a.txt > /out/v && echo ${{sample}} >> /out/v"
          c: {{needs: [a], command: "wc -c < /in/a/a.txt > /out/n"}}
          d:
            needs: [b, c]
            command: "cat /in/b/x/v /in/b/y/v /in/b/z/v /in/c/n > /out/gathered.txt"
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 0, output

    code, output = dockyard(path, "outputs", "d", capsys=capsys)
    assert code == 0, output
    gathered = Path(output.strip()) / "gathered.txt"
    assert gathered.read_text() == "root\nx\nroot\ny\nroot\nz\n5\n"

    code, output = dockyard(path, "outputs", "b[y]", capsys=capsys)
    assert (Path(output.strip()) / "v").read_text() == "root\ny\n"

    run_id = latest_store(path).run().id
    assert docker_runtime.list({LABEL_RUN: run_id}) == []
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []


def test_max_cpus_bounds_how_many_run_at_once(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = "\n".join(f'  s{i}: {{command: "sleep 1"}}' for i in range(4))
    path = write_pipeline(
        f"version: 1\nname: {pipeline_name}\n"
        f'defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 1, memory: 16m}}}}\n'
        f"steps:\n{steps}\n"
    )
    code, output = dockyard(path, "run", "--max-cpus", "2", capsys=capsys)
    assert code == 0, output
    store = latest_store(path)
    attempts = store.attempts(store.run().id)
    assert len(attempts) == 4
    for attempt in attempts:
        assert attempt.ended_at is not None
        overlapping = [
            other
            for other in attempts
            if other.started_at <= attempt.started_at < (other.ended_at or 0)
        ]
        assert len(overlapping) <= 2
    # and the four did not simply run one after another
    first_two_ends = sorted(a.ended_at or 0 for a in attempts)[1]
    assert sorted(a.started_at for a in attempts)[1] < first_two_ends


def test_memory_limit_is_set_in_the_step_cgroup(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          probe:
            image: "{BUSYBOX_IMAGE}"
            resources: {{cpus: 0.5, memory: 48m}}
            command: >-
              (cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null
              || cat /sys/fs/cgroup/memory.max) > /out/limit
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 0, output
    code, output = dockyard(path, "outputs", "probe", capsys=capsys)
    assert int((Path(output.strip()) / "limit").read_text()) == 48 * MIB


def test_step_over_its_memory_is_killed_and_reported_out_of_memory(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          greedy:
            image: "{BUSYBOX_IMAGE}"
            resources: {{memory: 24m}}
            command: ["awk", "BEGIN {{ s = \\"x\\"; while (1) s = s s }}"]
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 1, output
    code, output = dockyard(path, "status", "--json", capsys=capsys)
    status = json.loads(output)
    attempt = status["instances"][0]["attempts"][0]
    assert (attempt["reason"], attempt["exit_code"]) == ("out-of-memory", 137)
    assert status["instances"][0]["reason"].startswith("out of memory")


def test_failed_step_exits_1_and_keeps_its_logs(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          bad:
            image: "{BUSYBOX_IMAGE}"
            scatter: {{k: [one]}}
            command: "echo to-stdout; echo to-stderr >&2; exit 4"
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 1
    assert "bad[one]" in output and "status 4" in output
    code, output = dockyard(path, "logs", "bad[one]", capsys=capsys)
    assert code == 0
    assert "to-stdout" in output and "to-stderr" in output


def test_images_from_a_build_context_are_built_once_per_content(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    tmp_path: Path,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = tmp_path / "images" / "tool"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nCOPY motd /motd\n")
    (context / "motd").write_text("v1\n")
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        images:
          tool: {{build: ./images/tool}}
        steps:
          show: {{image: {{ref: tool}}, command: "cat /motd > /out/motd"}}
    """)
    try:
        assert dockyard(path, "run", capsys=capsys)[0] == 0
        first = Path(dockyard(path, "outputs", "show", capsys=capsys)[1].strip())
        assert (first / "motd").read_text() == "v1\n"

        code, output = dockyard(path, "run", capsys=capsys)
        assert code == 0 and "building" not in output

        (context / "motd").write_text("v2\n")
        code, output = dockyard(path, "run", capsys=capsys)
        assert code == 0 and "image tool: building" in output
        second = Path(dockyard(path, "outputs", "show", capsys=capsys)[1].strip())
        assert (second / "motd").read_text() == "v2\n"
    finally:
        images = docker_runtime.api.images(name=f"dockyard/{pipeline_name}-tool")
        for image in images:
            docker_runtime.api.remove_image(image["Id"], force=True)


def test_unreachable_engine_exits_3_with_a_hint(
    write_pipeline: WritePipeline,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    path = write_pipeline(f"""
        version: 1
        name: unreachable
        steps:
          a: {{image: "{BUSYBOX_IMAGE}", command: "true"}}
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 3
    assert "cannot reach the Docker Engine" in output and "start it" in output
    assert "Traceback" not in output


def test_sigterm_stops_the_run_and_removes_its_containers(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 16m}}}}
        steps:
          long: {{scatter: {{i: ["1", "2"]}}, command: "sleep 120"}}
    """)
    process = subprocess.Popen(
        [sys.executable, "-m", "dockyard", "run", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            len([c for c in docker_runtime.list({LABEL_PIPELINE: pipeline_name}) if c.running]) < 2
        ):
            assert time.monotonic() < deadline, "containers never started"
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, output
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
    store = latest_store(path)
    run = store.run()
    assert run.state == "interrupted"
    assert {i.state for i in store.instances(run.id)} == {"interrupted"}


def test_step_failing_once_succeeds_on_its_retry_with_two_attempts(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          flaky:
            image: "{BUSYBOX_IMAGE}"
            retries: 1
            command: "test $$DOCKYARD_ATTEMPT -ge 2 || exit 7; echo ok > /out/x"
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 0, output
    code, output = dockyard(path, "status", "--json", capsys=capsys)
    attempts = json.loads(output)["instances"][0]["attempts"]
    assert [(a["state"], a["exit_code"]) for a in attempts] == [("failed", 7), ("succeeded", 0)]
    code, output = dockyard(path, "status", capsys=capsys)
    assert "attempt 1" in output and "attempt 2" in output


def test_out_of_memory_step_succeeds_with_memory_factor(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          grow:
            image: "{BUSYBOX_IMAGE}"
            resources: {{memory: 24m}}
            retries: {{max: 1, memory_factor: 4}}
            command: ["awk", "BEGIN {{ s = \\"x\\"; while (length(s) < 16777216) s = s s }}"]
    """)
    code, output = dockyard(path, "run", capsys=capsys)
    assert code == 0, output
    code, output = dockyard(path, "status", "--json", capsys=capsys)
    attempts = json.loads(output)["instances"][0]["attempts"]
    assert [(a["reason"], a["memory"]) for a in attempts] == [
        ("out-of-memory", 24 * MIB),
        ("exited", 96 * MIB),
    ]


def test_peak_memory_and_cpu_time_are_recorded_per_attempt(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        steps:
          hold:
            image: "{BUSYBOX_IMAGE}"
            resources: {{memory: 128m}}
            # 48 MiB in tmpfs is charged to the container's memory cgroup
            command: "dd if=/dev/zero of=/dev/shm/x bs=1M count=48 2>/dev/null"
    """)
    assert dockyard(path, "run", capsys=capsys)[0] == 0
    code, output = dockyard(path, "status", "--json", capsys=capsys)
    assert code == 0
    attempt = json.loads(output)["instances"][0]["attempts"][0]
    assert 48 * MIB <= attempt["peak_memory"] <= 48 * MIB * 1.10
    assert attempt["cpu_seconds"] > 0
    code, output = dockyard(path, "trace", capsys=capsys)
    assert code == 0
    header, row = output.splitlines()[:2]
    values = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert values["instance"] == "hold" and int(values["peak_memory"]) >= 48 * MIB
    assert values["node"] == "local"  # (a Swarm node's id with --backend swarm)


def test_steps_get_no_network_unless_they_ask_for_it(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 16m}}}}
        steps:
          sealed: {{command: "ls /sys/class/net > /out/interfaces"}}
          online: {{network: true, command: "ls /sys/class/net > /out/interfaces"}}
    """)
    assert dockyard(path, "run", capsys=capsys)[0] == 0

    def interfaces(step: str) -> list[str]:
        code, output = dockyard(path, "outputs", step, capsys=capsys)
        assert code == 0
        return (Path(output.strip()) / "interfaces").read_text().split()

    assert interfaces("sealed") == ["lo"]
    assert "eth0" in interfaces("online")
