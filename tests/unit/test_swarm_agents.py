"""Deploying the node agents: the choices that need no Swarm (the rest runs on a real one in
tests/integration/test_swarm_agents.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import RuntimeFailure
from dockyard.runtime.swarm_agents import (
    NEW_KEY_ENV,
    ROOT_ENV,
    AgentSettings,
    _check_same_key,
    _code_layer,
    agent_sources,
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
    with tarfile.open(fileobj=io.BytesIO(_code_layer(files))) as tar:
        names = tar.getnames()
    assert "opt/dockyard/dockyard/agent/server.py" in names
    assert all(name.startswith("opt/dockyard/dockyard/") for name in names)
