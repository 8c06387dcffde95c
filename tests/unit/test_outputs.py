from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.disk import keeping
from dockyard.disk.sealing import discard, note_changes, seal_tree, tree_digest


@dataclass(frozen=True)
class Committed:
    digest: str
    path: Path
    size: int
    files: int
    changes: tuple[str, ...]


def commit(staging: Path, outputs_dir: Path) -> Committed:
    """Seal and keep, as every output store does (:func:`keeping.keep`)."""
    sealed = seal_tree(staging)
    path = keeping.keep(staging, sealed, outputs_dir)
    assert keeping.read_record(outputs_dir, sealed.digest) == keeping.Bounds.of(sealed)
    return Committed(sealed.digest, path, sealed.size, sealed.files, sealed.changes)


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


def test_digest_of_a_known_tree_is_what_it_always_was(tmp_path: Path) -> None:
    """Committed outputs are addressed by this digest: the same tree keeps its address."""
    tree = make_tree(tmp_path / "t", {"a.txt": "A", "sub/b.txt": "B", "sub/deeper/c": "C"})
    os.chmod(tree / "sub" / "b.txt", 0o755)
    os.symlink("../a.txt", tree / "sub" / "link")
    os.symlink("sub", tree / "dir-link")
    (tree / "empty").mkdir()
    for path in (tree / "a.txt", tree / "sub" / "deeper" / "c"):
        os.chmod(path, 0o644)  # (whatever the umask)
    for path in (tree, tree / "sub", tree / "sub" / "deeper", tree / "empty"):
        os.chmod(path, 0o755)
    assert tree_digest(tree) == (
        # (changed twice: files are hashed by chunks, see dockyard.disk.content_digest;
        # permission bits count, less writing, as a kept copy keeps them)
        "700dc325a8cb6a1ae6cd6871315da2ff17b29a017c81912bd1466be020235b04",
        3,
        3,
    )


def test_commit_removes_set_uid_set_gid_and_sticky_bits_and_says_so(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "work" / "out", {"tool": "#!/bin/sh\n", "sub/lib": "x"})
    os.chmod(staging / "tool", 0o6755)
    os.chmod(staging / "sub", 0o1777)
    committed = commit(staging, tmp_path / "outputs")
    assert stat.S_IMODE((committed.path / "tool").stat().st_mode) == 0o555
    assert stat.S_IMODE((committed.path / "sub").stat().st_mode) == 0o555
    assert sorted(committed.changes) == [
        "removed the set-uid and set-gid bits of 'tool'",
        "removed the sticky bit of 'sub'",
    ]


def test_commit_drops_fifos_sockets_and_device_nodes_and_says_so(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "work" / "out", {"result.txt": "42"})
    os.mkfifo(staging / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(staging / "sock"))
    os.mknod(staging / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # needs root
    committed = commit(staging, tmp_path / "outputs")
    assert sorted(p.name for p in committed.path.iterdir()) == ["result.txt"]
    assert committed.changes == (
        "dropped 'null' (a character device is not data)",
        "dropped 'pipe' (a FIFO is not data)",
        "dropped 'sock' (a socket is not data)",
    )
    assert (
        committed.digest
        == commit(make_tree(tmp_path / "plain", {"result.txt": "42"}), tmp_path / "outputs").digest
    )


def test_commit_removes_file_capabilities(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "work" / "out", {"tool": "#!/bin/sh\n"})
    # `setcap cap_setuid+ep tool`: revision 2, effective, permitted CAP_SETUID (7)
    os.setxattr(
        staging / "tool", "security.capability", struct.pack("<5I", 0x02000001, 1 << 7, 0, 0, 0)
    )
    committed = commit(staging, tmp_path / "outputs")
    assert "security.capability" not in os.listxattr(committed.path / "tool")
    assert committed.changes == ("removed the file capabilities of 'tool'",)


def test_commit_never_changes_what_a_link_in_the_output_points_to(tmp_path: Path) -> None:
    host = make_tree(tmp_path / "host", {"data": "host data"})
    os.chmod(host / "data", 0o4755)
    staging = make_tree(tmp_path / "work" / "out", {"x": "1"})
    os.symlink(host / "data", staging / "file-link")
    os.symlink(host, staging / "dir-link")
    committed = commit(staging, tmp_path / "outputs")
    assert stat.S_IMODE((host / "data").stat().st_mode) == 0o4755
    assert stat.S_IMODE(host.stat().st_mode) & 0o200
    assert os.readlink(committed.path / "dir-link") == str(host)
    assert committed.changes == ()


def test_what_commit_changed_is_appended_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step.1.log"
    log.parent.mkdir()
    log.write_text("the step's own output\n")
    note_changes(log, ["dropped 'pipe' (a FIFO is not data)"])
    note_changes(log, [])
    assert log.read_text() == (
        "the step's own output\ndockyard: committed /out: dropped 'pipe' (a FIFO is not data)\n"
    )


def test_a_very_long_list_of_changes_is_cut_short(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "work" / "out", {"x": "1"})
    for n in range(30):
        os.mkfifo(staging / f"pipe-{n:02d}")
    changes = commit(staging, tmp_path / "outputs").changes
    assert len(changes) == 21 and changes[-1] == "and 10 more"


def test_names_with_line_breaks_are_dropped_so_that_digests_stay_one_to_one(
    tmp_path: Path,
) -> None:
    """A link to "t\\nD zz" would otherwise hash like a link to "t" beside a folder "zz"."""
    crafted, plain = tmp_path / "crafted", tmp_path / "plain"
    for root in (crafted, plain):
        root.mkdir()
        (root / "keep").write_text("1")
    os.symlink("t\nD zz", crafted / "r")
    os.symlink("t", plain / "r")
    (plain / "zz").mkdir()
    sealed = seal_tree(crafted)
    assert sealed.digest != seal_tree(plain).digest
    assert sorted(os.listdir(crafted)) == ["keep"]
    (crafted / "a\nb").mkdir(mode=0o755)
    (crafted / "a\nb" / "inner").write_text("x")
    assert seal_tree(crafted).digest == sealed.digest
    assert sorted(os.listdir(crafted)) == ["keep"]
    assert any("line break" in change for change in sealed.changes)


def _as_user(uid: int, action: str, path: Path) -> int:
    """Try ``action`` on ``path`` as ``uid`` in a child process; the errno it met, or 0."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if action == "chmod":
                os.chmod(path, 0o666)
            elif action == "write":
                os.open(path, os.O_WRONLY)
            else:
                os.open(path, os.O_RDONLY)
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="sealing changes owners only as root")
def test_a_sealed_output_belongs_to_root_and_its_step_uid_cannot_make_it_writable() -> None:
    """A step that chowns /out to a uid must not leave that local user able to rewrite a
    committed output that later steps read."""
    tmp_path = Path(tempfile.mkdtemp(prefix="dockyard-owner-"))  # (pytest's is 0700)
    tmp_path.chmod(0o755)
    try:
        _check_sealed_ownership(tmp_path)
    finally:
        discard(tmp_path)


def _check_sealed_ownership(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "w", {"f": "data", "d/g": "more"})
    os.chmod(staging / "f", 0o600)  # (as mkstemp makes files)
    for path in (staging / "f", staging / "d", staging / "d" / "g"):
        os.chown(path, 1000, 1000)
    committed = commit(staging, tmp_path / "outputs")
    for rel in ("f", "d", "d/g"):
        info = os.lstat(committed.path / rel)
        assert (info.st_uid, info.st_gid) == (0, 0), rel
        assert not info.st_mode & 0o222, rel
    assert _as_user(1000, "chmod", committed.path / "f") == errno.EPERM
    assert _as_user(1000, "chmod", committed.path / "d") == errno.EPERM
    assert _as_user(1000, "write", committed.path / "d" / "g") == errno.EACCES
    assert _as_user(1000, "read", committed.path / "f") == 0  # still its data to read
