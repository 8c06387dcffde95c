"""No escape sequence from a name, a reason or a message reaches the terminal raw."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.events import Event
from dockyard.report.progress import PlainProgress
from dockyard.state.rows import RunRow
from dockyard.state.store import Store
from dockyard.terminal import printable

ESC = "\x1b]0;owned\x07\x1b[2J"  # set the window title, clear the screen


def test_printable_escapes_what_a_terminal_would_act_on_and_keeps_newlines() -> None:
    assert printable("align[s1]") == "align[s1]"
    assert printable(f"a{ESC}b\nc\td\u202ee") == "a\\x1b]0;owned\\x07\\x1b[2Jb\nc\\td\\u202ee"


def test_progress_lines_show_names_and_messages_escaped() -> None:
    stream = io.StringIO()
    PlainProgress(stream)(
        Event("failed", 0.0, f"a[{ESC}]", {"attempt": 1, "message": f"exit 1 {ESC}"})
    )
    line = stream.getvalue()
    assert "\x1b" not in line and "\x07" not in line
    assert "a[\\x1b]0;owned" in line


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A state database from elsewhere (or an older dockyard) may hold anything."""
    path = tmp_path / "dockyard.yaml"
    path.write_text("version: 1\nname: shown\nsteps:\n  a: {command: 'true'}\n")
    store = Store(tmp_path / ".dockyard" / "state.db")
    store.create_run(
        RunRow("r1", "shown", "sha", "failed", 1.0, 2.0, 2.0, 1024, None), [(f"a[{ESC}]", "a")]
    )
    store.update_instances("r1", ("state", "reason"), [("failed", f"because {ESC}", f"a[{ESC}]")])
    store.close()
    return path


@pytest.mark.parametrize("command", ["status", "trace"])
def test_a_stored_name_and_reason_are_shown_escaped(
    command: str, stored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "-f", str(stored)]) == 0
    output = capsys.readouterr().out
    assert "\x1b" not in output and "\x07" not in output
    assert "a[\\x1b]0;owned" in output


def test_an_error_message_is_shown_escaped(
    stored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "-f", str(stored), "a[other\x1b[2J]"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "\x1b" not in error and "\x07" not in error
    assert "a[other\\x1b[2J]" in error and "a[\\x1b]0;owned" in error
