"""Sample sheets: one instance per row of a CSV or TSV file with a header, each column a
variable; the rows in the keys of the instances that read them; bad rows as file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.planning.graph import InstanceId, UpstreamMount
from dockyard.planning.preflight import graph_of
from dockyard.spec import load_pipeline
from dockyard.testing import FakeRuntime
from tests.conftest import WritePipeline, load_problems
from tests.unit.test_engine_fake import IMAGE, execute

PIPELINE = """
    version: 1
    name: sheets
    params:
      sheet: samples.csv
    defaults: {image: busybox:1.36, resources: {cpus: 0.5, memory: 32m}}
    steps:
      reads:
        scatter: {sample: {sheet: "${params.sheet}"}}
        inputs: {fastq: "${fastq}"}
        command: "echo ${sample} ${depth} > /out/reads"
      align:
        needs: [reads]
        scatter: {sample: {sheet: "${params.sheet}"}}
        command: "echo ${sample} > /out/bam"
      report:
        needs: [align]
        command: "echo done > /out/r"
"""
SHEET = "sample,depth,fastq\ns1,30,data/s1.fq\ns2,10,data/s2.fq\n"


@pytest.fixture
def pipeline(write_pipeline: WritePipeline) -> Path:
    path = write_pipeline(PIPELINE)
    (path.parent / "data").mkdir()
    for name in ("s1", "s2", "s3"):
        (path.parent / "data" / f"{name}.fq").write_text(name)
    (path.parent / "samples.csv").write_text(SHEET)
    return path


def test_one_instance_per_row_each_column_a_variable(pipeline: Path) -> None:
    graph = graph_of(load_pipeline(pipeline))
    assert [str(i) for i in graph.order] == [
        "reads[s1]",
        "reads[s2]",
        "align[s1]",
        "align[s2]",
        "report",
    ]
    s2 = graph.instances[InstanceId("reads", "s2")]
    assert s2.command == ("sh", "-c", "echo s2 10 > /out/reads")
    assert s2.inputs == (("fastq", "data/s2.fq"),)
    assert dict(s2.bindings) == {"sample": "s2", "depth": "10", "fastq": "data/s2.fq"}
    # steps pair on the key column as on any scatter variable, and gather as usual
    assert graph.instances[InstanceId("align", "s2")].upstream == (
        UpstreamMount(InstanceId("reads", "s2"), "/in/reads"),
    )
    assert {m.target for m in graph.instances[InstanceId("report")].upstream} == {
        "/in/align/s1",
        "/in/align/s2",
    }


def test_a_tsv_sheet_named_by_a_param(pipeline: Path) -> None:
    (pipeline.parent / "more.tsv").write_text(
        "sample\tdepth\tfastq\ns3\t5\tdata/s3.fq\n\ns1\t7\tdata/s1.fq\n"
    )
    graph = graph_of(load_pipeline(pipeline, params=["sheet=more.tsv"]))
    assert [str(i) for i in graph.order if i.step == "reads"] == ["reads[s3]", "reads[s1]"]
    assert graph.instances[InstanceId("reads", "s1")].command == (
        "sh",
        "-c",
        "echo s1 7 > /out/reads",
    )


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        ("", "samples.csv: expected a header line naming the columns, found none"),
        ("sample,depth,fastq\n", "samples.csv: expected at least one row below the header"),
        (
            "name,depth,fastq\ns1,1,data/s1.fq\n",
            "samples.csv:1: expected a column named 'sample' (the scatter variable",
        ),
        (
            "sample,depth,fastq\ns1,1,data/s1.fq\ns1,2,data/s2.fq\n",
            "samples.csv:3: sample 's1' is already on line 2",
        ),
        (
            "sample,depth,fastq\ns1,1,data/s1.fq\ns2,2\n",
            "samples.csv:3: expected 3 fields (as the header has), found 2",
        ),
        (
            "sample,read depth,fastq\ns1,1,data/s1.fq\n",
            "samples.csv:1: column 'read depth': expected a column name usable as a variable",
        ),
        (
            "sample,depth,depth,fastq\ns1,1,1,data/s1.fq\n",
            "samples.csv:1: column 'depth' appears twice in the header",
        ),
        (
            "sample,depth,fastq\ns/1,1,data/s1.fq\n",
            "samples.csv:2: sample: expected a value usable as a file name, found 's/1'",
        ),
        (
            "sample,depth,fastq\ns1,$(reboot),data/s1.fq\n",
            "samples.csv:2: depth: value '$(reboot)' would be pasted into a shell script",
        ),
        (
            'sample,depth,fastq\ns1,"1\n2",data/s1.fq\n',
            "samples.csv:3: column 'depth': expected printable text",
        ),
    ],
)
def test_bad_rows_are_reported_with_file_and_line(
    pipeline: Path, sheet: str, expected: str
) -> None:
    (pipeline.parent / "samples.csv").write_text(sheet)
    assert expected in load_problems(pipeline)


def test_a_sheet_outside_the_folder_is_refused(pipeline: Path, tmp_path: Path) -> None:
    message = load_problems(pipeline, params=["sheet=../outside.csv"])
    assert "steps.reads.scatter.sample.sheet: path '../outside.csv'" in message
    assert "escapes the pipeline file's folder" in message
    # (an unreadable sheet does not also make every column an unknown variable)
    assert "unknown variable" not in message


def test_an_input_named_by_a_column_is_checked_row_by_row(pipeline: Path) -> None:
    (pipeline.parent / "samples.csv").write_text(SHEET + "s3,1,data/missing.fq\n")
    message = load_problems(pipeline)
    assert "steps.reads.inputs.fastq: path 'data/missing.fq' (from '${fastq}') does not exist" in (
        message
    )
    assert message.count("does not exist") == 1  # not every column value with every key


def test_a_column_may_not_shadow_a_scatter_variable(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: shadow
        steps:
          a:
            scatter: {sample: {sheet: s.csv}, lane: [l1, l2]}
            command: "echo ${sample} ${lane} > /out/x"
        """
    )
    (path.parent / "s.csv").write_text("sample,lane\ns1,x\n")
    assert "the sheet's column 'lane' is also the scatter variable 'lane'" in load_problems(path)


def test_a_changed_row_reruns_only_its_instances(pipeline: Path) -> None:
    runtime = FakeRuntime(cpus=4, memory=4 * 1024**3)
    runtime.add_image(IMAGE)
    execute(pipeline, runtime)
    (pipeline.parent / "samples.csv").write_text(SHEET.replace("s2,10", "s2,11"))
    run_id, store, _ = execute(pipeline, runtime)
    cached = {row.instance: row.cached for row in store.instances(run_id)}
    assert cached == {
        "reads[s1]": True,
        "reads[s2]": False,
        "align[s1]": True,
        "align[s2]": False,  # (what reads[s2] made changed)
        "report": True,  # (what align[s2] made did not)
    }


def test_a_sheet_read_by_two_steps_reports_each_problem_once_beside_the_file(
    pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pipeline.parent / "samples.csv").write_text("sample,depth,fastq\ns1,1\n")
    monkeypatch.chdir(pipeline.parent.parent)
    message = load_problems(Path(pipeline.parent.name) / "dockyard.yaml")
    assert message.startswith("1 problem")
    assert f"{pipeline.parent.name}/samples.csv:2: expected 3 fields" in message


def test_a_sheet_too_wide_is_refused_before_it_is_parsed(pipeline: Path) -> None:
    (pipeline.parent / "samples.csv").write_text("sample" + "," * 100_000 + "\n")
    assert "samples.csv:1: expected at most 256 columns" in load_problems(pipeline)
