"""Shared fixtures: pipeline files in temporary folders, and the real Docker Engine."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard.runtime.base import LABEL_PIPELINE
from dockyard.testing.images import BUSYBOX_IMAGE

REPO = Path(__file__).resolve().parents[1]
SHARED_CONFORMANCE = REPO.parent / "shared" / "conformance"

WritePipeline = Callable[[str], Path]
REQUIRE_ENGINE = "DOCKYARD_REQUIRE_ENGINE"  # set (CI): an engine that does not answer fails


def _engine_problem() -> str | None:
    """Why no Docker Engine answers here (DOCKER_HOST, else the local socket), or None."""
    import gc
    import warnings

    import docker
    import docker.errors
    import requests

    with warnings.catch_warnings():
        # (a connection that failed leaves its socket to the garbage collector)
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=10)
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            where = os.environ.get("DOCKER_HOST") or "the local socket"
            return f"no Docker Engine answers at {where} ({exc})"
        finally:
            gc.collect()
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need an engine skip, saying why, where none answers; unless the engine
    is required (``DOCKYARD_REQUIRE_ENGINE=1``, as CI sets), when they run and fail."""
    needing = [item for item in items if item.get_closest_marker("docker") is not None]
    if not needing or os.environ.get(REQUIRE_ENGINE) == "1":
        return
    problem = _engine_problem()
    if problem is not None:
        skip = pytest.mark.skip(reason=problem)
        for item in needing:
            item.add_marker(skip)


@pytest.fixture
def write_pipeline(tmp_path: Path) -> WritePipeline:
    """Write a dockyard.yaml (dedented) into a fresh folder and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "dockyard.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


def load_problems(path: Path, **settings: object) -> str:
    """What loading ``path`` (with ``params``/``params_file`` settings) refuses, as shown."""
    from dockyard.errors import SpecError
    from dockyard.spec import load_pipeline

    with pytest.raises(SpecError) as caught:
        load_pipeline(path, **settings)  # type: ignore[arg-type]
    return str(caught.value)


def committed_output(path: Path, instance: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """The folder `dockyard outputs` prints for ``instance`` of the latest run of ``path``."""
    from dockyard.cli import main

    capsys.readouterr()
    assert main(["outputs", "-f", str(path), instance]) == 0
    return Path(capsys.readouterr().out.strip())


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[object]:
    from dockyard.backends.local.runtime import DockerRuntime
    from dockyard.testing.images import ensure_busybox_image

    runtime = DockerRuntime()
    ensure_busybox_image(runtime.api)
    yield runtime
    runtime.close()


def _swarm_settings(agents: Path) -> dict[str, str]:
    """What a user of one of these local swarms sets: its nodes' daemons run with
    --no-new-privileges; the managers' agents reach their engine where these nodes have it;
    the node agents keep their files under the session's own folder."""
    from dockyard.backends.swarm.agents import ENGINE_SOCKET_ENV, ROOT_ENV
    from dockyard.backends.swarm.runtime import NO_NEW_PRIVILEGES
    from dockyard.testing.dockerd import NODE_ENGINE_SOCKET

    return {NO_NEW_PRIVILEGES: "1", ROOT_ENV: str(agents), ENGINE_SOCKET_ENV: NODE_ENGINE_SOCKET}


@pytest.fixture(scope="session")
def local_swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Three Swarm nodes on this machine (see dockyard.testing.swarm), for the session."""
    from dockyard.testing.swarm import LocalSwarm

    swarm = LocalSwarm.up(3, tmp_path_factory.mktemp("swarm"))
    settings = _swarm_settings(tmp_path_factory.mktemp("agents"))
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield swarm
    finally:
        swarm.down()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def _doomed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    from dockyard.testing.swarm import LocalSwarm

    swarm = LocalSwarm.up(3, tmp_path_factory.mktemp("doomed"))
    try:
        yield swarm, tmp_path_factory.mktemp("doomed-agents")
    finally:
        swarm.down()


@pytest.fixture
def doomed_swarm(
    _doomed_session: tuple[object, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    """A swarm of its own for tests that kill, drain or pause its nodes: after each test
    every node is back (killed engines started again, all active and ready)."""
    from dockyard.testing.swarm import LocalSwarm

    swarm, agents = _doomed_session
    assert isinstance(swarm, LocalSwarm)
    for name, value in _swarm_settings(agents).items():
        monkeypatch.setenv(name, value)
    try:
        yield swarm
    finally:
        swarm.mend()


@pytest.fixture
def on_swarm(local_swarm: object, monkeypatch: pytest.MonkeyPatch) -> object:
    """The session's swarm, as DOCKER_HOST and DOCKYARD_SWARM_ENGINES name it to dockyard."""
    from dockyard.testing.swarm import LocalSwarm

    assert isinstance(local_swarm, LocalSwarm)
    monkeypatch.setenv("DOCKER_HOST", local_swarm.manager.url)
    monkeypatch.setenv("DOCKYARD_SWARM_ENGINES", " ".join(n.url for n in local_swarm.nodes))
    return local_swarm


@pytest.fixture(scope="session")
def swarm_runtime(local_swarm: object) -> Iterator[object]:
    """dockyard's Swarm runtime on the local swarm's manager, with every node's engine."""
    from dockyard.backends.swarm.runtime import SwarmRuntime
    from dockyard.testing.swarm import LocalSwarm

    assert isinstance(local_swarm, LocalSwarm)
    runtime = SwarmRuntime(local_swarm.manager.url, [node.url for node in local_swarm.nodes])
    yield runtime
    runtime.close()


@pytest.fixture
def pipeline_name(docker_runtime: object) -> Iterator[str]:
    """A unique pipeline name; every container labelled with it is removed afterwards."""
    from dockyard.backends.local.runtime import DockerRuntime

    assert isinstance(docker_runtime, DockerRuntime)
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    for container in docker_runtime.list({LABEL_PIPELINE: name}):
        docker_runtime.remove(container.id)


__all__ = ["BUSYBOX_IMAGE", "REPO", "SHARED_CONFORMANCE", "WritePipeline", "committed_output"]
