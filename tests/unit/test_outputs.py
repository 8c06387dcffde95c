from __future__ import annotations

import os
from pathlib import Path

from dockyard.outputs import commit, discard, tree_digest


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_digest_depends_on_content_not_on_location(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one", {"a.txt": "A", "sub/b.txt": "B"})
    two = make_tree(tmp_path / "two", {"sub/b.txt": "B", "a.txt": "A"})
    assert tree_digest(one) == tree_digest(two)


def test_digest_changes_with_content_names_and_exec_bit(tmp_path: Path) -> None:
    base = tree_digest(make_tree(tmp_path / "base", {"a": "1"}))[0]
    assert tree_digest(make_tree(tmp_path / "content", {"a": "2"}))[0] != base
    assert tree_digest(make_tree(tmp_path / "name", {"b": "1"}))[0] != base
    exe = make_tree(tmp_path / "exe", {"a": "1"})
    os.chmod(exe / "a", 0o755)
    assert tree_digest(exe)[0] != base


def test_commit_moves_the_tree_into_place_read_only(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "work" / "out", {"result.txt": "42"})
    committed = commit(staging, tmp_path / "outputs")
    assert not staging.exists()
    assert committed.path == tmp_path / "outputs" / committed.digest
    assert (committed.path / "result.txt").read_text() == "42"
    assert not os.stat(committed.path / "result.txt").st_mode & 0o222
    assert (committed.size, committed.files) == (2, 1)


def test_identical_output_is_stored_once(tmp_path: Path) -> None:
    first = commit(make_tree(tmp_path / "w1", {"x": "same"}), tmp_path / "outputs")
    second = commit(make_tree(tmp_path / "w2", {"x": "same"}), tmp_path / "outputs")
    assert first.path == second.path
    assert len(list((tmp_path / "outputs").iterdir())) == 1


def test_discard_removes_read_only_trees(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", {"d/x": "1"})
    os.chmod(tree / "d", 0o555)
    discard(tree)
    assert not tree.exists()
