"""`validate` accepts nothing that `run` then refuses for a reason knowable before start.

Each row is a pipeline that once passed `validate` and then failed during `run`
(the engine refused a container, a value collided, a timer overflowed). Now `validate`
and `run` refuse it alike, with the same problem, before touching the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.cli import main

KNOWABLE = {
    # limits the engine enforces
    "memory below the engine's 6 MiB": ("resources: {memory: 5m}", "at least 6m"),
    "cpus below the engine's 0.01": ("resources: {cpus: 0.001}", "from 0.01"),
    "cpus the quota cannot hold": ("resources: {cpus: 1e308}", "from 0.01 to 1024"),
    "memory beyond int64": ("resources: {memory: 99999999999999t}", "at most 1024t"),
    "timeout beyond every timer": ("timeout: 99999999999h", "30 days"),
    "backoff beyond every timer": ("retries: {max: 1, backoff: 99999999999h}", "30 days"),
    "a process limit below a shell's needs": ("resources: {pids: 2}", "greater than or equal"),
    "an argument execve refuses": ("command: '" + "x" * 200_000 + "'", "kernel"),
    "an env value execve refuses": ('env: {A: "a\\0b"}', "NUL"),
    "more arguments than execve takes in all": (
        "scatter: {s: ['" + "v" * 180 + "']}\n"
        "    command: [" + ", ".join(["'" + "${s}" * 700 + "'"] * 10) + "]",
        "2 MiB",
    ),
    "a bind mount runc refuses": ("volumes: {v: /proc/v}", "reserved"),
    "a capability that is all of them": ("cap_add: [ALL]", "ALL"),
    # name rules
    "an image name the engine cannot parse": ("image: 'Tools:Latest'", "lower-case"),
    "an env name the engine splits": ("env: {'A=B': x}", "'='"),
    "an empty env name": ("env: {'': x}", "environment variable name"),
    "a value longer than a file name": (
        "scatter: {s: ['" + "v" * 256 + "']}\n    command: [echo, '${s}']",
        "255 bytes",
    ),
    "a value with a slash, which names no file": ("scatter: {s: ['a/b']}", "file name"),
    "an instance name longer than its log file's name may be": (
        "scatter: {s: ['" + "s" * 100 + "'], t: ['" + "t" * 100 + "']}",
        "can be 204 characters long",
    ),
    # key collisions
    "two instances with one key": (
        "scatter: {x: ['a,b', a], y: [c, 'b,c']}\n    command: [echo, '${x}${y}']",
        "same key",
    ),
    # what the shell would have run
    "a value that is shell code": (
        "scatter: {s: ['$(reboot)']}\n    command: 'echo ${s}'",
        "shell",
    ),
    "an unclosed variable": ("command: 'echo ${s'", "$${"),
}


def pipeline(folder: Path, snippet: str) -> Path:
    """Step ``a`` with the snippet's keys, and an image and a command unless it has them."""
    lines = {"image": "image: busybox:1.36", "command": "command: 'true'"}
    for line in snippet.split("\n"):
        lines[line.strip().split(":")[0]] = line.strip()
    path = folder / "dockyard.yaml"
    path.write_text(
        "version: 1\nname: knowable\nvolumes: {v: {}}\nsteps:\n  a:\n"
        + "".join(f"    {line}\n" for line in lines.values())
    )
    return path


@pytest.mark.parametrize(("snippet", "words"), KNOWABLE.values(), ids=KNOWABLE.keys())
def test_what_run_would_refuse_validate_refuses_first(
    snippet: str,
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("run reached for the engine")

    monkeypatch.setattr("dockyard.backends.local.runtime.DockerRuntime.__init__", no_engine)
    path = pipeline(tmp_path, snippet)
    answers = []
    for command in ("validate", "run"):
        code = main([command, "-f", str(path)])
        answers.append((code, " ".join(capsys.readouterr().err.split())))
    (validated, said), (ran, told) = answers
    assert validated == ran == 2, answers
    assert words in said
    assert said == told
    assert not (tmp_path / ".dockyard").exists()
