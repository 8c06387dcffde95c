"""Malformed and hostile pipeline files: each is refused with exit 2 and a located error.

Every case here once ended otherwise: an internal error (exit 1), a hang, or a file
that `validate` accepted and `run` then failed on. Each row is a file (or a snippet of
a step) and words the error must contain; the error must name the file with a line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.errors import SpecError
from dockyard.spec import load_pipeline

HEAD = "version: 1\nname: hostile\n"
STEP = HEAD + "steps:\n  a:\n    image: busybox:1.36\n    command: 'true'\n"


def refused(
    text: str | bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    path = tmp_path / "dockyard.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    code = main(["validate", "-f", str(path)])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def check(
    text: str | bytes, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = refused(text, tmp_path, capsys)
    assert code == 2, output
    assert "internal error" not in output
    assert re.search(r"dockyard\.yaml:\d+:\d+:", output), f"no line and column in: {output}"
    for word in words:
        assert word in output, f"{word!r} not in: {output}"


# Once an internal error: the reader, the composer or Python gave up.
CRASHES = {
    "nul-byte": (STEP.encode() + b'    env: {X: "a\x00b"}\n', ["'\\x00'", "not allowed"]),
    "bel-byte": (STEP.encode() + b"# \x07\n", ["'\\x07'", "control character"]),
    "esc-byte": (STEP.encode() + b"    env: {X: \x1b[31mred}\n", ["'\\x1b'", ":7:14:"]),
    "del-byte": (STEP.encode() + b"    env: {X: a\x7fb}\n", ["'\\x7f'"]),
    "invalid-utf8": (STEP.encode() + b"    env: {X: \xff}\n", ["UTF-8", ":7:14:"]),
    "deep-flow": (STEP + "    env: {X: " + "[" * 5000 + "]" * 5000 + "}\n", ["levels"]),
    "deep-block": (
        STEP + "    env:\n" + "".join(" " * (6 + 2 * i) + "k:\n" for i in range(200)),
        ["levels"],
    ),
    "5000-digit-int": (STEP + "    retries: " + "9" * 5000 + "\n", ["5000 characters"]),
    "5000-digit-float": (STEP + "    timeout: 1." + "9" * 5000 + "\n", ["characters"]),
    "hex-int": (STEP + "    retries: 0x" + "f" * 200 + "\n", ["characters"]),
    "glob-absolute": (
        HEAD + "steps:\n  a:\n    scatter: {s: {glob: '/etc/*'}}\n    command: [echo, '${s}']\n",
        ["scatter.s.glob", "relative", "'/etc/*'"],
    ),
    "glob-empty": (
        HEAD + "steps:\n  a:\n    scatter: {s: {glob: ''}}\n    command: [echo, '${s}']\n",
        ["scatter.s.glob", "empty"],
    ),
    "glob-home": (
        HEAD + "steps:\n  a:\n    scatter: {s: {glob: '~/x*'}}\n    command: [echo, '${s}']\n",
        ["scatter.s.glob", "relative"],
    ),
    "glob-two-double-stars": (
        HEAD + "steps:\n  a:\n    scatter: {s: {glob: '**/x/**/y'}}\n    command: [echo]\n",
        ["at most one '**'"],
    ),
    "alias-cycle": (HEAD + "steps: &s\n  a: *s\n", ["refers to a node that contains it"]),
    "alias-bomb": (
        HEAD
        + "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n"
        + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 9))
        + "steps: {a: {command: 'true', env: {X: *x8}}}\n",
        ["at most", "aliases"],
    ),
    "date-that-does-not-exist": (STEP + "    env: {X: [2024-02-30]}\n", ["env.X"]),
}


@pytest.mark.parametrize(("text", "words"), CRASHES.values(), ids=CRASHES.keys())
def test_input_that_crashed_is_refused_with_its_line(
    text: str | bytes, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check(text, words, tmp_path, capsys)


# Once accepted by validate, then refused by the engine or the clock during run.
RUN_REFUSED = {
    "image-with-space": ("image: 'Bad Image;x'", ["image", "'Bad Image;x'"]),
    "image-upper-case": ("image: 'Busybox:1.36'", ["lower-case", "'Busybox:1.36'"]),
    "image-bad-digest": ("image: 'busybox@sha256:abc'", ["digest"]),
    "image-trailing-dash": ("image: 'tool-:1'", ["image reference"]),
    "cpus-infinite": ("resources: {cpus: .inf}", ["resources.cpus", "0.01 to 1024", "inf"]),
    "cpus-nan": ("resources: {cpus: .nan}", ["resources.cpus", "nan"]),
    "cpus-huge": ("resources: {cpus: 1e308}", ["resources.cpus", "1e+308"]),
    "cpus-below-engine-minimum": ("resources: {cpus: 0.005}", ["resources.cpus", "0.01"]),
    "memory-400-digits": ("resources: {memory: " + "9" * 38 + "}", ["resources.memory", "1 PiB"]),
    "memory-400-digit-string": (
        "resources: {memory: '" + "9" * 400 + "m'}",
        ["resources.memory", "at most"],
    ),
    "memory-one-byte": ("resources: {memory: 1}", ["resources.memory", "at least 6m"]),
    "memory-4m": ("resources: {memory: 4m}", ["resources.memory", "'4m'"]),
    "pids-below-minimum": ("resources: {pids: 1}", ["resources.pids", "greater than or equal"]),
    "backoff-overflow": ("retries: {max: 1, backoff: 99999999999h}", ["backoff", "30 days"]),
    "timeout-overflow": ("timeout: 99999999999h", ["timeout", "30 days"]),
    "timeout-below-a-millisecond": ("timeout: 0.1ms", ["timeout", "from 1ms"]),
    "memory-factor-huge": ("retries: {max: 1, memory_factor: 1e308}", ["memory_factor"]),
    "env-name-empty": ("env: {'': x}", ["environment variable name", "''"]),
    "env-name-with-equals": ("env: {'A=B': x}", ["'='", "'A=B'"]),
    "env-name-with-nul": ('env: {"A\\0B": x}', ["'A\\x00B'"]),
    "env-value-with-nul": ('env: {A: "x\\0y"}', ["NUL"]),
    "command-with-nul": ('command: "echo \\0"', ["NUL"]),
    "command-too-long": ("command: '" + "x" * 140_000 + "'", ["bytes", "limit"]),
    "unclosed-variable": ("command: 'echo ${x'", ["command", "'${' without its '}'", "$${"]),
    "unclosed-in-env": ("env: {A: 'x${y'}", ["env.A", "$${"]),
    "cap-add-all": ("cap_add: [ALL]", ["cap_add", "ALL", "privileged"]),
    "cap-add-sys-admin": ("cap_add: [SYS_ADMIN]", ["SYS_ADMIN", "host"]),
    "cap-add-unknown": ("cap_add: [FLY]", ["capability", "'FLY'"]),
}


@pytest.mark.parametrize(("snippet", "words"), RUN_REFUSED.values(), ids=RUN_REFUSED.keys())
def test_what_the_engine_would_refuse_is_refused_by_validate(
    snippet: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = STEP.replace("    image: busybox:1.36\n", "") + f"    {snippet}\n"
    if snippet.startswith(("image:", "command:")):
        key = snippet.split(":")[0]
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"    {key}:"))
        text += f"\n    {snippet}\n"
    check(text, words, tmp_path, capsys)


# Once accepted with a guess at what the file meant.
WRONG_TYPES = {
    "version-float": (STEP.replace("version: 1", "version: 1.0"), ["version", "1.0"]),
    "version-true": (STEP.replace("version: 1", "version: true"), ["version", "True"]),
    "version-string": (STEP.replace("version: 1", "version: '1'"), ["version", "'1'"]),
    "cpus-bool": (STEP + "    resources: {cpus: true}\n", ["resources.cpus", "True"]),
    "retries-float": (STEP + "    retries: 2.0\n", ["retries"]),
    "retries-max-bool": (STEP + "    retries: {max: true}\n", ["retries.max", "whole number"]),
    "network-yes": (STEP + "    network: 'yes'\n", ["network", "true or false", "'yes'"]),
    "network-one": (STEP + "    network: 1\n", ["network", "true or false"]),
    "cache-yes": (STEP + "    cache: 'yes'\n", ["cache", "true or false"]),
    "readonly-yes": (
        HEAD + "volumes: {v: {}}\nsteps:\n  a:\n    command: 'true'\n"
        "    volumes: {v: {path: /v, readonly: 'yes'}}\n",
        ["readonly", "true or false"],
    ),
    "keep-string": (
        HEAD + "services:\n  db: {image: busybox:1.36, keep: 'true'}\n"
        "steps:\n  a: {command: 'true'}\n",
        ["services.db.keep", "true or false"],
    ),
    "python-tag": (
        STEP + "    env: {X: !!python/object/apply:os.system ['id']}\n",
        ["tags", "python/object/apply:os.system"],
    ),
    "python-name-tag": (STEP + "    env: {X: !!python/name:os.system ''}\n", ["tags"]),
    "unknown-tag-on-mapping": (STEP + "    resources: !custom {cpus: 1}\n", ["tags", "!custom"]),
    "binary-tag": (STEP + "    env: {X: !!binary aGk=}\n", ["tags", "binary"]),
    "healthcheck-retries-huge": (
        HEAD + "services:\n  db:\n    image: busybox:1.36\n"
        "    healthcheck: {command: 'true', retries: 99999999999}\n"
        "steps:\n  a: {command: 'true'}\n",
        ["healthcheck.retries"],
    ),
    "service-memory-too-small": (
        HEAD + "services:\n  db: {image: busybox:1.36, resources: {memory: 4m}}\n"
        "steps:\n  a: {command: 'true'}\n",
        ["services.db.resources.memory", "at least 6m"],
    ),
    "service-cap-add-all": (
        HEAD + "services:\n  db: {image: busybox:1.36, cap_add: [all]}\n"
        "steps:\n  a: {command: 'true'}\n",
        ["services.db.cap_add", "ALL"],
    ),
    "image-tag-with-digest": (
        HEAD + "images:\n  t: {build: ., tag: 'x/y@sha256:" + "a" * 64 + "'}\n"
        "steps:\n  a: {command: 'true'}\n",
        ["images.t.tag", "digest"],
    ),
    "default-image-tag-invalid": (
        "version: 1\nname: odd_\nimages:\n  t_: {debian: {include: [bash]}}\n"
        "steps:\n  a: {command: 'true', image: {ref: t_}}\n",
        ["images.t_", "default tag", "tag:"],
    ),
}


@pytest.mark.parametrize(("text", "words"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_value_of_the_wrong_type_is_refused_not_guessed_at(
    text: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check(text, words, tmp_path, capsys)


MOUNTS = {
    "dot-out": "/./out",
    "out-slash": "/out/",
    "double-slash-in": "//in//x",
    "stream-helper": "/.dockyard/bin",
    "proc": "/proc",
    "inside-sys": "/sys/fs/x",
}


@pytest.mark.parametrize("path", MOUNTS.values(), ids=MOUNTS.keys())
def test_a_mount_path_is_normalised_before_reserved_paths_are_checked(
    path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        HEAD + f"volumes: {{v: {{}}}}\nsteps:\n  a: {{command: 'true', volumes: {{v: '{path}'}}}}\n"
    )
    check(text, ["volumes.v", "reserved"], tmp_path, capsys)


def test_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "dockyard.yaml"
    os.mkfifo(fifo)
    code = main(["validate", "-f", str(fifo)])
    output = capsys.readouterr().err
    assert code == 2
    assert "FIFO" in output


@pytest.mark.parametrize(
    ("target", "kind"), [("/dev/zero", "character device"), (".", "directory")]
)
def test_a_device_or_a_folder_is_refused_before_reading(
    target: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "dockyard.yaml"
    link.symlink_to(target if target.startswith("/") else tmp_path)
    code = main(["validate", "-f", str(link)])
    output = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert kind in output


def test_a_file_larger_than_the_bound_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dockyard.yaml"
    with path.open("wb") as fh:
        fh.truncate(64 * 1024**2)  # sparse: 64 MiB of NUL, no disk used
    code = main(["validate", "-f", str(path)])
    output = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "at most 1 MiB" in output


def test_dates_are_text_as_every_other_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dockyard.planning.preflight import graph_of
    from dockyard.spec import load_pipeline

    (tmp_path / "dockyard.yaml").write_text(STEP + "    env: {DAY: 2024-02-30, AT: 2024-01-01}\n")
    graph = graph_of(load_pipeline(tmp_path / "dockyard.yaml"))
    assert dict(next(iter(graph.instances.values())).env) == {
        "DAY": "2024-02-30",
        "AT": "2024-01-01",
    }


def test_a_cycle_through_thousands_of_steps_is_found_without_recursion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = "".join(
        f"  s{i}: {{command: 'true', needs: [s{(i + 1) % 1500}]}}\n" for i in range(3000)
    )
    check(
        HEAD + "steps:\n" + steps,
        ["1500 steps form a cycle", "s0 → s1", "→ s1499 → s0"],
        tmp_path,
        capsys,
    )


def test_a_chain_of_thousands_of_steps_written_backwards_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = "".join(f"  s{i}: {{command: 'true', needs: [s{i - 1}]}}\n" for i in range(1499, 0, -1))
    code, output = refused(
        HEAD + "steps:\n" + steps + "  s0: {command: 'true'}\n", tmp_path, capsys
    )
    assert code == 0, output
    assert "1500 steps" in output


def test_twenty_thousand_wrong_values_make_a_short_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(["null"] * 20_000)
    code, output = refused(STEP + f"    scatter: {{s: [{values}]}}\n", tmp_path, capsys)
    assert code == 2
    assert "20000 problems" in output and "… and 19900 more" in output
    assert output.count("steps.a.scatter.s[") == 100


def test_a_key_named_like_a_type_is_reported_as_the_unknown_key_it_is(tmp_path: Path) -> None:
    (tmp_path / "dockyard.yaml").write_text("str:\nversion: 1\nname: x\nsteps: {a: {}}\n")
    with pytest.raises(SpecError) as raised:
        load_pipeline(tmp_path / "dockyard.yaml")
    assert "unknown key 'str'" in str(raised.value)


def test_a_volume_seed_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "seed.txt").write_text("x")
    (tmp_path / "dockyard.yaml").write_text(
        "version: 1\nname: x\nvolumes: {v: {seed: ./seed.txt}}\n"
        "steps: {a: {command: 'true', volumes: {v: /v}}}\n"
    )
    with pytest.raises(SpecError) as raised:
        load_pipeline(tmp_path / "dockyard.yaml")
    assert "volumes.v.seed: expected a folder" in str(raised.value)
