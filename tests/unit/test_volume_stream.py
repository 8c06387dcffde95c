"""send | receive: exact round trips, small increments, and all-or-nothing rejection."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from dockyard.volume_stream import StreamError, receive, send
from dockyard.volumes import VolumeStore


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
