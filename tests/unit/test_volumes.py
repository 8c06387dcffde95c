"""Named volumes on the host: seeding, snapshots, rollback, locking (no Docker)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dockyard.errors import UnknownReference
from dockyard.volumes import VolumeInUse, VolumeStore


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(tmp_path / "home")


def test_volume_is_created_once_and_seeded_once(store: VolumeStore, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "table.tsv").write_text("a\t1\n")
    live = store.ensure("cache", seed)
    assert (live / "table.tsv").read_text() == "a\t1\n"
    (live / "table.tsv").write_text("changed\n")
    store.ensure("cache", seed)
    assert (live / "table.tsv").read_text() == "changed\n"
    assert [v.name for v in store.all()] == ["cache"]


def test_rollback_restores_the_exact_previous_content(store: VolumeStore) -> None:
    live = store.ensure("db")
    (live / "keep.txt").write_text("keep")
    (live / "sub").mkdir()
    (live / "sub" / "edit.txt").write_text("before")
    os.symlink("keep.txt", live / "link")
    before = checksums(live)
    snap = store.snapshot("db", tag="clean")
    (live / "sub" / "edit.txt").write_text("after, longer")
    (live / "new.txt").write_text("added")
    (live / "keep.txt").unlink()
    store.rollback("db", store.find("db", "clean"))
    assert checksums(live) == before
    assert os.readlink(live / "link") == "keep.txt"
    assert snap.id == 1


def test_unchanged_files_are_linked_not_copied(store: VolumeStore) -> None:
    live = store.ensure("big")
    (live / "large.bin").write_bytes(os.urandom(1 << 20))
    (live / "small.txt").write_text("v1")
    first = store.snapshot("big")
    (live / "small.txt").write_text("v2")
    second = store.snapshot("big")
    assert first.copied_bytes == (1 << 20) + 2
    assert second.copied_bytes == 2  # only the changed file
    one, two = store.tree("big", first), store.tree("big", second)
    assert (one / "large.bin").stat().st_ino == (two / "large.bin").stat().st_ino
    assert (two / "small.txt").read_text() == "v2" and (one / "small.txt").read_text() == "v1"


def test_writes_to_the_live_volume_never_reach_a_snapshot(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "f").write_text("original")
    snap = store.snapshot("v")
    with (live / "f").open("r+") as fh:  # in place, as a database would
        fh.write("CHANGED!")
    assert (store.tree("v", snap) / "f").read_text() == "original"


def test_a_volume_in_use_cannot_be_removed_or_taken(store: VolumeStore) -> None:
    store.ensure("busy")
    with store.lock("busy", exclusive=False):
        with pytest.raises(VolumeInUse, match="busy"):
            store.remove("busy")
        with pytest.raises(VolumeInUse), store.lock("busy", exclusive=True):
            pass
        with store.lock("busy", exclusive=False):  # readers share
            pass
    store.remove("busy")
    assert store.all() == []


def test_unknown_volume_or_snapshot_is_a_clear_error(store: VolumeStore) -> None:
    with pytest.raises(UnknownReference, match="no volume"):
        store.inspect("nope")
    store.ensure("v")
    with pytest.raises(UnknownReference, match="no snapshot"):
        store.find("v", "7")
