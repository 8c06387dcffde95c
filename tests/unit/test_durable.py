"""A tree made durable: every file and folder in it, and the folder that holds it, get an
fsync; links are not followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.disk import durable


def test_every_file_and_folder_of_a_tree_and_its_parent_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "snapshot"
    (tree / "delta").mkdir(parents=True)
    (tree / "meta.json").write_text("{}")
    (tree / "delta" / "0").write_bytes(b"data")
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    (tree / "link").symlink_to(outside)
    synced: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    durable.sync_tree(tree)
    expected = {
        p.stat().st_ino for p in (tree, tree / "delta", tree / "meta.json", tree / "delta" / "0")
    }
    assert expected | {tmp_path.stat().st_ino} == set(synced)
    assert outside.stat().st_ino not in synced  # (a link is not followed)


def test_a_flat_folder_is_synced_with_its_named_sub_folders_one_level_deep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = tmp_path / "7"
    (snap / "delta" / "deeper").mkdir(parents=True)
    (snap / "changes.json").write_text("{}")
    (snap / "delta" / "0").write_bytes(b"data")
    (snap / "delta" / "deeper" / "x").write_bytes(b"not a delta file")
    synced: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    durable.sync_flat(snap, ("delta",))
    expected = {p.stat().st_ino for p in (snap, snap / "delta", snap / "changes.json")}
    assert expected | {(snap / "delta" / "0").stat().st_ino, tmp_path.stat().st_ino} == set(synced)
