"""Every malformed pipeline file is refused with located errors, exit 2, no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockyard.cli import main
from tests.conftest import SHARED_CONFORMANCE

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "invalid"
OWN_INVALID = sorted(FIXTURES.glob("*.yaml"))
SHARED_INVALID = sorted((SHARED_CONFORMANCE / "invalid").glob("*.yaml"))
SHARED_VALID = sorted((SHARED_CONFORMANCE / "valid").glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name} lacks an '# expect:' line"
    return [w.strip() for w in first.removeprefix("# expect:").split(",") if w.strip()]


def validate(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.chdir(path.parent)
    code = main(["validate", "-f", path.name])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_there_are_at_least_twenty_kinds_of_malformed_fixture() -> None:
    assert len(OWN_INVALID) >= 20


@pytest.mark.parametrize("path", OWN_INVALID + SHARED_INVALID, ids=lambda p: p.stem)
def test_invalid_file_is_refused_with_located_errors(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(path, monkeypatch, capsys)
    assert code == 2, output
    assert "Traceback" not in output
    assert re.search(rf"{re.escape(path.name)}:\d+", output), f"no line number in: {output}"
    text = " ".join(output.split())  # rich may wrap long lines
    for word in expectations(path):
        assert word in text, f"{word!r} not in: {output}"


@pytest.mark.parametrize("path", SHARED_VALID, ids=lambda p: p.stem)
def test_valid_conformance_file_is_accepted(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(path, monkeypatch, capsys)
    assert code == 0, output
    assert "ok" in output


def test_missing_pipeline_file_is_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(tmp_path / "nope.yaml", monkeypatch, capsys)
    assert code == 2
    assert "no such pipeline file" in output
