"""Images made from Debian packages on the real engine: failed and interrupted builds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.home import data_root
from tests.conftest import WritePipeline

pytestmark = pytest.mark.docker


@pytest.mark.timeout(300)
def test_a_package_that_does_not_exist_stops_the_build_with_apts_words(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    docker_runtime: object,
) -> None:
    # The Debian base is made once per machine (as a user's is): this test's own data root
    # shares that cache, and keeps its build scratch to itself.
    machine_cache = data_root() / "cache" / "debian"
    machine_cache.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "debian").symlink_to(machine_cache)
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    path = write_pipeline(
        """
        version: 1
        name: bad-image
        images:
          nope:
            debian: {include: [no-such-package-dockyard]}
            tag: dockyard-test/nope:1
        steps:
          a: {image: {ref: nope}, command: "true"}
        """
    )
    assert main(["build", "-f", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "images.nope: apt-get install failed" in err
    assert "Unable to locate package no-such-package-dockyard" in err
    assert "Traceback" not in err
    assert list((home / "build").iterdir()) == []  # the scratch folder is gone
    from dockyard.backends.local.runtime import DockerRuntime

    assert isinstance(docker_runtime, DockerRuntime)
    assert docker_runtime.image_id("dockyard-test/nope:1") is None

    # `run` resolves images before it starts anything: same refusal, no run recorded.
    assert main(["run", "-f", str(path)]) == 2
    assert "no-such-package-dockyard" in capsys.readouterr().err
    assert main(["status", "-f", str(path)]) == 2
    assert "no run" in capsys.readouterr().err


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # it ended meanwhile
    return found


@pytest.mark.timeout(300)
def test_an_interrupted_build_stops_debootstrap_and_leaves_nothing(
    write_pipeline: WritePipeline, tmp_path: Path, docker_runtime: object
) -> None:
    home = tmp_path / "home"
    path = write_pipeline(
        """
        version: 1
        name: stopped-image
        images:
          hello:
            debian: {include: [hello]}
            tag: dockyard-test/hello:1
        steps:
          a: {image: {ref: hello}, command: "hello"}
        """
    )
    build = subprocess.Popen(
        [str(Path(sys.executable).parent / "dockyard"), "build", "-f", str(path)],
        env={**os.environ, "DOCKYARD_HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert build.stderr is not None
        line = build.stderr.readline()  # "image hello: debootstrap ..." once it began
        assert "debootstrap" in line, line
        deadline = time.monotonic() + 60
        while not list((home / "build").glob("*/base/debootstrap")):  # it is at work
            assert time.monotonic() < deadline and build.poll() is None
            time.sleep(0.2)
        build.send_signal(signal.SIGTERM)
        assert build.wait(timeout=60) == 130
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
        if build.stderr is not None:
            build.stderr.close()
    assert _processes_mentioning(str(home)) == []  # debootstrap and its children are gone
    assert list((home / "build").iterdir()) == []
    from dockyard.backends.local.runtime import DockerRuntime

    assert isinstance(docker_runtime, DockerRuntime)
    assert docker_runtime.image_id("dockyard-test/hello:1") is None
