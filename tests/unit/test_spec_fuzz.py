"""Whatever a pipeline file holds, `dockyard validate` answers 0 or 2, promptly, writing nothing.

Hypothesis writes three kinds of file: pipelines that are nearly right with keys,
values and types mutated; raw bytes with control characters, deep nesting, huge
numbers and odd tags; and a valid file with bytes spliced in. Each is validated in a
fresh folder holding some data (and a symlink out of it), and the folder must look
the same afterwards: validate has no business writing anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.cli import main

VALID = """\
version: 1
name: fuzz
defaults: {image: busybox:1.36, resources: {cpus: 0.5, memory: 64m}}
volumes: {cache: {}}
services:
  db: {image: busybox:1.36, command: "sleep 60", healthcheck: {command: "true"}}
steps:
  a:
    scatter: {f: {glob: "data/*.txt"}, n: [x, y]}
    inputs: {data: "data/${f}"}
    command: "wc -c /in/data > /out/${n}"
  b:
    needs: [a]
    services: [db]
    volumes: {cache: /cache}
    retries: {max: 2, memory_factor: 2, backoff: 1s}
    timeout: 10m
    command: [sh, -c, "cat /in/a/*/* > /out/all"]
"""

KEYS = [
    "version", "name", "defaults", "images", "volumes", "services", "steps", "image",
    "command", "needs", "scatter", "inputs", "env", "resources", "retries", "timeout",
    "stdin", "cache", "network", "cap_add", "cpus", "memory", "pids", "glob", "max",
    "memory_factor", "backoff", "path", "readonly", "healthcheck", "build", "debian",
    "include", "tag", "seed", "keep", "ref",
]  # fmt: skip
TEXTS = [
    "", ".", "..", "/", "/etc", "data", "data/*.txt", "/etc/*", "**", "*/*/*", ".dockyard",
    "$(id)", "`id`", "a;b", "${f}", "${x", "$${x}", "a,b", "Bad Image;x", "busybox:1.36",
    "/./out", "/out", "/proc", "4m", "1e308", "99999999999h", "ALL", "SYS_ADMIN", "NET_RAW",
    "a\x1b[2Jb", "a\nb", "a\x00b", "é" * 200, "x" * 300, "yes", "true", "~", "-rf",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(TEXTS),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)


def documents() -> st.SearchStrategy[Any]:
    """Nested mappings and lists of the format's keys and awkward values."""
    keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=30,
    )


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """The valid pipeline with a few keys or values replaced, dropped or added."""
    from ruamel.yaml import YAML

    data: Any = YAML(typ="safe", pure=True).load(VALID)
    for _ in range(draw(st.integers(1, 4))):
        node: Any = data
        path = draw(st.lists(st.sampled_from([*KEYS, "a", "b", "db", "cache"]), max_size=4))
        for key in path[:-1]:
            if isinstance(node, dict) and isinstance(node.get(key), dict):
                node = node[key]
        if not isinstance(node, dict) or not path:
            continue
        action = draw(st.sampled_from(["set", "drop", "set"]))
        if action == "drop":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = draw(documents())
    return json.dumps(data, ensure_ascii=draw(st.booleans()))  # JSON is YAML


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000))
    digits = draw(st.integers(1, 6000))
    pieces = st.sampled_from(
        [
            b"[" * depth + b"]" * depth,
            b"{a: " * depth + b"}" * depth,
            b"9" * digits,
            b"0x" + b"f" * digits,
            b"1." + b"5" * digits + b"e99",
            b"!!python/object/apply:os.system ['id']",
            b"!!binary aGk=",
            b"!custom {a: 1}",
            b"%TAG ! tag:evil.example,2024:\n---\n",
            b"&a [*a]",
            b"x: &x [a, a, a, a, a, a, a, a]\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x]\n",
            b"\x00",
            b"\x07",
            b"\x1b[31m",
            b"\xff\xfe",
            b"\xef\xbb\xbf",
            b"\t",
            b"\r\n",
            b"- ",
            b": ",
            b"---\n",
            b"...\n",
        ]
    )
    parts = draw(st.lists(st.one_of(pieces, st.binary(max_size=20)), max_size=8))
    return b"version: 1\nname: x\nsteps:\n  a:\n    command: " + b"".join(parts) + b"\n"


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    text = VALID.encode()
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.binary(min_size=1, max_size=16)) + text[at:]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (symlinks not followed)."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (
                info.st_size,
                info.st_mtime_ns,
            )
    return found


def validate_alone(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        folder = base / "pipeline"
        (folder / "data").mkdir(parents=True)
        for name in ("a.txt", "b.txt", "$(id).txt"):
            (folder / "data" / name).write_text(name)
        (folder / "data" / "zzz.txt").symlink_to("/etc/hostname")
        path = folder / "dockyard.yaml"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        before, around = tree(folder), sorted(os.listdir(base))
        output = io.StringIO()
        cwd = os.getcwd()
        try:
            os.chdir(folder)  # anything written relative to the cwd lands where we look
            with (
                mock.patch.dict(os.environ, {"DOCKYARD_HOME": str(base / "home")}),
                contextlib.redirect_stdout(output),
                contextlib.redirect_stderr(output),
            ):
                code = main(["validate", "-f", str(path)])
        finally:
            os.chdir(cwd)
        shown = output.getvalue()
        assert code in (0, 2), shown
        assert "internal error" not in shown and "Traceback" not in shown, shown
        assert tree(folder) == before, "validate wrote into the pipeline's folder"
        assert sorted(os.listdir(base)) == around, "validate wrote beside the pipeline's folder"


FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(near_valid())
def test_a_mutated_pipeline_is_accepted_or_refused_never_a_crash(text: str) -> None:
    validate_alone(text)


@FUZZ
@given(documents())
def test_any_document_is_accepted_or_refused_never_a_crash(data: Any) -> None:
    validate_alone(json.dumps(data))


@FUZZ
@given(st.one_of(hostile_bytes(), spliced()))
def test_hostile_bytes_are_refused_never_a_crash(content: bytes) -> None:
    validate_alone(content)


def test_the_unmutated_pipeline_is_valid() -> None:
    """The fuzz starts from a file that validates, so its mutations probe one change."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "data").mkdir()
        (folder / "data" / "a.txt").write_text("a")
        (folder / "dockyard.yaml").write_text(VALID)
        assert main(["validate", "-f", str(folder / "dockyard.yaml")]) == 0
