"""A tree made durable: every file and folder in it, and the folder that holds it, get an
fsync; links are not followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.disk import durable


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inodes fsync is called on, in order."""
    inodes: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        inodes.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return inodes


def test_every_file_and_folder_of_a_tree_and_its_parent_are_synced(
    tmp_path: Path, synced: list[int]
) -> None:
    tree = tmp_path / "snapshot"
    (tree / "delta").mkdir(parents=True)
    (tree / "meta.json").write_text("{}")
    (tree / "delta" / "0").write_bytes(b"data")
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    (tree / "link").symlink_to(outside)
    durable.sync_tree(tree)
    expected = {
        p.stat().st_ino for p in (tree, tree / "delta", tree / "meta.json", tree / "delta" / "0")
    }
    assert expected | {tmp_path.stat().st_ino} == set(synced)
    assert outside.stat().st_ino not in synced  # (a link is not followed)


def test_a_flat_folder_is_synced_with_its_named_sub_folders_one_level_deep(
    tmp_path: Path, synced: list[int]
) -> None:
    snap = tmp_path / "7"
    (snap / "delta" / "deeper").mkdir(parents=True)
    (snap / "changes.json").write_text("{}")
    (snap / "delta" / "0").write_bytes(b"data")
    (snap / "delta" / "deeper" / "x").write_bytes(b"not a delta file")
    durable.sync_flat(snap, ("delta",))
    expected = {p.stat().st_ino for p in (snap, snap / "delta", snap / "changes.json")}
    assert expected | {(snap / "delta" / "0").stat().st_ino, tmp_path.stat().st_ino} == set(synced)


def test_a_record_of_a_clean_live_folder_or_an_index_from_another_boot_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.agent.volume_records import Records
    from dockyard.disk import live_index
    from dockyard.disk.volumes import VolumeStore

    store = VolumeStore(tmp_path / "volumes")
    store.ensure("v")
    records = Records(store)
    records.save("v", {"epoch": 1, "mounts": [], "clean": "s1"})
    index = live_index.LiveIndex("s1", {"f": ("f", 1, 2, 3, 4, 0o644)})
    live_index.save(tmp_path / "live.index", index)
    assert records.state("v")["clean"] == "s1"
    assert live_index.load(tmp_path / "live.index") is not None
    monkeypatch.setattr(durable, "BOOT", "another-start")  # (the machine started again)
    assert records.state("v")["clean"] is None
    assert live_index.load(tmp_path / "live.index") is None


def test_a_snapshot_is_synced_with_the_parents_it_is_kept_as_changes_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.disk.volumes import SYNCED, VolumeStore

    store = VolumeStore(tmp_path / "volumes")
    store.ensure("v")
    (store.live("v") / "f").write_text("1")
    first = store.snapshot("v")  # (a tree)
    (store.live("v") / "f").write_text("22")
    second = store.snapshot("v", defer=True, quiet=True)  # (its changes)
    (store.live("v") / "g").write_text("3")
    third = store.snapshot("v", defer=True, quiet=True)
    synced: list[str] = []
    monkeypatch.setattr(durable, "sync_tree", lambda path: synced.append(f"tree {path.name}"))
    monkeypatch.setattr(durable, "sync_flat", lambda path, _: synced.append(f"flat {path.name}"))
    store.sync("v", third)
    assert synced == [f"flat {third.id}", f"flat {second.id}", f"tree {first.id}"]
    assert all((store.snapshot_folder("v", s) / SYNCED).exists() for s in (first, second, third))
    synced.clear()
    store.sync("v", third)
    assert synced == []  # (each once)
