"""Scatter values stay data: usable names, unambiguous keys, never shell code.

And what a step mounts stays inside the pipeline's folder and out of dockyard's state
folder, for every instance, when the file is read and again when the container is made.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.errors import PlanError
from dockyard.planning.graph import InstanceId
from dockyard.planning.preflight import graph_of
from dockyard.spec import load_pipeline
from dockyard.spec.interpolate import unclosed
from dockyard.spec.paths import resolve_input
from dockyard.spec.values import SHELL_INERT, not_shell_inert, shell_scripts


def validate(folder: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = folder / "dockyard.yaml"
    path.write_text(textwrap.dedent(text))
    code = main(["validate", "-f", str(path)])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def names(folder: Path, *files: str) -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in files:
        (data / name).write_text(name)
    return data


HOSTILE_NAMES = ["$(id>&2).txt", "a`id`.txt", "a;id.txt", "a b.txt", "a'b.txt", "a|b.txt"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_file_name_with_shell_syntax_is_refused_in_a_string_command(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names(tmp_path, name, "plain.txt")
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: inject
        steps:
          a:
            scatter: {f: {glob: "data/*.txt"}}
            inputs: {data: ./data}
            command: "wc -c /in/data/${f}"
        """,
        capsys,
    )
    assert code == 2, output
    assert re.search(r"dockyard\.yaml:\d+:\d+: steps\.a\.scatter\.f:", output), output
    for words in (repr(name), "scatter variable 'f'", "shell syntax", "rename", "list"):
        assert words in output, f"{words!r} not in {output}"


def test_a_listed_value_with_shell_syntax_is_located_at_its_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: inject
        steps:
          a:
            scatter: {s: [ok, "x;reboot"]}
            command: [sh, -euc, "echo ${s}"]
        """,
        capsys,
    )
    assert code == 2
    assert "steps.a.scatter.s[1]:" in output
    assert "'x;reboot'" in output and "command[2]" in output


def test_in_exec_form_env_and_inputs_a_value_is_plain_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names(tmp_path, *HOSTILE_NAMES)
    path = tmp_path / "dockyard.yaml"
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            name: data
            steps:
              a:
                scatter: {f: {glob: "data/*.txt"}}
                inputs: {file: "data/${f}"}
                env: {NAME: "${f}"}
                command: [sh, -c, 'wc -c "/in/file" "$1"', sh, "${f}"]
            """
        )
    )
    graph = graph_of(load_pipeline(path))
    instance = graph.instances[InstanceId("a", "$(id>&2).txt")]
    assert instance.command == ("sh", "-c", 'wc -c "/in/file" "$1"', "sh", "$(id>&2).txt")
    assert dict(instance.env)["NAME"] == "$(id>&2).txt"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a\nb", "'a\\nb'"),
        ("a\tb", "'a\\tb'"),
        ("a\x1b[2Jb", "'a\\x1b[2Jb'"),
        ("a\u202eb", "'a\\u202eb'"),
    ],
)
def test_a_control_character_is_refused_in_any_scatter_value_and_shown_escaped(
    value: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names(tmp_path, value)
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: control
        steps:
          a:
            scatter: {f: {glob: "data/*"}}
            command: [echo, "${f}"]
        """,
        capsys,
    )
    assert code == 2, output
    assert shown in output and "printable" in output
    assert "\x1b" not in output and "\u202e" not in output


def test_many_bad_values_are_reported_a_few_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names(tmp_path, *[f"f;{i}" for i in range(20)])
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: many
        steps:
          a:
            scatter: {f: {glob: "data/*"}}
            command: "cat /in/${f}"
        """,
        capsys,
    )
    assert code == 2
    assert output.count("shell syntax") == 5
    assert "and 15 more values like these" in output


def test_values_that_would_give_two_instances_one_key_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: collide
        steps:
          a:
            scatter: {x: ["a,b", a], y: [c, "b,c"]}
            command: [echo, "${x}", "${y}"]
        """,
        capsys,
    )
    assert code == 2
    assert "steps.a.scatter.x[0]:" in output and "steps.a.scatter.y[1]:" in output
    assert "same key" in output


def test_keys_stay_readable_and_one_variable_may_hold_a_comma(write_pipeline) -> None:  # type: ignore[no-untyped-def]
    graph = graph_of(
        load_pipeline(
            write_pipeline(
                """
                version: 1
                name: keys
                steps:
                  x:
                    scatter: {a: [s1, "p,q"]}
                    command: [echo, "${a}"]
                  y:
                    scatter: {a: [s1], b: [t1, t2]}
                    command: "echo ${a} ${b}"
                """
            )
        )
    )
    assert [str(i) for i in graph.order] == ["x[s1]", "x[p,q]", "y[s1,t1]", "y[s1,t2]"]


def test_a_value_longer_than_a_file_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(
        tmp_path,
        f"""
        version: 1
        name: long
        steps:
          a: {{scatter: {{s: [ok, "{"é" * 128}"]}}, command: [echo, "${{s}}"]}}
        """,
        capsys,
    )
    assert code == 2
    assert "steps.a.scatter.s[1]:" in output and "255 bytes" in output


@pytest.mark.parametrize(
    ("command", "scripts"),
    [
        ("echo ${x}", [(None, "echo ${x}")]),
        (["echo", "${x}"], []),
        (["sh", "-c", "echo ${x}"], [(2, "echo ${x}")]),
        (["/bin/bash", "-euc", "echo ${x}", "bash", "${x}"], [(2, "echo ${x}")]),
        (["busybox", "sh", "-c", "s"], [(3, "s")]),
        (["bash", "-o", "pipefail", "-c", "s"], [(4, "s")]),
        (["sh", "-c", "-e", "s", "name", "${x}"], [(3, "s")]),
        (["sh", "-eo", "pipefail", "-xc", "s"], [(4, "s")]),
        (["bash", "--norc", "-c", "s"], [(3, "s")]),
        (["env", "A=1", "/usr/bin/dash", "-c", "s"], [(4, "s")]),
        (["timeout", "10", "sh", "-c", "s"], [(4, "s")]),
        (["sh", "script.sh", "-c", "x"], []),
        (["sh", "-e", "script.sh"], []),
        (["python3", "-c", "print('${x}')"], []),
    ],
)
def test_shell_scripts_are_found_in_string_and_shell_dash_c_commands(
    command: str | list[str], scripts: list[tuple[int | None, str]]
) -> None:
    assert shell_scripts(command) == scripts


def test_shell_inert_characters_are_letters_digits_and_a_few_marks() -> None:
    assert not_shell_inert("sample_01.R1-trim+v2,x@y%z=w:v.fq.gz") is None
    assert not_shell_inert("échantillon-東京") is None  # letters of any script
    for char in "$`\\\"'; &|<>()*?[]{}~#!^ \n\t":
        assert not_shell_inert(f"a{char}b") == char
        assert char not in SHELL_INERT


def test_unclosed_finds_a_dollar_brace_without_its_brace() -> None:
    assert unclosed("echo ${x")
    assert unclosed("${a} ${b")
    assert not unclosed("echo ${x} $${y} $$ {z}")
    assert not unclosed("echo $${literal")


# -- paths: every instance, and the state folder --------------------------------------------


def test_an_escape_hidden_among_many_instances_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hole 5: the check stopped after 1,000 combinations; zzz sorts last."""
    data = names(tmp_path, "a.txt", "b.txt")
    (data / "zzz").symlink_to("/etc")
    values = ", ".join(f"v{i}" for i in range(1000))
    code, output = validate(
        tmp_path,
        f"""
        version: 1
        name: hole5
        steps:
          a:
            scatter: {{f: {{glob: "data/*"}}, n: [{values}]}}
            inputs: {{data: "data/${{f}}"}}
            command: [wc, -c, /in/data]
        """,
        capsys,
    )
    assert code == 2, output
    assert "steps.a.inputs.data:" in output
    assert "'data/zzz' (from 'data/${f}') escapes" in output


def test_a_hundred_thousand_instances_are_checked_path_by_distinct_path(
    tmp_path: Path,
) -> None:
    names(tmp_path, *[f"s{i}.txt" for i in range(100)])
    values = ", ".join(f"v{i}" for i in range(1000))
    path = tmp_path / "dockyard.yaml"
    path.write_text(
        "version: 1\nname: wide\nsteps:\n  a:\n"
        f"    scatter: {{f: {{glob: 'data/*'}}, n: [{values}]}}\n"
        "    inputs: {data: 'data/${f}'}\n"
        "    command: [echo, '${f}', '${n}']\n"
    )
    scatter = load_pipeline(path).scatter["a"]
    assert len(scatter["f"]) * len(scatter["n"]) == 100_000


STATE_INPUTS = {
    "the-folder-itself": (".", "contains"),
    "dot-slash": ("./", "contains"),
    "the-state-folder": (".dockyard", "is dockyard's state folder"),
    "inside-it": ("./.dockyard/logs", "is inside"),
    "through-dotdot": ("data/../.dockyard", "is dockyard's state folder"),
}


@pytest.mark.parametrize(("path", "relation"), STATE_INPUTS.values(), ids=STATE_INPUTS.keys())
def test_an_input_may_not_reach_the_state_folder(
    path: str, relation: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names(tmp_path, "a.txt")
    (tmp_path / ".dockyard" / "logs").mkdir(parents=True)
    code, output = validate(
        tmp_path,
        f"""
        version: 1
        name: hole8
        steps:
          a: {{command: [ls, /in/all], inputs: {{all: "{path}"}}}}
        """,
        capsys,
    )
    assert code == 2, output
    assert "steps.a.inputs.all:" in output
    assert relation in output and "subfolder" in output


def test_a_folder_that_holds_a_linked_state_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "state").mkdir(parents=True)
    (tmp_path / ".dockyard").symlink_to(tmp_path / "data" / "state")
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: linked
        steps:
          a: {command: [ls, /in/d], inputs: {d: data}}
        """,
        capsys,
    )
    assert code == 2
    assert "contains dockyard's state folder" in output


def test_a_seed_may_not_copy_the_state_folder_into_a_volume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: seed
        volumes: {v: {seed: .}}
        steps:
          a: {command: "true"}
        """,
        capsys,
    )
    assert code == 2
    assert "volumes.v.seed:" in output and "state folder" in output


def test_globs_skip_hidden_names_and_never_yield_the_state_folder(write_pipeline) -> None:  # type: ignore[no-untyped-def]
    path = write_pipeline(
        """
        version: 1
        name: hidden
        steps:
          every: {scatter: {f: {glob: "*"}}, command: [echo, "${f}"]}
          dotted: {scatter: {f: {glob: ".*"}}, command: [echo, "${f}"]}
          deep: {scatter: {f: {glob: "**/*.txt"}}, command: [echo, "${f}"]}
        """
    )
    root = path.parent
    (root / ".dockyard" / "logs").mkdir(parents=True)
    (root / ".dockyard" / "logs" / "x.txt").write_text("")
    (root / ".git").mkdir()
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "sub" / "a.txt").write_text("")
    (root / "data" / ".b.txt").write_text("")
    scatter = load_pipeline(path).scatter
    assert scatter["every"]["f"] == ("data", "dockyard.yaml")
    assert scatter["dotted"]["f"] == (".git",)
    assert scatter["deep"]["f"] == ("a.txt",)


def test_a_symlink_loop_is_walked_once_not_until_the_pattern_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = names(tmp_path, "x")
    for i in range(12):  # 12**7 paths lead to data/.../x
        (data / f"l{i}").symlink_to(".")
    path = tmp_path / "dockyard.yaml"
    path.write_text(
        "version: 1\nname: loop\nsteps:\n"
        "  a: {scatter: {f: {glob: 'data/*/*/*/*/*/*/*/x'}}, command: [echo, '${f}']}\n"
    )
    assert load_pipeline(path).scatter["a"]["f"] == ("x",)


def test_a_glob_that_looks_at_too_much_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dockyard.spec.paths.MAX_GLOB_ENTRIES", 50)
    for i in range(10):
        names(tmp_path / f"d{i}", *[f"f{j}" for j in range(10)])
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: big
        steps:
          a: {scatter: {f: {glob: "**/*"}}, command: [echo, "${f}"]}
        """,
        capsys,
    )
    assert code == 2
    assert "more than 50 folder entries" in output


def test_resolve_input_refuses_at_mount_time_what_changed_since_the_check(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    assert resolve_input(tmp_path, "data") == (tmp_path / "data").resolve()
    (tmp_path / "data").rmdir()
    (tmp_path / "data").symlink_to("/etc")
    with pytest.raises(PlanError, match="escapes the pipeline file's folder"):
        resolve_input(tmp_path, "data")
    with pytest.raises(PlanError, match="state folder"):
        resolve_input(tmp_path, ".")
    with pytest.raises(PlanError, match="relative"):
        resolve_input(tmp_path, "/etc")


def test_an_input_that_is_a_fifo_is_refused_as_it_would_never_be_read_to_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    os.mkfifo(tmp_path / "pipe")
    code, output = validate(
        tmp_path,
        """
        version: 1
        name: fifo
        steps:
          a: {command: [cat, /in/p], inputs: {p: pipe}}
        """,
        capsys,
    )
    assert code == 2
    assert "steps.a.inputs.p:" in output and "neither a file nor a folder" in output
    with pytest.raises(PlanError, match="neither a file nor a folder"):
        resolve_input(tmp_path, "pipe")


# -- the data root (named volumes, the cluster key) ----------------------------------------

DATA_ROOT_PATHS = {
    "is-it": ("home", "input", "is dockyard's data root"),
    "inside-it": ("home/swarm", "input", "is inside dockyard's data root"),
    "contains-it": (".", "input", "contains dockyard's data root"),
    "a-seed-inside-it": ("home/volumes", "seed", "is inside dockyard's data root"),
    "a-build-context-containing-it": (".", "build", "contains dockyard's data root"),
}


@pytest.mark.parametrize(
    ("path", "where", "relation"), DATA_ROOT_PATHS.values(), ids=DATA_ROOT_PATHS.keys()
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_data_root_is_no_input_seed_or_build_context(
    path: str,
    where: str,
    relation: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stranger's pipeline run from $HOME must not hand the cluster key to a step."""
    home = tmp_path / "home"
    (home / "swarm").mkdir(parents=True)
    (home / "swarm" / "agent.key").write_text("secret")
    (home / "volumes").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx\n")
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    body = {
        "input": f'a: {{command: [ls, /in/d], inputs: {{d: "{path}"}}}}',
        "seed": 'a: {command: "true"}',
        "build": 'a: {command: "true", image: {ref: t}}',
    }[where]
    extra = {
        "input": "",
        "seed": f'volumes: {{v: {{seed: "{path}"}}}}\n',
        "build": f'images: {{t: {{build: "{path}"}}}}\n',
    }[where]
    file = tmp_path / "dockyard.yaml"
    file.write_text(f"version: 1\nname: home\n{extra}steps:\n  {body}\n")
    code = main([command, "-f", str(file)])
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())
    assert code == 2, output
    assert relation in output and "cluster's key" in output
    assert not (tmp_path / ".dockyard" / "outputs").exists()  # nothing started


@pytest.mark.parametrize(
    ("command", "script"),
    [
        (["env", "-S", "sh -c 'echo ${x}'"], (2, "sh -c 'echo ${x}'")),
        (["env", "--split-string=sh -c x"], (1, "--split-string=sh -c x")),
        (["flock", "/tmp/lock", "-c", "echo ${x}"], (3, "echo ${x}")),
        (["su", "-c", "echo ${x}", "nobody"], (2, "echo ${x}")),
    ],
)
def test_a_command_line_a_wrapper_hands_to_a_shell_is_a_script(
    command: list[str], script: tuple[int, str]
) -> None:
    assert shell_scripts(command) == [script]
