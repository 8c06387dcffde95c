"""Resume and recovery on the real Docker Engine (issue 3's acceptance)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_PIPELINE
from dockyard.state.store import Store
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker


def engine_starts(runtime: DockerRuntime, pipeline: str, since: float) -> list[str]:
    """The containers of ``pipeline`` that the engine started since ``since`` (by its events)."""
    events = runtime.api.events(
        since=f"{since:.9f}",
        until=f"{time.time() + 1:.9f}",
        decode=True,
        filters={"type": "container", "event": "start", "label": f"{LABEL_PIPELINE}={pipeline}"},
    )
    return [e["Actor"]["Attributes"]["dockyard.instance"] for e in events]


def counting_pipeline(name: str) -> str:
    return f"""
        version: 1
        name: {name}
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 16m}}}}
        steps:
          count:
            scatter: {{f: {{glob: "data/*.txt"}}}}
            inputs: {{file: "./data/${{f}}"}}
            command: "wc -c < /in/file > /out/n"
          total:
            needs: [count]
            command: "cat /in/count/*/n > /out/all"
    """


def test_unchanged_rerun_starts_no_container_and_one_change_reruns_its_downstream(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(counting_pipeline(pipeline_name))
    (path.parent / "data").mkdir()
    for name in ("a", "b", "c"):
        (path.parent / "data" / f"{name}.txt").write_text(name * 3)
    assert main(["run", "-f", str(path)]) == 0

    since = time.time()
    assert main(["run", "-f", str(path)]) == 0
    assert engine_starts(docker_runtime, pipeline_name, since) == []
    capsys.readouterr()
    assert main(["status", "-f", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert all(i["cached"] for i in status["instances"])

    (path.parent / "data" / "b.txt").write_text("changed")
    since = time.time()
    assert main(["run", "-f", str(path)]) == 0
    assert sorted(engine_starts(docker_runtime, pipeline_name, since)) == ["count[b.txt]", "total"]


def test_sigkill_at_ten_random_moments_still_gives_the_undisturbed_outputs(
    tmp_path: Path,
    docker_runtime: DockerRuntime,
    pipeline_name: str,
) -> None:
    text = f"""version: 1
name: {pipeline_name}
defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 16m}}}}
steps:
  gen:
    scatter: {{i: [{", ".join(f'"{i}"' for i in range(10))}]}}
    command: "sleep 0.3; echo value-${{i}} > /out/v"
  square:
    needs: [gen]
    scatter: {{i: [{", ".join(f'"{i}"' for i in range(10))}]}}
    command: "sleep 0.2; cat /in/gen/v /in/gen/v > /out/v"
  mark:
    needs: [square]
    scatter: {{i: [{", ".join(f'"{i}"' for i in range(10))}]}}
    command: "wc -c < /in/square/v > /out/n; cat /in/square/v >> /out/n"
"""
    undisturbed = tmp_path / "undisturbed"
    chaos = tmp_path / "chaos"
    for folder in (undisturbed, chaos):
        folder.mkdir()
        (folder / "dockyard.yaml").write_text(text)

    def run(folder: Path, errors: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "dockyard", "run", "-f", str(folder / "dockyard.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )

    assert run(undisturbed).wait(timeout=300) == 0

    moments = random.Random(20261127)
    hit: set[str] = set()  # runs a kill left recorded as running: a later run closes each
    orphaned = False  # whether any kill left containers behind for the next run to adopt
    for _ in range(10):
        process = run(chaos)
        time.sleep(moments.uniform(0.3, 3.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        if (chaos / ".dockyard" / "state.db").exists():
            store = Store(chaos / ".dockyard" / "state.db")
            hit.update(r.id for r in store.runs() if r.state == "running")
            store.close()
        orphaned = orphaned or bool(docker_runtime.list({LABEL_PIPELINE: pipeline_name}))
    final = run(chaos, errors=subprocess.PIPE)
    _, errors = final.communicate(timeout=300)
    assert final.returncode == 0, errors

    def outputs(folder: Path) -> dict[str, str | None]:
        store = Store(folder / ".dockyard" / "state.db")
        rows = {r.instance: r.output for r in store.instances(store.run().id)}
        store.close()
        return rows

    expected = outputs(undisturbed)
    assert len(expected) == 30 and None not in expected.values()
    assert outputs(chaos) == expected
    store = Store(chaos / ".dockyard" / "state.db")
    runs = store.runs()
    kinds = [kind for run in runs for _, kind, _, _ in store.events(run.id)]
    store.close()
    assert hit  # the chaos did hit runs in progress (the first run alone takes ~10 s)
    assert {r.id: r.state for r in runs if r.id in hit} == dict.fromkeys(hit, "interrupted")
    assert kinds.count("recovered") >= 1
    assert kinds.count("adopted") >= 1 or not orphaned  # and their containers adopted
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
