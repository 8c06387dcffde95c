"""The container engine restarting under a run, on a real dockerd of the test's own (issue 15).

Each test starts a private engine (own socket, data-root, exec-root, pidfile, namespaces;
see dockyard.testing.dockerd), runs a pipeline against it with `dockyard run` in a child
process, stops or kills that engine while four attempts run, starts it again, and checks
that the run completes with the outputs of an undisturbed run, no retry spent (the
pipeline allows none), and no container left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.runtime.base import LABEL_PIPELINE
from dockyard.testing.dockerd import PrivateEngine
from tests.conftest import BUSYBOX_IMAGE

pytestmark = pytest.mark.docker

VALUES = ["1", "2", "3", "4", "5", "6"]
RUN_TIMEOUT = 180.0


def pipeline(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dockyard.yaml"
    path.write_text(
        f"""
version: 1
name: {name}
defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.25, memory: 32m}}}}
steps:
  work:                                   # four at a time in one CPU: two wait their turn
    scatter: {{n: [{", ".join(VALUES)}]}}
    command: "sleep 3; echo ${{n}} > /out/n"
  total:
    needs: [work]
    command: "cd /in/work && cat 1/n 2/n 3/n 4/n 5/n 6/n > /out/all"
"""
    )
    return path


@pytest.fixture(params=[False, True], ids=["no-live-restore", "live-restore"])
def engine(request: pytest.FixtureRequest) -> Iterator[PrivateEngine]:
    private = PrivateEngine(live_restore=request.param)
    try:
        private.start()
        private.load_busybox()
        yield private
    finally:
        private.close()


def dockyard(
    engine: PrivateEngine, home: Path, *args: str, patience: float = 120
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DOCKER_HOST": engine.url,
        "DOCKYARD_HOME": str(home),
        "DOCKYARD_ENGINE_PATIENCE": str(patience),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dockyard", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def containers(engine: PrivateEngine, name: str, *, running: bool = False) -> list[dict[str, str]]:
    client = engine.client()
    try:
        found = client.containers(all=not running, filters={"label": f"{LABEL_PIPELINE}={name}"})
    finally:
        client.close()
    return list(found)


def wait_until_running(engine: PrivateEngine, name: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(containers(engine, name, running=True)) < count:
        assert time.monotonic() < deadline, f"{count} attempts never ran at once"
        time.sleep(0.1)


def status(engine: PrivateEngine, home: Path, path: Path) -> dict[str, object]:
    shown = dockyard(engine, home, "status", "-f", str(path), "--json")
    out, _ = shown.communicate(timeout=60)
    assert shown.returncode == 0, out
    result: dict[str, object] = json.loads(out)
    return result


def committed(engine: PrivateEngine, home: Path, path: Path, instance: str) -> Path:
    shown = dockyard(engine, home, "outputs", "-f", str(path), instance)
    out, _ = shown.communicate(timeout=60)
    assert shown.returncode == 0, out
    return Path(out.strip())


def check_completed(engine: PrivateEngine, home: Path, path: Path, name: str) -> list[str]:
    """The run's outputs are an undisturbed run's, and nothing of it is left on the engine.
    Returns the reasons of the attempts that did not succeed."""
    assert (committed(engine, home, path, "total") / "all").read_text() == "".join(
        f"{v}\n" for v in VALUES
    )
    for value in VALUES:
        assert (committed(engine, home, path, f"work[{value}]") / "n").read_text() == f"{value}\n"
    summary = status(engine, home, path)
    instances = summary["instances"]
    assert isinstance(instances, list)
    assert {i["state"] for i in instances} == {"succeeded"}
    others = [
        str(a["reason"]) for i in instances for a in i["attempts"] if a["state"] != "succeeded"
    ]
    assert set(others) <= {"lost"}, others  # an engine restart never spends a retry
    assert containers(engine, name) == []
    return others


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_run_completes_across_an_engine_restart(
    engine: PrivateEngine, tmp_path: Path, pipeline_name: str, how: signal.Signals
) -> None:
    path = pipeline(tmp_path / "p", pipeline_name)
    home = tmp_path / "home"
    run = dockyard(engine, home, "run", "-f", str(path), "--max-cpus", "1")
    try:
        wait_until_running(engine, pipeline_name, 4)
        engine.stop(how)
        time.sleep(2)
        engine.start()
        out, _ = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out
    assert "the container engine answers again" in out
    lost = check_completed(engine, home, path, pipeline_name)
    if engine.live_restore:
        assert lost == []  # the containers ran on; dockyard watched them again
    else:
        assert len(lost) == 4  # the four that ran were stopped by the engine and ran again


def test_an_engine_away_longer_than_the_patience_stops_the_run_then_a_rerun_completes(
    engine: PrivateEngine, tmp_path: Path, pipeline_name: str
) -> None:
    path = pipeline(tmp_path / "p", pipeline_name)
    home = tmp_path / "home"
    run = dockyard(engine, home, "run", "-f", str(path), "--max-cpus", "1", patience=3)
    try:
        wait_until_running(engine, pipeline_name, 4)
        engine.stop(signal.SIGKILL)
        out, _ = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3, out
    assert "did not answer for" in out and "DOCKYARD_ENGINE_PATIENCE" in out
    assert "Traceback" not in out
    engine.start()
    again = dockyard(engine, home, "run", "-f", str(path), "--max-cpus", "1")
    out, _ = again.communicate(timeout=RUN_TIMEOUT)
    assert again.returncode == 0, out
    check_completed(engine, home, path, pipeline_name)
