"""The CWL layer's own pieces, without an engine: stable staging names, the output link
check, the images file, and what the state folder of a CWL document is."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cwltool")

from dockyard.cwl.document import cwl_pipeline_file, is_cwl
from dockyard.cwl.images import read_images_file
from dockyard.cwl.staging import escapes, stable_name
from dockyard.errors import InvalidInput


def test_staging_names_follow_what_is_staged_not_chance() -> None:
    file = {"class": "File", "location": "file:///data/a.bam", "basename": "a.bam"}
    with_index = {
        **file,
        "secondaryFiles": [
            {"class": "File", "location": "file:///data/a.bam.bai", "basename": "a.bam.bai"}
        ],
    }
    assert stable_name(file) == stable_name(dict(file))
    assert stable_name(file) != stable_name(with_index)
    assert stable_name(file) != stable_name({**file, "location": "file:///other/a.bam"})
    literal = {"class": "File", "location": "_:1f2e", "basename": "x", "contents": "hi"}
    same_content = {**literal, "location": "_:99aa"}  # (a new random name each run)
    assert stable_name(literal) == stable_name(same_content)
    assert stable_name(literal) != stable_name({**literal, "contents": "ho"})


def test_a_link_out_of_an_output_is_found_and_one_inside_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "f").write_text("x")
    (out / "inside").symlink_to("sub/f")
    (out / "sub" / "up").symlink_to("..")
    assert escapes(out) is None
    (out / "sub" / "away").symlink_to("../../elsewhere")
    assert escapes(out) == "sub/away"
    (out / "sub" / "away").unlink()
    (out / "abs").symlink_to("/etc/passwd")
    assert escapes(out) == "abs"


def test_the_images_file_is_checked_and_tags_default_to_the_names(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    (tmp_path / "ctx").mkdir()
    path.write_text(
        "images:\n"
        "  tools: {debian: {include: [samtools]}}\n"
        "  built: {build: ctx, tag: 'lab/built:1'}\n"
    )
    found = read_images_file(path)
    assert found["tools"].tag == "tools"
    assert found["built"].build == str((tmp_path / "ctx").resolve())
    path.write_text("images:\n  bad: {debian: {include: []}}\n")
    with pytest.raises(InvalidInput, match="bad"):
        read_images_file(path)


def test_a_cwl_documents_runs_keep_their_state_beside_it(tmp_path: Path) -> None:
    pf = cwl_pipeline_file(tmp_path / "My Workflow.cwl")
    assert pf.pipeline.name == "my-workflow"
    assert pf.state_dir == tmp_path / ".dockyard"
    assert is_cwl("wf.cwl#main") and not is_cwl("dockyard.yaml")
    assert cwl_pipeline_file(tmp_path / "___.cwl").pipeline.name == "cwl"


def test_only_a_plain_command_line_is_answered_from_a_rerun_record(tmp_path: Path) -> None:
    from dockyard.cwl.rerun import simple_invocation

    found = simple_invocation(
        ["--outdir=o", "--quiet", "--cachedir", str(tmp_path), "wf.cwl#main", "job.yml"]
    )
    assert found is not None and found.quiet
    assert found.document.endswith("/wf.cwl#main") and found.job is not None
    assert found.state == tmp_path
    same = simple_invocation(
        ["--cachedir", str(tmp_path), "--outdir", "elsewhere", "wf.cwl#main", "job.yml"]
    )
    assert same is not None and same.key() == found.key()  # (where outputs go is no part)
    assert simple_invocation(["wf.cwl", "job.yml"]) is None  # no state kept: no record
    assert simple_invocation(["--cachedir", "c", "--strict", "wf.cwl"]) is None
    assert simple_invocation(["--cachedir", "c"]) is None
    assert simple_invocation(["--cachedir", "c", "a.cwl", "b.yml", "c.yml"]) is None
    other = simple_invocation(["--cachedir", str(tmp_path), "wf.cwl#main", "other.yml"])
    assert other is not None and other.key() != found.key()


def test_a_records_outputs_are_found_again_under_the_new_outdir() -> None:
    from dockyard.cwl.rerun import _copies, _moved

    committed = {
        "out": {
            "class": "File",
            "location": "file:///state/outputs/ab/x.txt",
            "secondaryFiles": [{"class": "File", "location": "file:///state/outputs/ab/x.txt.i"}],
        },
        "dir": {"class": "Directory", "location": "file:///state/outputs/cd/d"},
        "n": 3,
    }
    printed = {
        "out": {
            "class": "File",
            "location": "file:///o/x.txt",
            "path": "/o/x.txt",
            "secondaryFiles": [{"class": "File", "location": "file:///o/x.txt.i"}],
        },
        "dir": {"class": "Directory", "location": "file:///o/d", "listing": []},
        "n": 3,
    }
    assert sorted(_copies(committed, printed, "/o")) == [
        ("/state/outputs/ab/x.txt", "x.txt"),
        ("/state/outputs/ab/x.txt.i", "x.txt.i"),
        ("/state/outputs/cd/d", "d"),
    ]
    moved = _moved(printed, "/o", "/new")
    assert moved["out"]["path"] == "/new/x.txt"
    assert moved["out"]["secondaryFiles"][0]["location"] == "file:///new/x.txt.i"
    assert moved["n"] == 3
    assert _moved({"path": "/other/x"}, "/o", "/new") == {"path": "/other/x"}


def test_an_output_object_naming_files_outside_the_tools_folder_is_refused(
    tmp_path: Path,
) -> None:
    from dockyard.cwl.staging import confine

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "ok.txt").write_text("x")
    inside = {"class": "File", "location": f"file://{folder}/ok.txt", "basename": "ok.txt"}
    confine({"a": inside, "n": [1, 2]}, folder, given=set())
    given = f"file://{tmp_path}/input.txt"
    confine({"a": {"class": "File", "location": given}}, folder, given={given})  # passed through
    for bad in (
        {"class": "File", "location": f"file://{folder}/../../etc/passwd"},
        {"class": "File", "location": "/etc/passwd"},
        {"class": "Directory", "location": f"file://{tmp_path}"},
        {"class": "File", "location": "http://example.invalid/x"},
        {**inside, "basename": "../escaped.txt"},
        {**inside, "secondaryFiles": [{"class": "File", "location": "file:///etc/shadow"}]},
    ):
        with pytest.raises(PermissionError):
            confine({"out": [bad]}, folder, given=set())


def test_nothing_that_holds_the_state_folder_is_bound(tmp_path: Path) -> None:
    from dockyard.cwl.bridge import Bridge

    state = tmp_path / "project" / ".dockyard"
    (state / "outputs" / "abc").mkdir(parents=True)
    (state / "work").mkdir()
    bridge = Bridge(None, lambda: None, state, tmp_path, lambda d: tmp_path)  # type: ignore[arg-type]
    bridge.check_readable(str(state / "outputs" / "abc"))
    (tmp_path / "project" / "data.txt").write_text("x")
    bridge.check_readable(str(tmp_path / "project" / "data.txt"))
    for bad in (
        state,
        state / "work",
        state / "state.db",
        tmp_path / "project",
        tmp_path,
        Path("/"),
    ):
        with pytest.raises(PermissionError):
            bridge.check_readable(str(bad))
