"""Deploying the node agents: the choices that need no Swarm (the rest runs on a real one in
tests/integration/test_swarm_agents.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.backends.swarm.agent_image import _code_layer, agent_sources
from dockyard.backends.swarm.agents import (
    AGENT_MEMORY,
    AGENT_PIDS,
    NEW_KEY_ENV,
    ROOT_ENV,
    ROOT_MOUNT,
    AgentSettings,
    _check_same_key,
    _root_task,
    _service_task,
)
from dockyard.errors import RuntimeFailure


def _service(secret: str) -> dict[str, object]:
    return {"Spec": {"TaskTemplate": {"ContainerSpec": {"Secrets": [{"SecretName": secret}]}}}}


def test_agents_on_another_machines_key_are_not_moved_unless_asked(monkeypatch) -> None:
    monkeypatch.delenv(NEW_KEY_ENV, raising=False)
    _check_same_key(_service("dockyard-agent-key-aaa"), "dockyard-agent-key-aaa", Path("k"))
    with pytest.raises(RuntimeFailure, match="another key than this machine's"):
        _check_same_key(_service("dockyard-agent-key-bbb"), "dockyard-agent-key-aaa", Path("k"))
    monkeypatch.setenv(NEW_KEY_ENV, "1")
    _check_same_key(_service("dockyard-agent-key-bbb"), "dockyard-agent-key-aaa", Path("k"))


@pytest.mark.parametrize("root", ["relative/path", "/", "/top", "/var/../etc/x"])
def test_an_agent_root_that_would_bind_too_much_is_refused(monkeypatch, root: str) -> None:
    monkeypatch.setenv(ROOT_ENV, root)
    with pytest.raises(RuntimeFailure, match=ROOT_ENV):
        AgentSettings.from_environment()


@pytest.mark.parametrize("managers", [None, {"m1": "10.0.0.1:7480"}], ids=["manager", "worker"])
def test_an_agent_binds_its_root_alone_and_has_memory_and_pids_limits(managers) -> None:
    settings = AgentSettings("/var/lib/dockyard-agent", 7480)
    task = _service_task("dockyard/agent:x", settings, ("id", "name"), "host", managers)
    limits = task["Resources"]["Limits"]
    assert limits == {"MemoryBytes": AGENT_MEMORY, "Pids": AGENT_PIDS}
    assert 0 < AGENT_MEMORY <= 2 << 30 and 0 < AGENT_PIDS <= 4096
    spec = task["ContainerSpec"]
    sources = {m["Source"]: m["Target"] for m in spec["Mounts"]}
    assert sources["/var/lib/dockyard-agent"] == ROOT_MOUNT  # the root, not /var/lib
    assert "/var/lib" not in sources and "/run/docker" not in sources  # (FIFOs, netns)
    assert "/run/docker/plugins" in sources  # (the plugin's socket, and nothing else)
    assert set(sources) - {"/var/lib/dockyard-agent", "/run/docker/plugins"} == (
        {settings.engine_socket} if managers is None else set()
    )
    assert f"DOCKYARD_AGENT_MOUNT={ROOT_MOUNT}" in spec["Env"]


def test_the_agent_root_is_made_by_a_job_that_runs_mkdir_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    task = _root_task("dockyard/agent:x", AgentSettings("/var/lib/dockyard-agent", 7480))
    spec = task["ContainerSpec"]
    assert [m["Source"] for m in spec["Mounts"]] == ["/var/lib"]
    assert spec["Command"][:2] == ["python3", "-c"]
    assert spec["Command"][3] == f"{spec['Mounts'][0]['Target']}/dockyard-agent"
    assert "Networks" not in task and "Secrets" not in spec
    assert set(task["Resources"]["Limits"]) == {"MemoryBytes", "Pids"}
    for _ in range(2):  # (again: the root is there already)
        code = [sys.executable, "-c", spec["Command"][2], str(tmp_path / "root")]
        subprocess.run(code, check=True)
    assert (tmp_path / "root").stat().st_mode & 0o777 == 0o755 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_agent_image_holds_the_package_as_it_is(tmp_path: Path) -> None:
    import io
    import tarfile

    import dockyard

    files = agent_sources()
    assert files["__init__.py"] == Path(dockyard.__file__).read_bytes()  # (lazy: loads nothing)
    assert not any(rel.startswith(("spec/", "execution/", "backends/")) for rel in files)
    libraries = {"pydantic/__init__.py": b"", "pydantic-2.dist-info/RECORD": b""}
    with tarfile.open(fileobj=io.BytesIO(_code_layer(files, libraries))) as tar:
        names = tar.getnames()
    assert "opt/dockyard/dockyard/agent/server.py" in names
    assert "opt/dockyard/dockyard/agent/plugin.py" in names
    assert "opt/dockyard/pydantic/__init__.py" in names
    assert all(name.startswith("opt/dockyard/") for name in names)


def test_the_agent_s_modules_import_nothing_its_image_lacks() -> None:
    """Every module the image holds imports only the standard library, pydantic and the
    other modules it holds."""
    import ast
    import sys

    files = agent_sources()
    held = {"dockyard." + rel.removesuffix(".py").replace("/", ".") for rel in files}
    held |= {name.removesuffix(".__init__") for name in held}
    for rel, data in files.items():
        tree = ast.parse(data)
        typing_only = {  # (imports under `if TYPE_CHECKING:` never run)
            id(inner)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for inner in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "dockyard":
                    assert name in held or name.rpartition(".")[0] in held, (rel, name)
                else:
                    assert top in sys.stdlib_module_names or top == "pydantic", (rel, name)
