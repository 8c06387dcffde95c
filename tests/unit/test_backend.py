"""Choosing where a pipeline runs: one place, by flag or environment."""

from __future__ import annotations

import pytest

from dockyard.backends.choice import choose
from dockyard.cli import main
from dockyard.errors import InvalidInput
from tests.conftest import WritePipeline

PIPELINE = """
    version: 1
    name: where
    steps:
      a: {image: busybox:1.36, command: "true"}
"""


def test_the_local_backend_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_BACKEND", raising=False)
    assert choose().name == "local"


def test_the_environment_chooses_when_no_flag_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_BACKEND", "elsewhere")
    with pytest.raises(InvalidInput, match="DOCKYARD_BACKEND: unknown backend 'elsewhere'"):
        choose()
    assert choose("local").name == "local"  # the flag wins


def test_an_unknown_backend_is_refused_before_anything_starts(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(PIPELINE)
    assert main(["run", "-f", str(path), "--backend", "moon"]) == 2
    assert "--backend: unknown backend 'moon' (known: local, swarm)" in capsys.readouterr().err
    assert not (path.parent / ".dockyard").exists()
    assert main(["volume", "--backend", "moon", "ls"]) == 2
