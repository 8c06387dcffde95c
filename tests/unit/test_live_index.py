"""Snapshots by what changed: the live folder's index, snapshots kept as their changes, and
increments sent and applied from those changes (real files, no Docker)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from dockyard.disk import live_index, safefs, snapshot_delta
from dockyard.disk.live_index import LiveIndex
from dockyard.disk.volume_stream import StreamError, receive, send
from dockyard.disk.volume_stream.format import DirRecord, FileRecord, Header, LinkRecord, Writer
from dockyard.disk.volumes import Snapshot, VolumeStore


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(tmp_path / "home")


def content(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a file's bytes, a link's target, a folder's mode."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", path.stat().st_mode & 0o777)
        else:
            found[rel] = path.read_bytes()
    return found


def scan(path: Path) -> LiveIndex:
    with safefs.opened(path) as fd:
        return live_index.scan(fd, live_index.marker(path.parent))


def test_a_same_size_rewrite_with_its_old_mtime_is_a_change(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "table").write_bytes(b"old rows")
    first = store.snapshot("v")
    info = os.stat(live / "table")
    (live / "table").write_bytes(b"new rows")  # same size ...
    os.utime(live / "table", ns=(info.st_atime_ns, info.st_mtime_ns))  # ... same mtime (cp -p)
    second = store.snapshot("v")
    assert (store.tree("v", second) / "table").read_bytes() == b"new rows"
    assert (store.tree("v", first) / "table").read_bytes() == b"old rows"


def test_the_changes_found_are_what_differs_and_only_that(tmp_path: Path) -> None:
    live = tmp_path / "v" / "live"
    (live / "keep").mkdir(parents=True)
    (live / "keep" / "same").write_text("same")
    (live / "keep" / "edit").write_text("v1")
    (live / "gone-tree" / "deep").mkdir(parents=True)
    (live / "gone-tree" / "deep" / "f").write_text("x")
    (live / "becomes-file").mkdir()
    (live / "becomes-file" / "child").write_text("x")
    (live / "becomes-dir").write_text("x")
    (live / "ln").symlink_to("keep/same")
    (live / "mode").mkdir(mode=0o755)
    before = scan(live)
    before.racy.clear()
    (live / "keep" / "edit").write_text("v2")
    (live / "keep" / "new").write_text("n")
    for path in ("gone-tree/deep/f", "becomes-file/child"):
        (live / path).unlink()
    for path in ("gone-tree/deep", "gone-tree", "becomes-file"):
        (live / path).rmdir()
    (live / "becomes-file").write_text("now a file")
    (live / "becomes-dir").unlink()
    (live / "becomes-dir").mkdir()
    (live / "ln").unlink()
    (live / "ln").symlink_to("keep/edit")
    os.chmod(live / "mode", 0o700)
    found = sorted(live_index.changes(before, scan(live)))
    assert found == sorted(
        [
            ("F", "keep/edit", 0o644),
            ("F", "keep/new", 0o644),
            ("F", "becomes-file", 0o644),
            ("D", "becomes-dir", 0o755),
            ("L", "ln", 0o777),
            ("D", "mode", 0o700),
            ("X", "gone-tree", 0),  # (its contents go with it)
        ]
    )


def test_a_racy_entry_is_never_trusted(tmp_path: Path) -> None:
    live = tmp_path / "v" / "live"
    live.mkdir(parents=True)
    (live / "f").write_text("x")
    with safefs.opened(live) as fd:
        index = live_index.scan(fd, since=0)  # every entry changed "after" the walk began
    assert index.racy == {"f"}
    assert [c[:2] for c in live_index.changes(index, index)] == [("F", "f")]


def test_a_deferred_snapshot_is_its_changes_until_its_tree_is_needed(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "big").write_bytes(os.urandom(1 << 16))
    (live / "sub").mkdir()
    (live / "sub" / "small").write_text("v1")
    first = store.snapshot("v")
    (live / "sub" / "small").write_text("v2")
    (live / "added").write_text("a")
    second = store.snapshot("v", defer=True)
    folder = store.snapshot_folder("v", second)
    assert not (folder / "tree").exists() and (folder / "changes.json").is_file()
    assert (second.parent, second.copied_bytes, second.files) == (first.uuid, 3, 3)
    expected = content(live)
    (live / "added").write_text("written after the snapshot")
    tree = store.tree("v", second)  # built on demand
    assert content(tree) == expected
    assert (tree / "big").stat().st_ino == (store.tree("v", first) / "big").stat().st_ino


def test_dropping_a_parent_builds_its_children_first(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "a").write_text("1")
    first = store.snapshot("v")
    (live / "a").write_text("2")
    second = store.snapshot("v", defer=True)
    (live / "a").write_text("3")
    third = store.snapshot("v", defer=True)
    store.drop_snapshot("v", first)
    assert [s.id for s in store.snapshots("v")] == [second.id, third.id]
    assert (store.tree("v", third) / "a").read_text() == "3"
    assert (store.tree("v", second) / "a").read_text() == "2"


def test_without_a_usable_index_everything_is_copied(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "a").write_text("1")
    (live / "b").write_text("2")
    store.snapshot("v")
    store.index_path("v").write_text("{not json")
    (live / "b").write_text("3")
    again = store.snapshot("v")
    assert (again.parent, again.copied_bytes) == ("", 2)
    assert content(store.tree("v", again)) == {"a": b"1", "b": b"3"}


def pair(tmp_path: Path) -> tuple[VolumeStore, VolumeStore]:
    return VolumeStore(tmp_path / "a"), VolumeStore(tmp_path / "b")


def stream(store: VolumeStore, name: str, base: str | None, to: str) -> io.BytesIO:
    out = io.BytesIO()
    send(store, name, out, base, to)
    out.seek(0)
    return out


def one_file_on_b(tmp_path: Path) -> tuple[VolumeStore, Snapshot]:
    """Node b's copy of a volume of one file made on a: its live folder is that snapshot."""
    a, b = pair(tmp_path)
    (a.ensure("v") / "f").write_text("x")
    first = a.snapshot("v")
    return b, receive(b, "v", stream(a, "v", None, str(first.id)), quiet=True)


def test_an_increment_kept_as_changes_is_applied_to_a_live_folder_as_it_comes(
    tmp_path: Path,
) -> None:
    a, b = pair(tmp_path)
    live = a.ensure("v")
    (live / "d").mkdir()
    for i in range(30):
        (live / "d" / f"f{i}").write_bytes(os.urandom(4096))
    (live / "old").mkdir()
    (live / "old" / "x").write_text("x")
    first = a.snapshot("v")
    received = receive(b, "v", stream(a, "v", None, str(first.id)), quiet=True)
    (live / "d" / "f3").write_bytes(b"changed")
    (live / "new").mkdir(mode=0o750)
    (live / "new" / "n").write_text("n")
    (live / "old" / "x").unlink()
    (live / "old").rmdir()
    (live / "ln").symlink_to("d/f3")
    second = a.snapshot("v", defer=True)
    walks = []
    real_walk = safefs.walk

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        walks.append(args)
        return real_walk(*args, **kwargs)

    increment = stream(a, "v", str(first.id), str(second.id))
    safefs.walk = counted  # type: ignore[assignment]
    try:
        got = receive(b, "v", increment, live_is=received.uuid)
    finally:
        safefs.walk = real_walk  # type: ignore[assignment]
    assert walks == []  # neither tree walked: the changes, sent and applied as they are
    assert (got.uuid, got.parent, got.files) == (second.uuid, first.uuid, 31)
    assert content(b.live("v")) == content(live)
    assert content(b.tree("v", got)) == content(a.tree("v", second))
    assert live_index.load(b.index_path("v")) is None  # (kept in memory: written later)
    b.settle("v")
    index = live_index.load(b.index_path("v"))
    assert index is not None and index.snapshot == got.uuid
    (b.live("v") / "d" / "f5").write_text("on b")  # the index vouches for what follows
    third = b.snapshot("v")
    assert third.parent == got.uuid and third.copied_bytes == 4
    assert (b.tree("v", third) / "d" / "f5").read_text() == "on b"


def forged(base: str, records: list[object]) -> io.BytesIO:
    out = io.BytesIO()
    w = Writer(out)
    w.header(Header(snapshot="f" * 32, base=base, volume="v"))
    for record in records:
        if isinstance(record, tuple):
            record, data = record
            w.record(record)
            w.write(data)
            import hashlib

            w.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
        else:
            w.record(record)  # type: ignore[arg-type]
    w.end()
    out.seek(0)
    return out


def test_an_increment_through_a_link_in_the_live_folder_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    b, received = one_file_on_b(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (b.live("v") / "escape").symlink_to(outside)  # as a container could have left it
    index = live_index.load(b.index_path("v"))
    assert index is not None
    with safefs.opened(b.live("v")) as fd:
        index = live_index.scan(fd, live_index.marker(b.folder("v")))
    index.snapshot = received.uuid
    live_index.save(b.index_path("v"), index)
    record = FileRecord(path="escape/owned", mode=0o644, mtime_ns=0, size=3, extents=[[0, 3]])
    before = content(b.live("v"))
    with pytest.raises(StreamError, match="goes through a file or a link"):
        receive(b, "v", forged(received.uuid, [(record, b"bad")]), live_is=received.uuid)
    assert list(outside.iterdir()) == []
    assert content(b.live("v")) == before
    assert [s.uuid for s in b.snapshots("v")] == [received.uuid]


def test_an_increment_with_a_bad_checksum_changes_nothing(tmp_path: Path) -> None:
    b, received = one_file_on_b(tmp_path)
    before = content(b.live("v"))
    data = io.BytesIO()
    w = Writer(data)
    w.header(Header(snapshot="e" * 32, base=received.uuid, volume="v"))
    w.record(FileRecord(path="f", mode=0o644, mtime_ns=0, size=1, extents=[[0, 1]]))
    w.write(b"y")
    w.write(b"0" * 64 + b"\n")
    w.record(LinkRecord(path="l", target="f"))
    w.end()
    data.seek(0)
    with pytest.raises(StreamError, match="does not match its checksum"):
        receive(b, "v", data, live_is=received.uuid)
    assert content(b.live("v")) == before
    assert [s.uuid for s in b.snapshots("v")] == [received.uuid]
    assert not any(p.name.startswith(".incoming") for p in (b.root).iterdir())


def test_a_change_list_that_does_not_apply_is_refused(tmp_path: Path) -> None:
    outcome = snapshot_delta.Outcome(LiveIndex("s", {"f": ("f", 1, 3, 0, 0, 0o644)}))
    with pytest.raises(snapshot_delta.BrokenSnapshot, match="goes through a file"):
        outcome.step("F", "f/inside", 1)
    with pytest.raises(snapshot_delta.BrokenSnapshot, match="not in a folder"):
        outcome.step("F", "missing/inside", 1)
    outcome.step("X", "f")
    outcome.step("D", "f")
    outcome.step("F", "f/inside", 5)
    assert outcome.totals() == (1, 5)


def test_a_rollback_restores_a_same_size_rewrite_whose_mtime_was_put_back(
    store: VolumeStore,
) -> None:
    live = store.ensure("v")
    (live / "table").write_bytes(b"AAAA")
    (live / "other").write_bytes(os.urandom(4096))
    snap = store.snapshot("v")
    info = os.stat(live / "table")
    (live / "table").write_bytes(b"BBBB")  # a write to be thrown away ...
    os.utime(live / "table", ns=(info.st_atime_ns, info.st_mtime_ns))  # ... hiding its mtime
    copied = store.rollback("v", snap, quiet=True)
    assert (live / "table").read_bytes() == b"AAAA"
    assert copied == 4  # (the other file is vouched for by the index: left as it is)
    again = store.snapshot("v")
    assert (store.tree("v", again) / "table").read_bytes() == b"AAAA"


def test_a_rollback_to_an_older_snapshot_leaves_the_files_both_share(store: VolumeStore) -> None:
    live = store.ensure("v")
    (live / "shared").write_bytes(os.urandom(1 << 16))
    (live / "edited").write_text("v1")
    old = store.snapshot("v")
    (live / "edited").write_text("v2")
    store.snapshot("v")
    assert store.rollback("v", old) == 2  # only the file that differs
    assert (live / "edited").read_text() == "v1"


def test_a_file_that_vanishes_while_a_snapshot_copies_is_recorded_gone(
    store: VolumeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = store.ensure("v")
    (live / "keep").write_text("k")
    store.snapshot("v")
    (live / "tmp").write_text("a service's scratch file")
    real = snapshot_delta.safecopy.copy_file

    def vanishing(src, name, dst, perms, new=None):  # type: ignore[no-untyped-def]
        if name == "tmp":
            os.unlink(live / "tmp")  # removed by the service between the walk and the copy
        return real(src, name, dst, perms, new)

    monkeypatch.setattr(snapshot_delta.safecopy, "copy_file", vanishing)
    snap = store.snapshot("v")
    assert content(store.tree("v", snap)) == {"keep": b"k"}


def test_a_folder_s_special_bits_in_an_increment_reach_neither_live_nor_tree(
    tmp_path: Path,
) -> None:
    b, received = one_file_on_b(tmp_path)
    data = io.BytesIO()
    w = Writer(data)
    w.header(Header(snapshot="d" * 32, base=received.uuid, volume="v"))
    w.record(DirRecord(path="setgid", mode=0o7777, mtime_ns=0))
    w.end()
    data.seek(0)
    got = receive(b, "v", data, live_is=received.uuid)
    assert (b.live("v") / "setgid").stat().st_mode & 0o7777 == 0o777
    assert (b.tree("v", got) / "setgid").stat().st_mode & 0o7777 == 0o777
