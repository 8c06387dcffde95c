"""Deploying the node agents: the choices that need no Swarm (the rest runs on a real one in
tests/integration/test_swarm_agents.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import RuntimeFailure
from dockyard.runtime.agent_image import _code_layer, agent_sources
from dockyard.runtime.swarm_agents import (
    NEW_KEY_ENV,
    ROOT_ENV,
    AgentSettings,
    _check_same_key,
)


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


def test_the_agent_image_holds_its_modules_and_an_empty_package(tmp_path: Path) -> None:
    import io
    import tarfile

    files = agent_sources()
    assert b"import" not in files["__init__.py"]  # (not dockyard's, which imports the CLI)
    assert b"import" not in files["spec/__init__.py"]  # (the pipeline file's loader)
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
