"""safefs: walks and file operations that never follow a link, even one swapped in late."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.disk import safecopy, safefs


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A folder outside the tree, as a host path a container may point a link to."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_text("host data")
    return outside


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    return root


@pytest.fixture
def root_fd(tree: Path) -> Iterator[int]:
    with safefs.opened(tree) as fd:
        yield fd


def test_walk_lists_links_as_entries_and_never_enters_them(
    tree: Path, host: Path, root_fd: int
) -> None:
    (tree / "sub").mkdir()
    (tree / "sub" / "f").write_text("1")
    os.symlink(host, tree / "sub" / "to-host")
    os.symlink(host, tree / "dir-link")
    seen = {folder.rel: [e.name for e in folder.entries] for folder in safefs.walk(root_fd)}
    assert seen == {(): ["dir-link", "sub"], ("sub",): ["f", "to-host"]}


def test_walk_skips_a_folder_replaced_by_a_link_after_it_was_listed(
    tree: Path, host: Path, root_fd: int
) -> None:
    (tree / "sub").mkdir()
    (tree / "sub" / "f").write_text("1")
    visited = []
    for folder in safefs.walk(root_fd):
        visited.append(folder.rel)
        if folder.rel == ():  # a container swaps it between the listing and the visit
            os.rename(tree / "sub", tree / "moved")
            os.symlink(host, tree / "sub")
    assert visited == [()]


def test_folders_refuse_a_path_through_a_link_or_a_file(
    tree: Path, host: Path, root_fd: int
) -> None:
    os.symlink(host, tree / "link")
    (tree / "file").write_text("x")
    folders = safefs.Folders(root_fd)
    with pytest.raises(OSError) as through_link:
        folders.open(("link",))
    with pytest.raises(OSError) as through_file:
        folders.open(("file",))
    folders.close()
    assert through_link.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert through_file.value.errno == errno.ENOTDIR


def test_open_file_refuses_links_folders_and_fifos_without_blocking(
    tree: Path, host: Path, root_fd: int
) -> None:
    os.symlink(host / "secret", tree / "link")
    (tree / "dir").mkdir()
    os.mkfifo(tree / "fifo")  # a plain open() for reading would wait for a writer forever
    for name in ("link", "dir", "fifo"):
        with pytest.raises(safefs.NotRegular):
            safefs.open_file(root_fd, name)


def test_a_file_swapped_for_a_link_after_listing_is_not_read(
    tree: Path, host: Path, root_fd: int
) -> None:
    (tree / "f").write_text("volume data")
    [entry] = safefs.entries(root_fd)
    (tree / "f").unlink()
    os.symlink(host / "secret", tree / "f")
    assert entry.info.st_size == len("volume data")
    with pytest.raises(safefs.NotRegular):
        safefs.open_file(root_fd, entry.name)


def test_create_file_refuses_a_dangling_link_instead_of_creating_its_target(
    tree: Path, host: Path, root_fd: int
) -> None:
    os.symlink(host / "created", tree / "f")
    with pytest.raises(FileExistsError):
        safefs.create_file(root_fd, "f")
    assert not (host / "created").exists()


def test_remove_takes_a_read_only_tree_and_links_but_not_what_they_point_to(
    tree: Path, host: Path, root_fd: int
) -> None:
    doomed = tree / "doomed"
    (doomed / "a" / "b").mkdir(parents=True)
    (doomed / "a" / "b" / "f").write_text("x")
    os.symlink(host, doomed / "a" / "to-host")
    os.mkfifo(doomed / "fifo")
    os.chmod(doomed / "a" / "b", 0o555)
    os.chmod(doomed / "a", 0o555)
    assert safefs.remove(root_fd, "doomed") is True
    assert not doomed.exists()
    assert (host / "secret").read_text() == "host data"
    assert safefs.remove(root_fd, "doomed") is False  # nothing there is fine


def test_walk_and_remove_handle_trees_deeper_than_python_recursion(
    tree: Path, root_fd: int
) -> None:
    depth = 1100  # beyond the recursion limit, and far beyond the folders kept open
    fd = os.dup(root_fd)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        deeper = safefs.open_dir(fd, "d")
        os.close(fd)
        fd = deeper
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as leaf:
        leaf.write("bottom")
    os.close(fd)
    deepest = max(safefs.walk(root_fd), key=lambda folder: len(folder.rel))
    assert len(deepest.rel) == depth
    assert [e.name for e in deepest.entries] == ["leaf"]
    safefs.remove(root_fd, "d")
    assert list(tree.iterdir()) == []


def test_copy_file_keeps_holes_and_sets_the_permissions_asked_for(
    tree: Path, tmp_path: Path, root_fd: int
) -> None:
    with (tree / "sparse").open("wb") as fh:
        fh.write(b"head")
        fh.seek(32 << 20)
        fh.write(b"tail")
    os.chmod(tree / "sparse", 0o4755)
    target = tmp_path / "copy"
    target.mkdir()
    with safefs.opened(target) as dst:
        safecopy.copy_file(root_fd, "sparse", dst, lambda mode: mode & 0o555)
    copied = target / "sparse"
    assert copied.read_bytes() == (tree / "sparse").read_bytes()
    assert copied.stat().st_blocks * 512 < 1 << 20
    assert copied.stat().st_mode & 0o7777 == 0o555
    assert copied.stat().st_mtime_ns == (tree / "sparse").stat().st_mtime_ns


def test_rmtree_removes_a_tree_holding_a_socket(tmp_path: Path) -> None:
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(doomed / "sock"))
    safefs.rmtree(doomed)
    safefs.rmtree(doomed)  # already gone
    assert not doomed.exists()
