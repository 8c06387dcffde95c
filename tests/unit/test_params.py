"""Pipeline parameters: typed defaults, ``--param`` and ``--params``, pasted like scatter
values (and under the same rules), part of the keys of the instances that use them, and
kept with the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.planning.preflight import graph_of
from dockyard.report.html import render
from dockyard.report.summary import load_summary
from dockyard.spec import load_pipeline
from dockyard.testing import FakeRuntime
from tests.conftest import WritePipeline, load_problems
from tests.unit.test_engine_fake import IMAGE, execute

PIPELINE = """
    version: 1
    name: params
    params:
      length: 1000                  # int
      rate: {default: 1, type: float, help: "a rate"}
      label: hello
      loud: false
      threads: 2
    defaults: {image: busybox:1.36, resources: {memory: 32m}}
    steps:
      make:
        scatter: {n: [a, b]}
        command: "echo ${n} ${params.length} > /out/x"
        resources:
          cpus: ${params.threads}
      label:
        command: "echo ${params.label} > /out/y"
        env: {LOUD: "${params.loud}", RATE: "${params.rate}"}
"""


def test_defaults_are_typed_and_pasted_where_variables_are(write_pipeline: WritePipeline) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    assert pf.params == {"length": 1000, "rate": 1.0, "label": "hello", "loud": False, "threads": 2}
    assert pf.pipeline.params["rate"].help == "a rate"
    graph = graph_of(pf)
    make = graph.instances[graph.order[0]]
    assert make.command == ("sh", "-c", "echo a 1000 > /out/x")
    assert make.cpus == 2.0  # a typed field that names one parameter takes its value
    label = next(i for i in graph.instances.values() if i.step == "label")
    assert label.command == ("sh", "-c", "echo hello > /out/y")
    assert dict(label.env) == {"LOUD": "false", "RATE": "1.0"}


def test_param_and_params_file_set_values_later_sources_win(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE)
    values = tmp_path / "values.yaml"
    values.write_text("length: 5\nlabel: from-file\nrate: 2\n")
    pf = load_pipeline(path, params_file=values, params=["length=7", "loud=true"])
    assert pf.params == {"length": 7, "rate": 2.0, "label": "from-file", "loud": True, "threads": 2}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("length=many", "--param 'length=many': expected a whole number, found 'many'"),
        ("lenght=3", "unknown parameter 'lenght' (did you mean 'length'?)"),
        ("loud=yes", "expected true or false, found 'yes'"),
        ("rate=fast", "expected a number, found 'fast'"),
        ("length", "--param 'length': expected NAME=VALUE"),
        ("label=a\nb", "expected printable text"),
    ],
)
def test_a_bad_param_is_named(write_pipeline: WritePipeline, setting: str, expected: str) -> None:
    assert expected in load_problems(write_pipeline(PIPELINE), params=[setting])


def test_a_params_file_problem_is_located(write_pipeline: WritePipeline, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("length: 5\nthreads: lots\nsize: 3\n")
    message = load_problems(write_pipeline(PIPELINE), params_file=values)
    assert f"{values}:2:10: threads: expected a whole number, found 'lots'" in message
    assert f"{values}:3:7: size: unknown parameter 'size'" in message


def test_declarations_are_checked(write_pipeline: WritePipeline) -> None:
    message = load_problems(
        write_pipeline(
            """
            version: 1
            name: p
            params:
              list: [1, 2]
              wrong: {default: 3, type: bool}
              bad-name: 1
              nodefault: {type: int}
            steps: {a: {command: "true"}}
            """
        )
    )
    assert "params.list: expected a default of text, a number or true/false" in message
    assert "params.wrong: default: expected true or false, found 3" in message
    assert "params.bad-name" in message and "expected a variable name" in message
    assert "params.nodefault.default: required key 'default' is missing" in message


def test_an_unknown_param_reference_is_located(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(PIPELINE.replace("${params.length}", "${params.lenght}"))
    assert (
        ":14:14: steps.make.command: ${params.lenght}: unknown parameter 'lenght' "
        "(did you mean 'length'?)" in load_problems(path)
    )
    path = write_pipeline(PIPELINE.replace("cpus: ${params.threads}", "cpus: ${params.cores}"))
    assert "steps.make.resources.cpus: unknown parameter 'cores'" in load_problems(path)


def test_a_typed_field_checks_the_value_it_takes(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(PIPELINE)
    assert "steps.make.resources.cpus: expected a number of CPUs" in load_problems(
        path, params=["threads=0"]
    )


def test_a_param_in_a_shell_script_must_stay_data(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(PIPELINE)
    assert load_pipeline(path, params=["label=data/ref.fa"])  # a path is data
    message = load_problems(path, params=["label=x; rm -rf /"])
    assert "steps.label.command: parameter 'label' = 'x; rm -rf /' would be pasted" in message
    assert "';' is shell syntax" in message
    # the exec form takes any text as one argument
    exec_form = """command: [sh, -c, 'echo "$0" > /out/y', "${params.label}"]"""
    path = write_pipeline(PIPELINE.replace('command: "echo ${params.label} > /out/y"', exec_form))
    pf = load_pipeline(path, params=["label=x; rm -rf /"])
    label = next(i for i in graph_of(pf).instances.values() if i.step == "label")
    assert label.command == ("sh", "-c", 'echo "$0" > /out/y', "x; rm -rf /")


def test_a_param_changes_the_key_of_only_the_instances_that_use_it(
    write_pipeline: WritePipeline,
) -> None:
    path = write_pipeline(PIPELINE)
    runtime = FakeRuntime(cpus=4, memory=4 * 1024**3)
    runtime.add_image(IMAGE)
    execute(path, runtime)
    run_id, store, _ = execute(path, runtime, params=["label=changed"])
    cached = {row.instance: row.cached for row in store.instances(run_id)}
    assert cached == {"make[a]": True, "make[b]": True, "label": False}
    run_id, store, _ = execute(path, runtime, params=["label=changed", "threads=1"])
    assert all(row.cached for row in store.instances(run_id))  # resources are not results
    run_id, store, _ = execute(path, runtime, params=["length=3"])
    cached = {row.instance: row.cached for row in store.instances(run_id)}
    assert cached == {"make[a]": False, "make[b]": False, "label": True}


def test_the_run_keeps_its_params(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(PIPELINE)
    runtime = FakeRuntime(cpus=4, memory=4 * 1024**3)
    runtime.add_image(IMAGE)
    run_id, store, _ = execute(path, runtime, params=["length=42"])
    summary = load_summary(store, run_id)
    assert summary.to_json()["run"]["params"]["length"] == 42
    html = render(summary, load_pipeline(path).pipeline, lambda attempt: "")
    assert "<th>param length</th><td><code>42</code>" in html
    capsys.readouterr()
    assert main(["status", "-f", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["params"] == {
        "label": "hello",
        "length": 42,
        "loud": False,
        "rate": 1.0,
        "threads": 2,
    }
    assert main(["status", "-f", str(path)]) == 0
    assert 'params: label="hello", length=42, loud=false' in capsys.readouterr().out


def test_validate_takes_params(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(PIPELINE)
    assert main(["validate", "-f", str(path), "--param", "length=9"]) == 0
    assert main(["validate", "-f", str(path), "--param", "length=x"]) == 2
    assert "expected a whole number" in capsys.readouterr().err


def test_a_missing_params_file_is_named(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE)
    missing = tmp_path / "nope.yaml"
    assert main(["validate", "-f", str(path), "--params", str(missing)]) == 2
    assert f"{missing}: no such params file" in " ".join(capsys.readouterr().err.split())
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert "expected a mapping of parameter names to values" in load_problems(
        path, params_file=listed
    )


def test_a_past_run_is_shown_whatever_params_it_had(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(
        PIPELINE.replace("params:\n", "params:\n      sheet: missing.csv\n").replace(
            "scatter: {n: [a, b]}", 'scatter: {n: {sheet: "${params.sheet}"}}'
        )
    )
    (path.parent / "mine.csv").write_text("n\na\nb\n")
    runtime = FakeRuntime(cpus=4, memory=4 * 1024**3)
    runtime.add_image(IMAGE)
    execute(path, runtime, params=["sheet=mine.csv"])
    capsys.readouterr()
    # (the default sheet does not exist: the commands that show a run do not read it)
    for command in (["status"], ["trace"], ["graph"], ["report", "-o", str(path.parent / "r")]):
        assert main([*command, "-f", str(path)]) == 0, capsys.readouterr()
    assert main(["outputs", "-f", str(path), "make[a]"]) == 0
    assert main(["validate", "-f", str(path)]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_yaml_numbers_of_every_spelling_are_plain_values(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        params:
          f: 1.5
          hexa: 0x10
          big: 1_000
          e: 1e3
          anchored: &a 3
          long: {default: 0.5, help: "a float"}
        steps: {a: {command: "echo ${params.f} ${params.hexa} ${params.e} > /out/x"}}
        """
    )
    pf = load_pipeline(path)
    assert pf.params == {"f": 1.5, "hexa": 16, "big": 1000, "e": 1000.0, "anchored": 3, "long": 0.5}
    assert [type(v) for v in pf.params.values()] == [float, int, int, float, int, float]
    values = tmp_path / "values.yaml"
    values.write_text("hexa: 0x20\nbig: 2_000\n<<: {anchored: 4}\n")  # (a merge key too)
    pf = load_pipeline(path, params_file=values)
    assert (pf.params["hexa"], pf.params["big"], pf.params["anchored"]) == (32, 2000, 4)
    values.write_text("f:\n")
    assert "f: expected a number, found null" in load_problems(path, params_file=values)
    values.write_text("f: [1\n")
    message = load_problems(path, params_file=values)
    assert "problem in the params file" in message and "invalid YAML" in message


def test_a_service_does_not_take_params_in_its_command(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        params: {port: 6379}
        services:
          cache:
            image: busybox:1.36
            command: "redis-server --port ${params.port}"
            env: {PORT: "${params.port}"}
        steps: {a: {command: "true", services: [cache]}}
        """
    )
    message = load_problems(path)
    assert "services.cache.command: ${params.NAME} is not replaced in a service's" in message
    assert "services.cache.env.PORT: ${params.NAME} is not replaced" in message


def test_an_unknown_param_in_a_typed_field_is_said_once(write_pipeline: WritePipeline) -> None:
    message = load_problems(
        write_pipeline(PIPELINE.replace("cpus: ${params.threads}", "cpus: ${params.nope}"))
    )
    assert message.startswith("1 problem")
    assert "steps.make.resources.cpus: unknown parameter 'nope'" in message


def test_validate_lists_the_params(
    write_pipeline: WritePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(PIPELINE)
    assert main(["validate", "-f", str(path), "--param", "loud=true"]) == 0
    shown = capsys.readouterr().out
    assert "params.rate = 1.0  # a rate" in shown and "params.loud = true" in shown
