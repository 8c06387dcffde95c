"""A state folder dockyard cannot use is named, with what is wrong (exit 2, no traceback)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.cli import main

PIPELINE = "version: 1\nname: state\nsteps:\n  a: {command: 'true'}\n"


def status(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = folder / "dockyard.yaml"
    path.write_text(PIPELINE)
    code = main(["status", "-f", str(path)])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Unwritable even for root: mode 0555, and the immutable flag where we are root."""
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        with pytest.raises(OSError):
            (folder / "probe").write_text("")  # the premise of the test
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_state_folder_that_is_a_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".dockyard").write_text("not a folder")
    code, output = status(tmp_path, capsys)
    assert code == 2, output
    assert f"{tmp_path / '.dockyard'} is not a folder" in output
    assert "internal error" not in output


def test_a_read_only_state_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / ".dockyard"
    state.mkdir()
    with read_only(state):
        code, output = status(tmp_path, capsys)
    assert code == 2, output
    assert f"cannot write in the state folder {state}" in output
    assert "unable to open database file" not in output


def test_a_state_folder_that_cannot_be_made_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dockyard.yaml").write_text(PIPELINE)
    with read_only(tmp_path):
        code = main(["status", "-f", str(tmp_path / "dockyard.yaml")])
    output = " ".join(capsys.readouterr().err.split())
    assert code == 2, output
    assert f"cannot create the state folder {tmp_path / '.dockyard'}" in output


def test_a_state_database_that_is_a_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".dockyard" / "state.db").mkdir(parents=True)
    code, output = status(tmp_path, capsys)
    assert code == 2, output
    assert "state.db is not a file" in output
