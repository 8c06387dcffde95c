"""`stdin: X` on the real engine: kernel pipes between containers (issue 5)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_INSTANCE, LABEL_PIPELINE
from tests.conftest import BUSYBOX_IMAGE, WritePipeline, committed_output
from tests.integration.test_resume_docker import engine_starts

pytestmark = pytest.mark.docker
GIB = 1024**3


def status(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert main(["status", "-f", str(path), "--json"]) == 0
    return {i["instance"]: i for i in json.loads(capsys.readouterr().out)["instances"]}


def test_three_stage_chain_streams_a_gigabyte_exactly(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 64m}}}}
        steps:
          generate: {{command: ["head", "-c", "{GIB}", "/dev/zero"]}}
          transform: {{stdin: generate, command: ["tr", "\\\\000", "x"]}}
          count:
            stdin: transform
            command: >-
              mkfifo /tmp/copy; md5sum < /tmp/copy > /out/md5 &
              tee /tmp/copy | wc -c > /out/bytes; wait
    """)
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    out = committed_output(path, "count", capsys)
    expected = hashlib.md5(usedforsecurity=False)
    chunk = b"x" * (1 << 20)
    for _ in range(GIB // len(chunk)):
        expected.update(chunk)
    assert int((out / "bytes").read_text()) == GIB
    assert (out / "md5").read_text().split()[0] == expected.hexdigest()

    since = time.time()
    assert main(["run", "-f", str(path)]) == 0
    assert engine_starts(docker_runtime, pipeline_name, since) == []
    assert all(i["cached"] for i in status(path, capsys).values())


def test_consumer_killed_mid_stream_fails_the_pair_and_the_retry_succeeds(
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
          produce:
            command: 'if [ "$$DOCKYARD_ATTEMPT" = 1 ]; then yes; else echo fine; fi'
          consume:
            stdin: produce
            retries: 1
            command: "cat > /out/received"
    """)

    def kill_first_consumer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [
                c
                for c in docker_runtime.list(
                    {LABEL_PIPELINE: pipeline_name, LABEL_INSTANCE: "consume"}
                )
                if c.running
            ]
            if running:
                time.sleep(0.5)  # let bytes flow first
                docker_runtime.kill(running[0].id)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_first_consumer)
    killer.start()
    code = main(["run", "-f", str(path)])
    killer.join()
    assert code == 0, capsys.readouterr()
    rows = status(path, capsys)
    consume = rows["consume"]["attempts"]
    produce = rows["produce"]["attempts"]
    assert isinstance(consume, list) and isinstance(produce, list)
    assert [(a["state"], a["exit_code"]) for a in consume] == [("failed", 137), ("succeeded", 0)]
    assert [a["state"] for a in produce] == ["failed", "succeeded"]
    assert (committed_output(path, "consume", capsys) / "received").read_text() == "fine\n"


def test_failing_producer_stops_its_consumer_and_is_named(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 32m}}}}
        steps:
          produce: {{command: "echo partial; exit 3"}}
          consume: {{stdin: produce, command: "sleep 30; cat > /out/x"}}
    """)
    assert main(["run", "-f", str(path)]) == 1
    rows = status(path, capsys)
    assert rows["produce"]["reason"] == "exited with status 3"
    assert str(rows["consume"]["reason"]).startswith("stopped: its stream partner produce failed")


def test_a_chain_shares_one_cpu_quota_of_its_summed_cpus(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dockyard.execution.cgroups import pool_quota

    assert docker_runtime.shares_host_cgroups()
    path = write_pipeline(f"""
        version: 1
        name: {pipeline_name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{memory: 32m}}}}
        steps:
          produce: {{command: "sleep 3; echo hi", resources: {{cpus: 0.5}}}}
          consume: {{stdin: produce, command: "cat > /out/x", resources: {{cpus: 0.25}}}}
    """)
    seen: list[tuple[str, float | None]] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 2:
            for container in docker_runtime.list({LABEL_PIPELINE: pipeline_name}):
                if container.running and all(c != container.id for c, _ in seen):
                    config = docker_runtime.api.inspect_container(container.id)["HostConfig"]
                    pool = config["CgroupParent"].rsplit("/", 1)[0]  # /dockyard/<pool>/<member>
                    seen.append((container.id, pool_quota(pool)))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = main(["run", "-f", str(path)])
    watcher.join()
    assert code == 0, capsys.readouterr()
    assert [quota for _, quota in seen] == [0.75, 0.75]
