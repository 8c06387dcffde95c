"""send | receive: exact round trips, small increments, and all-or-nothing rejection."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from dockyard.disk.volume_stream import StreamError, receive, send
from dockyard.disk.volumes import VolumeStore
from tests.unit.stream_helpers import Raw, directory, file, framed, gone, header, link


def content(root: Path) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("-> " + os.readlink(path), 0)
        elif path.is_file():
            found[rel] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mode & 0o111,
            )
        else:
            found[rel] = ("dir", 0)
    return found


def stream(store: VolumeStore, name: str, base: str | None = None) -> bytes:
    out = io.BytesIO()
    send(store, name, out, base)
    return out.getvalue()


@pytest.fixture
def sender(tmp_path: Path) -> VolumeStore:
    store = VolumeStore(tmp_path / "a")
    live = store.ensure("ref")
    (live / "genome.fa").write_text(">chr1\nACGT\n" * 1000)
    (live / "index").mkdir()
    (live / "index" / "tool.sh").write_text("#!/bin/sh\n")
    os.chmod(live / "index" / "tool.sh", 0o755)
    os.symlink("genome.fa", live / "current")
    (live / "empty-dir").mkdir()
    with (live / "sparse.img").open("wb") as fh:  # 64 MiB, one byte of data
        fh.seek(64 << 20)
        fh.write(b"x")
    store.snapshot("ref")
    return store


def test_full_round_trip_reproduces_the_volume_exactly(sender: VolumeStore, tmp_path: Path) -> None:
    data = stream(sender, "ref")
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "ref", io.BytesIO(data))
    assert content(receiver.live("ref")) == content(sender.live("ref"))
    sparse = receiver.live("ref") / "sparse.img"
    assert sparse.stat().st_size == (64 << 20) + 1
    assert sparse.stat().st_blocks * 512 < 1 << 20  # still sparse
    assert len(data) < 200_000  # the holes were not sent


def test_increment_carries_only_the_change(sender: VolumeStore, tmp_path: Path) -> None:
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "ref", io.BytesIO(stream(sender, "ref")))
    live = sender.live("ref")
    (live / "new.txt").write_text("n" * 5000)
    (live / "current").unlink()
    sender.snapshot("ref")
    increment = stream(sender, "ref", base="1")
    assert 5000 < len(increment) < 8000
    receive(receiver, "ref", io.BytesIO(increment))
    assert content(receiver.live("ref")) == content(live)


def test_increment_without_its_base_is_refused(sender: VolumeStore, tmp_path: Path) -> None:
    (sender.live("ref") / "more").write_text("more")
    sender.snapshot("ref")
    receiver = VolumeStore(tmp_path / "b")
    with pytest.raises(StreamError, match="does not have"):
        receive(receiver, "ref", io.BytesIO(stream(sender, "ref", base="1")))
    assert not receiver.exists("ref")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_stream_is_rejected_and_nothing_is_applied(
    sender: VolumeStore, tmp_path: Path, damage: str
) -> None:
    data = bytearray(stream(sender, "ref"))
    if damage == "flip":
        where = data.index(b">chr1") + 2
        data[where] ^= 0x20
    else:
        data = data[: len(data) // 2]
    receiver = VolumeStore(tmp_path / "b")
    receiver.ensure("ref")
    (receiver.live("ref") / "mine").write_text("untouched")
    with pytest.raises(StreamError):
        receive(receiver, "ref", io.BytesIO(bytes(data)))
    assert content(receiver.live("ref")) == content_of({"mine": "untouched"}, tmp_path)
    assert receiver.snapshots("ref") == []


def content_of(files: dict[str, str], tmp_path: Path) -> dict[str, tuple[str, int]]:
    root = tmp_path / "expected"
    root.mkdir(exist_ok=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return content(root)


def test_paths_outside_the_volume_are_refused(tmp_path: Path) -> None:
    evil = (
        b"DOCKYARD-VOLUME-STREAM 1\n"
        + b'{"snapshot":"x","base":null}\n'
        + b'L{"path":"../../escape","target":"/etc"}\n'
    )
    with pytest.raises(StreamError, match="outside"):
        receive(VolumeStore(tmp_path / "b"), "v", io.BytesIO(evil))


def test_cli_send_pipes_into_receive(sender: VolumeStore, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "DOCKYARD_HOME": str(tmp_path / "a")}
    sent = subprocess.run(
        [sys.executable, "-m", "dockyard", "volume", "send", "ref"],
        capture_output=True,
        env=env,
        check=True,
    )
    env["DOCKYARD_HOME"] = str(tmp_path / "b")
    received = subprocess.run(
        [sys.executable, "-m", "dockyard", "volume", "receive", "copy"],
        input=sent.stdout,
        capture_output=True,
        env=env,
    )
    assert received.returncode == 0, received.stderr
    assert content(VolumeStore(tmp_path / "b").live("copy")) == content(sender.live("ref"))
    broken = subprocess.run(
        [sys.executable, "-m", "dockyard", "volume", "receive", "other"],
        input=sent.stdout[:-40],
        capture_output=True,
        env=env,
    )
    assert broken.returncode == 2 and b"truncated" in broken.stderr + broken.stdout


# -- hostile and malformed streams ------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Host files beside the data root, which a stream's links may point at."""
    root = tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "victim").write_text("host data")
    (root / "file").write_text("host file")
    return root


def snapshot_of(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` with its content (or link target) and mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_file():
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = "dir"
        found[str(path.relative_to(root))] = (what, info.st_mode, info.st_mtime_ns)
    return found


def escaping_links(outside: Path) -> list[list[Raw]]:
    """Ways to make 'a' lead to ``outside / 'dir'``."""
    return [
        [link("a", str(outside / "dir"))],
        [link("a", "../../../../../../../../../.." + str(outside / "dir"))],
        [link("b", str(outside / "dir")), link("a", "b")],  # a chain of two links
        [
            directory("d"),
            link("d/up", "../../../../../../../../.."),
            link("a", "d/up" + str(outside / "dir")),
        ],
    ]


@pytest.mark.parametrize("through", ["file", "dir", "gone", "link"])
@pytest.mark.parametrize("way", range(4))
@pytest.mark.parametrize("checksum", [True, False])
def test_records_through_a_link_are_refused_and_touch_nothing_outside(
    tmp_path: Path, outside: Path, through: str, way: int, checksum: bool
) -> None:
    after = {
        "file": file("a/victim", b"overwritten"),
        "dir": directory("a/new"),
        "gone": gone("a/victim"),
        "link": link("a/new-link", "/etc/passwd"),
    }[through]
    home = tmp_path / "home"
    before = snapshot_of(outside)
    data = framed(header(), [*escaping_links(outside)[way], after], checksum=checksum)
    with pytest.raises(StreamError):
        receive(VolumeStore(home), "v", io.BytesIO(data))
    assert snapshot_of(outside) == before
    assert not VolumeStore(home).folder("v").exists()
    assert list(VolumeStore(home).root.iterdir()) == []  # no scratch left either


@pytest.mark.parametrize(
    "path", [".", "", "/etc/x", "../x", "a/../b", "a/./b", "./a", "a//b", "a/", "a\0b", "/"]
)
@pytest.mark.parametrize("kind", ["file", "dir", "gone", "link"])
def test_records_for_paths_that_are_not_plain_relative_paths_are_refused(
    tmp_path: Path, path: str, kind: str
) -> None:
    record = {
        "file": file(path),
        "dir": directory(path),
        "gone": gone(path),
        "link": link(path, "target"),
    }[kind]
    with pytest.raises(StreamError, match="path"):
        receive(VolumeStore(tmp_path), "v", io.BytesIO(framed(header(), [record])))
    assert not VolumeStore(tmp_path).folder("v").exists()


def _fields(record: Raw, **changes: object) -> Raw:
    kind, fields, rest = record
    assert isinstance(fields, dict)
    return kind, {**fields, **changes}, rest


MALFORMED: dict[str, bytes] = {
    "header is a list": framed(["x"], []),
    "header without snapshot": framed({"base": None}, []),
    "header snapshot is a number": framed({"snapshot": 5}, []),
    "header tag with markup": framed(header(tag="[bold]x"), []),
    "header volume outside the rule": framed(header(volume="../x"), []),
    "record is a list": framed(header(), [(b"D", ["a"], b"")]),
    "record without mode": framed(header(), [(b"D", {"path": "a", "mtime_ns": 0}, b"")]),
    "mode as a string": framed(header(), [_fields(directory("a"), mode="755")]),
    "mode out of range": framed(header(), [_fields(directory("a"), mode=0o10000)]),
    "mode as a bool": framed(header(), [_fields(directory("a"), mode=True)]),
    "unknown field": framed(header(), [_fields(directory("a"), owner=0)]),
    "negative extent": framed(header(), [_fields(file("a"), extents=[[-1, 2]])]),
    "extent past the size": framed(header(), [_fields(file("a", b"xy"), extents=[[1, 2]])]),
    "overlapping extents": framed(
        header(), [_fields(file("a", b"xyz"), size=3, extents=[[0, 2], [1, 1]])]
    ),
    "extent with three numbers": framed(header(), [_fields(file("a"), extents=[[0, 1, 2]])]),
    "huge size": framed(header(), [_fields(file("a"), size=1 << 62)]),
    "huge mtime": framed(header(), [_fields(file("a"), mtime_ns=1 << 70)]),
    "path under a file": framed(header(), [file("f"), file("f/x")]),
    "path before its folder": framed(header(), [file("no/such/folder")]),
    "NUL in a link target": framed(header(), [link("a", "x\0y")]),
    "empty link target": framed(header(), [link("a", "")]),
    "unknown record type": framed(header(), [(b"Q", {"path": "a"}, b"")]),
    "deeply nested JSON": framed(header(), [(b"D", [[[[[]]]]], b"")]).replace(
        b"[[[[[]]]]]", b"[" * 100_000 + b"]" * 100_000
    ),
    "a number too long to read": framed(header(), [_fields(directory("a"), mode=0)]).replace(
        b'"mode": 0', b'"mode": ' + b"9" * 5000
    ),
    "data after the end": framed(header(), []) + b"more",
    "end record is a list": framed(header(), []).rsplit(b"E", 1)[0] + b"E[]\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_streams_are_refused_with_a_stream_error(tmp_path: Path, case: str) -> None:
    with pytest.raises(StreamError, match="nothing was applied"):
        receive(VolumeStore(tmp_path), "v", io.BytesIO(MALFORMED[case]))
    assert not VolumeStore(tmp_path).folder("v").exists()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_streams_exit_2_from_the_cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    from dockyard.cli import main

    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(MALFORMED[case])))
    assert main(["volume", "receive", "v"]) == 2
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("data", [os.urandom(64), b"\x00" * 10, b"DOCKYARD", b"", b"hello\n"])
def test_random_bytes_are_not_a_volume_stream(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(StreamError, match="not a dockyard volume stream"):
        receive(VolumeStore(tmp_path), "v", io.BytesIO(data))


def test_received_modes_keep_only_permission_bits(tmp_path: Path) -> None:
    data = framed(
        header(), [directory("shared", 0o7777), file("shared/tool", b"#!/bin/sh\n", 0o6755)]
    )
    store = VolumeStore(tmp_path)
    snap = receive(store, "v", io.BytesIO(data))
    for root in (store.tree("v", snap), store.live("v")):
        assert (root / "shared").stat().st_mode & 0o7000 == 0
        assert (root / "shared" / "tool").stat().st_mode & 0o7000 == 0
    assert (store.live("v") / "shared" / "tool").stat().st_mode & 0o777 == 0o755


def test_a_refused_stream_leaves_the_existing_volume_as_it_was(
    sender: VolumeStore, tmp_path: Path, outside: Path
) -> None:
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "ref", io.BytesIO(stream(sender, "ref")))
    live_before, snaps_before = snapshot_of(receiver.live("ref")), receiver.snapshots("ref")
    bad = framed(header(), [link("current", str(outside / "dir")), file("current/x")])
    with pytest.raises(StreamError, match="goes through a symbolic link"):
        receive(receiver, "ref", io.BytesIO(bad))
    assert snapshot_of(receiver.live("ref")) == live_before
    assert receiver.snapshots("ref") == snaps_before
    assert sorted(p.name for p in receiver.root.iterdir()) == ["ref"]


def test_an_increment_that_replaces_a_folder_with_a_link_round_trips(
    sender: VolumeStore, tmp_path: Path
) -> None:
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "ref", io.BytesIO(stream(sender, "ref")))
    live = sender.live("ref")
    (live / "index" / "tool.sh").unlink()
    (live / "index").rmdir()
    os.symlink("/somewhere/else", live / "index")
    sender.snapshot("ref")
    receive(receiver, "ref", io.BytesIO(stream(sender, "ref", base="1")))
    assert content(receiver.live("ref")) == content(live)
    assert receiver.snapshots("ref")[-1].files == sender.snapshots("ref")[-1].files


def test_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "a")
    live = store.ensure("v")
    odd = os.fsdecode(b"caf\xe9\xff")
    (live / odd).write_text("latin-1 name")
    store.snapshot("v")
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "v", io.BytesIO(stream(store, "v")))
    assert (receiver.live("v") / odd).read_text() == "latin-1 name"


@pytest.mark.parametrize("asked", ["another-volume", "another-snapshot"])
def test_a_stream_other_than_the_one_asked_for_is_refused_before_anything_is_applied(
    asked: str, sender: VolumeStore, tmp_path: Path
) -> None:
    """A peer asked for one snapshot of one volume cannot have another adopted instead."""
    data = stream(sender, "ref")
    uuid = sender.snapshots("ref")[-1].uuid
    receiver = VolumeStore(tmp_path / "b")
    name, expect = ("other", uuid) if asked == "another-volume" else ("ref", "0" * 32)
    with pytest.raises(StreamError, match="asked for snapshot"):
        receive(receiver, name, io.BytesIO(data), expect=expect)
    assert not receiver.exists(name)
    receive(receiver, "ref", io.BytesIO(data), expect=uuid)  # the one asked for is taken
    assert content(receiver.live("ref")) == content(sender.live("ref"))
