"""Named volumes on the real engine: state that outlives a run (issue 4, first part)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.disk.volumes import VolumeStore
from tests.conftest import BUSYBOX_IMAGE, committed_output

pytestmark = pytest.mark.docker


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "dockyard-home"
    monkeypatch.setenv("DOCKYARD_HOME", str(root))
    return root


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dockyard.yaml").write_text(text)
    return folder / "dockyard.yaml"


def make_step(folder: Path, name: str, command: str) -> Path:
    """A pipeline of one step, ``make``, on the test image: ``command`` is its YAML value."""
    text = f'version: 1\nname: {name}\nsteps:\n  make:\n    image: "{BUSYBOX_IMAGE}"\n'
    return write(folder, f"{text}    command: {command}\n")


def test_lookup_table_in_a_volume_serves_later_steps_and_other_pipelines(
    home: Path,
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    builder = write(
        tmp_path / "build",
        f"""
version: 1
name: {pipeline_name}
defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 32m}}}}
volumes:
  lookup: {{}}
steps:
  build-table:
    volumes: {{lookup: /table}}
    cache: true        # its result depends only on what the key covers
    command: >-
      printf 'a\\tadenine\\nc\\tcytosine\\n' > /table/bases.tsv;
      echo built > /out/done
  use-table:
    needs: [build-table]
    volumes: {{lookup: {{path: /table, readonly: true}}}}
    command: "grep ^c /table/bases.tsv > /out/hit; echo x >> /table/bases.tsv || true"
""",
    )
    assert main(["run", "-f", str(builder)]) == 0, capsys.readouterr()
    assert (committed_output(builder, "use-table", capsys) / "hit").read_text() == "c\tcytosine\n"
    live = VolumeStore(home).live("lookup")
    assert (live / "bases.tsv").read_text() == "a\tadenine\nc\tcytosine\n"  # read-only held

    # Another pipeline, elsewhere, reads the same table afterwards.
    reader = write(
        tmp_path / "elsewhere",
        f"""
version: 1
name: {pipeline_name}-reader
volumes:
  lookup: {{}}
steps:
  lookup:
    image: "{BUSYBOX_IMAGE}"
    volumes: {{lookup: {{path: /ref, readonly: true}}}}
    command: "wc -l < /ref/bases.tsv > /out/n"
""",
    )
    assert main(["run", "-f", str(reader)]) == 0
    assert (committed_output(reader, "lookup", capsys) / "n").read_text().strip() == "2"

    # A rerun skips the build (cache: true, inputs unchanged) and snapshots the volume.
    assert main(["run", "-f", str(builder)]) == 0
    capsys.readouterr()
    assert main(["status", "-f", str(builder), "--json"]) == 0
    rows = {i["instance"]: i for i in json.loads(capsys.readouterr().out)["instances"]}
    assert rows["build-table"]["cached"]
    assert len(VolumeStore(home).snapshots("lookup")) == 4  # before and after each writing run


def test_second_writer_of_a_volume_is_refused_while_the_first_holds_it(
    home: Path,
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(
        tmp_path / "p",
        f"""
version: 1
name: {pipeline_name}
volumes:
  shared: {{}}
steps:
  write: {{image: "{BUSYBOX_IMAGE}", volumes: {{shared: /s}}, command: "echo 1 >> /s/log"}}
""",
    )
    store = VolumeStore(home)
    store.ensure("shared")
    with store.lock("shared", exclusive=False):  # someone else is reading it
        assert main(["run", "-f", str(path)]) == 2
    output = capsys.readouterr().err
    assert "volume 'shared' is in use" in " ".join(output.split())
    assert (
        not (path.parent / ".dockyard" / "state.db").exists()
        or main(["status", "-f", str(path)]) == 2
    )  # the refused run left no record
    assert main(["run", "-f", str(path)]) == 0
    assert (store.live("shared") / "log").read_text() == "1\n"


def test_volume_commands_snapshot_and_roll_back(
    home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = VolumeStore(home)
    live = store.ensure("db")
    (live / "rows").write_text("1\n")
    assert main(["volume", "snapshot", "db", "--tag", "good"]) == 0
    (live / "rows").write_text("1\n2\nbroken\n")
    assert main(["volume", "rollback", "db", "good"]) == 0
    assert (live / "rows").read_text() == "1\n"
    capsys.readouterr()
    assert main(["volume", "inspect", "db"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["snapshots"][0]["tag"] == "good"
    assert main(["volume", "rm", "db"]) == 0
    assert main(["volume", "inspect", "db"]) == 2


def test_rollback_after_a_step_swapped_a_folder_for_a_link_to_the_host_leaves_the_host_alone(
    home: Path,
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host_target = tmp_path / "host-target"  # exists on the host only: the container sees none
    host_target.mkdir()
    (host_target / "data.txt").write_text("host data")
    before = {p.name: p.read_bytes() for p in host_target.iterdir()}
    store = VolumeStore(home)
    live = store.ensure("db")
    (live / "sub").mkdir()
    (live / "sub" / "data.txt").write_text("volume data")
    path = write(
        tmp_path / "p",
        f"""
version: 1
name: {pipeline_name}
volumes:
  db: {{}}
steps:
  swap:
    image: "{BUSYBOX_IMAGE}"
    volumes: {{db: /vol}}
    command: "rm -rf /vol/sub && ln -s {host_target} /vol/sub && echo done > /out/done"
""",
    )
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    assert (live / "sub").is_symlink()  # what the step left; snapshot 1 is from before it
    assert main(["volume", "rollback", "db", "1"]) == 0, capsys.readouterr()
    assert {p.name: p.read_bytes() for p in host_target.iterdir()} == before
    assert not (live / "sub").is_symlink()
    assert (live / "sub" / "data.txt").read_text() == "volume data"


def test_a_committed_output_keeps_no_set_uid_bit_or_special_file_and_its_log_says_so(
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_step(
        tmp_path / "p",
        pipeline_name,
        """>-
      echo '#!/bin/sh' > /out/tool && chmod 4755 /out/tool && mkfifo /out/pipe &&
      (mknod /out/null c 1 3 || true) && echo 42 > /out/result""",
    )
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    output = committed_output(path, "make", capsys)
    assert sorted(p.name for p in output.iterdir()) == ["result", "tool"]
    assert (output / "tool").stat().st_mode & 0o7777 == 0o555
    assert main(["logs", "-f", str(path), "make"]) == 0
    log = capsys.readouterr().out
    assert "removed the set-uid bit of 'tool'" in log
    assert "dropped 'pipe' (a FIFO is not data)" in log


def test_a_committed_output_belongs_to_root_whatever_owner_the_step_gave_it(
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A step that chowns its /out to a uid must not leave that local user the means to
    make a committed output writable (``chmod u+w``) and rewrite what later steps read."""
    path = make_step(
        tmp_path / "p",
        pipeline_name,
        """>-
      sh -c 'echo data > /out/f && mkdir /out/d && echo more > /out/d/g && chmod 600 /out/f
      && chown -R 1000:1000 /out/f /out/d'""",
    )
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    output = committed_output(path, "make", capsys)
    for entry in (output, output / "f", output / "d", output / "d" / "g"):
        info = entry.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0), entry
        assert not info.st_mode & 0o222, entry
    assert (output / "f").stat().st_mode & 0o777 == 0o444  # readable by a consumer of any uid


def test_a_sparse_output_is_committed_without_reading_or_filling_its_holes(
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """256 GiB of hole cost the step nothing; sealing and hashing it must not read it."""
    path = make_step(
        tmp_path / "p", pipeline_name, "\"sh -c 'truncate -s 256G /out/z && echo end >> /out/z'\""
    )
    assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
    kept = committed_output(path, "make", capsys) / "z"
    assert kept.stat().st_size == (256 << 30) + 4
    assert kept.stat().st_blocks * 512 < 1 << 20


def test_an_output_nested_past_the_limit_fails_with_a_message_and_is_not_kept(
    tmp_path: Path,
    pipeline_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_step(
        tmp_path / "p",
        pipeline_name,
        "\"sh -c 'p=/out; for i in $(seq 1001); do p=$p/d; done; mkdir -p $p'\"",
    )
    assert main(["run", "-f", str(path)]) == 1
    capsys.readouterr()
    main(["status", "-f", str(path), "--json"])
    assert "more than 1,000 deep" in capsys.readouterr().out
    assert not list((path.parent / ".dockyard" / "outputs").glob("*"))
    assert not list((path.parent / ".dockyard" / "work").glob("*/*"))
