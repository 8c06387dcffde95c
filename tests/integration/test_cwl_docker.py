"""CWL documents on the real Docker Engine: `dockyard-cwl` (the cwl-runner) and
`dockyard run WORKFLOW.cwl`, with CWL files this project writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.runtime.base import LABEL_PIPELINE
from dockyard.state.store import Store

pytest.importorskip("cwltool")
pytestmark = pytest.mark.docker
RUNNER = Path(sys.executable).parent / "dockyard-cwl"
DOCKYARD = Path(sys.executable).parent / "dockyard"

SCATTER_GATHER = """
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  names: string[]
outputs:
  all:
    type: File
    outputSource: gather/out
steps:
  greet:
    run:
      class: CommandLineTool
      baseCommand: [sh, -c, 'echo "hello $0" > greeting.txt']
      inputs:
        name: {type: string, inputBinding: {position: 1}}
      outputs:
        greeting: {type: File, outputBinding: {glob: greeting.txt}}
    scatter: name
    in: {name: names}
    out: [greeting]
  gather:
    run:
      class: CommandLineTool
      baseCommand: cat
      stdout: all.txt
      inputs:
        parts: {type: 'File[]', inputBinding: {position: 1}}
      outputs:
        out: {type: stdout}
    in: {parts: greet/greeting}
    out: [out]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def runner(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNNER), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        check=False,
    )


def test_a_scattered_workflow_runs_and_a_rerun_is_answered_by_the_cache(tmp_path: Path) -> None:
    workflow = write(tmp_path, "greet.cwl", SCATTER_GATHER)
    job = write(tmp_path, "job.yml", "names: [ada, grace, linus]\n")
    cache = tmp_path / "state"
    first = runner("--outdir", tmp_path / "o1", "--cachedir", cache, workflow, job)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)["all"]
    assert Path(out["path"]).read_text() == "hello ada\nhello grace\nhello linus\n"
    assert out["checksum"].startswith("sha1$")

    # (--strict, cwltool's default, makes the command line one the rerun record does not
    # answer: the workflow is evaluated again, and each tool is answered by the cache)
    second = runner("--strict", "--outdir", tmp_path / "o2", "--cachedir", cache, workflow, job)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "o2" / "all.txt").read_text() == "hello ada\nhello grace\nhello linus\n"
    store = Store(cache / "state.db")
    try:
        runs = store.runs()
        assert len(runs) == 2
        rows = store.instances(runs[-1].id)  # the second run
        # (named as cwltool names the jobs: a scattered step's second job is greet_2)
        assert sorted(r.instance for r in rows) == ["gather", "greet", "greet_2", "greet_3"]
        assert all(r.cached for r in rows), rows  # same inputs: nothing ran again
    finally:
        store.close()


def test_dockyard_run_takes_a_cwl_document_and_status_reads_its_runs(tmp_path: Path) -> None:
    workflow = write(tmp_path, "greet.cwl", SCATTER_GATHER)
    job = write(tmp_path, "job.yml", "names: [one, two]\n")
    done = subprocess.run(
        [str(DOCKYARD), "run", "--outdir", str(tmp_path / "out"), str(workflow), str(job)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["all"]["basename"] == "all.txt"
    assert (tmp_path / ".dockyard" / "state.db").exists()  # beside the document
    status = subprocess.run(
        [str(DOCKYARD), "status", "-f", str(workflow), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["run"]["state"] == "succeeded"
    assert {i["instance"] for i in summary["instances"]} == {"gather", "greet", "greet_2"}


def test_success_codes_and_a_failing_tool(tmp_path: Path) -> None:
    tool = write(
        tmp_path,
        "exits.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        baseCommand: [sh, -c, 'echo ran > ran.txt; exit $0']
        successCodes: [0, 3]
        inputs:
          code: {type: int, inputBinding: {position: 1}}
        outputs:
          ran: {type: File, outputBinding: {glob: ran.txt}}
          code: {type: int, outputBinding: {outputEval: $(runtime.exitCode)}}
        """,
    )
    succeeded = runner("--outdir", tmp_path / "o", tool, write(tmp_path, "a.yml", "code: 3\n"))
    assert succeeded.returncode == 0, succeeded.stderr
    assert json.loads(succeeded.stdout)["code"] == 3
    failed = runner("--outdir", tmp_path / "o", tool, write(tmp_path, "b.yml", "code: 4\n"))
    assert failed.returncode == 1
    assert "permanentFail" in failed.stderr


def test_initial_work_dir_entries_are_in_the_output_folder_before_the_start(
    tmp_path: Path,
) -> None:
    data = write(tmp_path, "data.txt", "line\n")
    tool = write(
        tmp_path,
        "iwd.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          InitialWorkDirRequirement:
            listing:
              - entryname: config.ini
                entry: "threads=2"
              - entry: $(inputs.data)
                writable: true
        baseCommand: [sh, -c, 'echo more >> data.txt && cat config.ini data.txt > seen.txt']
        inputs:
          data: File
        outputs:
          seen: {type: File, outputBinding: {glob: seen.txt}}
        """,
    )
    job = write(tmp_path, "job.yml", f"data: {{class: File, path: {data}}}\n")
    done = runner("--outdir", tmp_path / "o", tool, job)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "seen.txt").read_text() == "threads=2line\nmore\n"
    assert data.read_text() == "line\n"  # a writable entry is a copy


def test_an_output_link_that_leads_outside_its_folder_is_refused(tmp_path: Path) -> None:
    tool = write(
        tmp_path,
        "sneaky.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        baseCommand: [ln, -s, /etc/shadow, stolen]
        inputs: []
        outputs:
          stolen: {type: File, outputBinding: {glob: stolen}}
        """,
    )
    done = runner("--outdir", tmp_path / "o", tool)
    assert done.returncode == 1
    assert "leads outside" in done.stderr
    assert not (tmp_path / "o" / "stolen").exists()


def test_an_image_nobody_can_find_or_make_fails_clearly_and_is_not_unsupported(
    tmp_path: Path,
) -> None:
    tool = write(
        tmp_path,
        "missing.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          DockerRequirement: {dockerPull: "dockyard-test/no-such-image:never"}
        baseCommand: "true"
        inputs: []
        outputs: []
        """,
    )
    done = runner("--outdir", tmp_path / "o", tool)
    assert done.returncode == 1, done.stderr
    assert "no-such-image" in done.stderr


def test_a_requirement_dockyard_does_not_support_exits_33(tmp_path: Path) -> None:
    tool = write(
        tmp_path,
        "load.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          DockerRequirement: {dockerLoad: "https://example.invalid/image.tar"}
        baseCommand: "true"
        inputs: []
        outputs: []
        """,
    )
    done = runner("--outdir", tmp_path / "o", tool)
    assert done.returncode == 33, done.stderr


def test_no_container_of_a_cwl_run_is_left(tmp_path: Path, docker_runtime: DockerRuntime) -> None:
    workflow = write(tmp_path, "greet.cwl", SCATTER_GATHER)
    job = write(tmp_path, "job.yml", "names: [x]\n")
    done = runner("--outdir", tmp_path / "o", workflow, job)
    assert done.returncode == 0, done.stderr
    left = docker_runtime.list({LABEL_PIPELINE: "greet"})
    assert not [c for c in left if c.state == "running"]
    assert os.listdir(tmp_path / "o") == ["all.txt"]


def test_files_of_the_same_name_and_command_but_other_content_are_not_mixed_up(
    tmp_path: Path,
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "data.txt").write_text("first\n")
    (tmp_path / "two" / "data.txt").write_text("second\n")
    workflow = write(
        tmp_path,
        "twice.cwl",
        """
        cwlVersion: v1.2
        class: Workflow
        inputs: {a: File, b: File}
        outputs:
          x: {type: File, outputSource: first/out}
          y: {type: File, outputSource: second/out}
        steps:
          first: {run: show.cwl, in: {f: a}, out: [out]}
          second: {run: show.cwl, in: {f: b}, out: [out]}
        """,
    )
    write(
        tmp_path,
        "show.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          InitialWorkDirRequirement: {listing: [$(inputs.f)]}
        baseCommand: [cat, data.txt]
        stdout: shown.txt
        inputs: {f: File}
        outputs: {out: {type: stdout}}
        """,
    )
    job = write(
        tmp_path,
        "job.yml",
        f"a: {{class: File, path: {tmp_path}/one/data.txt}}\n"
        f"b: {{class: File, path: {tmp_path}/two/data.txt}}\n",
    )
    done = runner("--outdir", tmp_path / "o", workflow, job)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["x"]["path"]).read_text() == "first\n"
    assert Path(found["y"]["path"]).read_text() == "second\n"


def test_a_rerun_in_which_nothing_changed_is_answered_without_loading_the_document(
    tmp_path: Path,
) -> None:
    data = write(tmp_path, "data.txt", "one\n")
    tool = write(
        tmp_path,
        "count.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        baseCommand: [wc, -l]
        stdin: $(inputs.data.path)
        stdout: count.txt
        inputs: {data: File}
        outputs: {count: {type: stdout}}
        """,
    )
    job = write(tmp_path, "job.yml", f"data: {{class: File, path: {data}}}\n")
    cache = tmp_path / "state"

    def count(outdir: str) -> tuple[str, str]:
        done = runner("--outdir", tmp_path / outdir, "--cachedir", cache, tool, job)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)["count"]
        assert Path(found["path"]).parent == tmp_path / outdir
        return Path(found["path"]).read_text().strip(), done.stderr

    assert count("o1")[0] == "1"
    text, said = count("o2")
    assert text == "1"
    assert "nothing changed since run" in said
    data.write_text("one\ntwo\n")  # what it read changed: run again
    text, said = count("o3")
    assert text == "2"
    assert "nothing changed" not in said
    tool.write_text(tool.read_text().replace("[wc, -l]", "[wc, -c]"))  # so did the tool
    text, said = count("o4")
    assert text == "8"
    assert "nothing changed" not in said


def test_an_optional_secondary_file_that_appears_later_makes_the_rerun_run(
    tmp_path: Path,
) -> None:
    data = write(tmp_path, "x.bam", "reads\n")
    tool = write(
        tmp_path,
        "list.cwl",
        """
        cwlVersion: v1.2
        class: CommandLineTool
        baseCommand: [ls]
        arguments: [$(inputs.bam.dirname)]
        stdout: listed.txt
        inputs:
          bam:
            type: File
            secondaryFiles: [{pattern: .bai, required: false}]
        outputs: {listed: {type: stdout}}
        """,
    )
    job = write(tmp_path, "job.yml", f"bam: {{class: File, path: {data}}}\n")
    cache = tmp_path / "state"

    def listed(outdir: str) -> tuple[str, str]:
        done = runner("--outdir", tmp_path / outdir, "--cachedir", cache, tool, job)
        assert done.returncode == 0, done.stderr
        return Path(json.loads(done.stdout)["listed"]["path"]).read_text(), done.stderr

    assert listed("o1")[0] == "x.bam\n"
    assert "nothing changed" in listed("o2")[1]
    write(tmp_path, "x.bam.bai", "index\n")
    text, said = listed("o3")
    assert "nothing changed" not in said
    assert text == "x.bam\nx.bam.bai\n"
