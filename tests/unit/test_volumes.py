"""Named volumes on the host: seeding, snapshots, rollback, locking (no Docker)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from dockyard.backends.choice import LOCAL
from dockyard.cli import main
from dockyard.disk import safefs
from dockyard.disk.volume_stream import send
from dockyard.disk.volumes import Snapshot, VolumeInUse, VolumeStore
from dockyard.errors import InvalidInput, UnknownReference


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


# -- what containers leave in a live volume ---------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host folder outside the data root, which a container can name but not see."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "data.txt").write_text("host data")
    return outside


def test_rollback_never_writes_through_a_link_a_container_left(
    store: VolumeStore, host: Path
) -> None:
    live = store.ensure("db")
    (live / "sub").mkdir()
    (live / "sub" / "data.txt").write_text("volume data")
    store.snapshot("db")
    (live / "sub" / "data.txt").unlink()
    (live / "sub").rmdir()
    os.symlink(host, live / "sub")  # what `rm -rf /vol/sub && ln -s /host /vol/sub` leaves
    store.rollback("db", store.find("db", "1"))
    assert (host / "data.txt").read_text() == "host data"
    assert sorted(p.name for p in host.iterdir()) == ["data.txt"]
    assert not (live / "sub").is_symlink()
    assert (live / "sub" / "data.txt").read_text() == "volume data"


def test_rollback_replaces_links_at_file_names_instead_of_writing_their_targets(
    store: VolumeStore, host: Path
) -> None:
    live = store.ensure("db")
    (live / "data.txt").write_text("volume data")
    store.snapshot("db")
    (live / "data.txt").unlink()
    os.symlink(host / "data.txt", live / "data.txt")
    store.rollback("db", store.find("db", "1"))
    assert (host / "data.txt").read_text() == "host data"
    assert not (live / "data.txt").is_symlink()
    assert (live / "data.txt").read_text() == "volume data"


def _racing_create_file(monkeypatch: pytest.MonkeyPatch, target: Path, times: int) -> list[str]:
    """Make a link to ``target`` appear where the next ``times`` files are about to be
    created: a container quicker than dockyard."""
    real, raced = safefs.create_file, []

    def create_file(dir_fd: int, name: str) -> int:
        if len(raced) < times:
            raced.append(name)
            os.symlink(target, name, dir_fd=dir_fd)
        return real(dir_fd, name)

    monkeypatch.setattr(safefs, "create_file", create_file)
    return raced


def test_rollback_replaces_a_link_that_appears_while_it_copies(
    store: VolumeStore, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = store.ensure("db")
    (live / "data.txt").write_text("volume data")
    snap = store.snapshot("db")
    (live / "data.txt").unlink()
    raced = _racing_create_file(monkeypatch, host / "data.txt", times=1)
    store.rollback("db", snap)
    assert raced == ["data.txt"]
    assert (host / "data.txt").read_text() == "host data"
    assert not (live / "data.txt").is_symlink()
    assert (live / "data.txt").read_text() == "volume data"


def test_rollback_gives_up_with_a_clear_error_when_something_keeps_racing_it(
    store: VolumeStore, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = store.ensure("db")
    (live / "data.txt").write_text("volume data")
    snap = store.snapshot("db")
    (live / "data.txt").unlink()
    _racing_create_file(monkeypatch, host / "data.txt", times=1000)
    with pytest.raises(safefs.Contended, match=r"volume 'db': 'data\.txt' kept changing.*stop it"):
        store.rollback("db", snap)
    assert (host / "data.txt").read_text() == "host data"


def test_snapshot_keeps_links_as_links_and_reads_nothing_through_them(
    store: VolumeStore, host: Path
) -> None:
    live = store.ensure("v")
    os.symlink(host, live / "to-host")
    os.symlink(host / "data.txt", live / "file-link")
    snap = store.snapshot("v")
    tree = store.tree("v", snap)
    assert os.readlink(tree / "to-host") == str(host)
    assert os.readlink(tree / "file-link") == str(host / "data.txt")
    assert (snap.files, snap.bytes) == (0, 0)
    assert store.inspect("v").files == 0  # inspect does not count what links point to


def test_snapshot_never_links_a_host_file_through_a_link_in_the_previous_snapshot(
    store: VolumeStore, host: Path
) -> None:
    live = store.ensure("v")
    os.symlink(host, live / "sub")
    store.snapshot("v")  # the previous snapshot has sub -> host
    os.unlink(live / "sub")
    (live / "sub").mkdir()
    forged = live / "sub" / "data.txt"  # same size, mode and mtime as the host's file
    forged.write_text("XXXX XXXX")
    os.chmod(forged, (host / "data.txt").stat().st_mode & 0o7777)
    host_time = (host / "data.txt").stat().st_mtime_ns
    os.utime(forged, ns=(host_time, host_time))
    snap = store.snapshot("v")
    copy = store.tree("v", snap) / "sub" / "data.txt"
    assert copy.stat().st_ino != (host / "data.txt").stat().st_ino
    assert copy.read_text() == "XXXX XXXX"


def test_snapshot_and_rollback_copies_lose_set_id_bits_and_special_files(
    store: VolumeStore,
) -> None:
    live = store.ensure("v")
    (live / "tool").write_text("#!/bin/sh\n")
    os.chmod(live / "tool", 0o6755)
    (live / "shared").mkdir()
    os.chmod(live / "shared", 0o3777)
    os.mkfifo(live / "fifo")
    snap = store.snapshot("v")
    tree = store.tree("v", snap)
    assert (tree / "tool").stat().st_mode & 0o7777 == 0o555
    assert (tree / "shared").stat().st_mode & 0o7777 == 0o777
    assert not (tree / "fifo").exists()
    (live / "tool").unlink()
    os.rmdir(live / "shared")
    store.rollback("v", snap)
    assert (live / "tool").stat().st_mode & 0o7777 == 0o755
    assert (live / "shared").stat().st_mode & 0o7777 == 0o777
    assert not (live / "fifo").exists()  # the snapshot does not have it


def test_remove_deletes_the_volume_but_not_what_its_links_point_to(
    store: VolumeStore, host: Path
) -> None:
    live = store.ensure("v")
    os.symlink(host, live / "to-host")
    (live / "ro").mkdir()
    os.chmod(live / "ro", 0o555)
    store.snapshot("v")
    store.remove("v")
    assert not store.folder("v").exists()
    assert (host / "data.txt").read_text() == "host data"


# -- names --------------------------------------------------------------------------------------

ABSOLUTE = "@TMP@/abs"  # an absolute path inside the test's folder
BAD_NAMES = ["../../x", ABSOLUTE, "..", ".", "", "UPPER", "a/b", "a\nb", "-x", "x" * 64, "é"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_every_volume_store_method_refuses_a_name_outside_the_rule(
    store: VolumeStore, tmp_path: Path, bad: str
) -> None:
    bad = bad.replace("@TMP@", str(tmp_path))
    calls = [
        lambda: store.folder(bad),
        lambda: store.live(bad),
        lambda: store.exists(bad),
        lambda: store.ensure(bad),
        lambda: store.inspect(bad),
        lambda: store.snapshots(bad),
        lambda: store.find(bad, "1"),
        lambda: store.snapshot(bad),
        lambda: store.rollback(bad, Snapshot(1, None, 0.0, 0, 0, 0)),
        lambda: store.remove(bad),
        lambda: store.lock(bad, exclusive=True).__enter__(),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match=re.escape(repr(bad))):
            call()
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_a_name_with_a_trailing_newline_is_refused(store: VolumeStore) -> None:
    with pytest.raises(InvalidInput, match=r"'db\\n' is not a volume name"):
        store.ensure("db\n")


@pytest.mark.parametrize("ref", ["../1", "1/..", "", "a b", "[bold]", "x\x1b[2J", "²"])
def test_snapshot_refs_outside_the_rule_are_refused(store: VolumeStore, ref: str) -> None:
    store.ensure("v")
    with pytest.raises(InvalidInput, match="is not a snapshot"):
        store.find("v", ref)


@pytest.mark.parametrize("tag", ["12", "[red]x", "a/b", "x\x1b[2J", ".hidden", "x" * 64])
def test_snapshot_tags_outside_the_rule_are_refused(store: VolumeStore, tag: str) -> None:
    store.ensure("v")
    with pytest.raises(InvalidInput, match="is not a snapshot tag"):
        store.snapshot("v", tag=tag)
    assert store.snapshots("v") == []


def test_tags_that_follow_the_rule_name_snapshots(store: VolumeStore) -> None:
    store.ensure("v")
    store.snapshot("v", tag="before-v2.1_final")
    assert store.find("v", "before-v2.1_final").id == 1


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "../../victim"],
        ["snapshot", ABSOLUTE],
        ["snapshots", "../../victim"],
        ["rm", "../../victim"],
        ["rollback", "../../victim", "1"],
        ["send", "../../victim"],
        ["receive", "../../elsewhere"],
        ["receive", ABSOLUTE],
        ["snapshot", "v", "--tag", "../t"],
        ["rollback", "v", "../t"],
        ["send", "v", "--from", "x\x1b[2J"],
    ],
)
def test_volume_commands_refuse_bad_names_with_exit_2_and_change_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    home = tmp_path / "home" / "inner"  # its volumes/../../victim is home/victim
    sender = VolumeStore(tmp_path / "sender")  # a valid stream, for receive
    sender.ensure("v")
    sender.snapshot("v")
    stream = io.BytesIO()
    send(sender, "v", stream)
    victim = VolumeStore(tmp_path)  # a volume-like folder outside the data root
    victim.root = tmp_path / "home"
    (victim.ensure("victim") / "keep").write_text("keep")
    victim.snapshot("victim")
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stream.getvalue())))
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO()))  # not a terminal
    VolumeStore(home).ensure("v")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    args = [arg.replace("@TMP@", str(tmp_path)) for arg in args]
    assert main(["volume", *args]) == 2
    assert "internal error" not in capsys.readouterr().err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_the_bad_name_is_named_with_control_characters_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path))
    assert main(["volume", "inspect", "x\x1b[2J"]) == 2
    err = capsys.readouterr().err
    assert "'x\\x1b[2J' is not a volume name" in " ".join(err.split())
    assert "\x1b" not in err


# -- host folder modes ----------------------------------------------------------------------


def test_the_folders_above_a_live_volume_are_private(store: VolumeStore) -> None:
    live = store.ensure("v")
    store.snapshot("v")
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.folder("v").stat().st_mode) == 0o700
    assert stat.S_IMODE((store.folder("v") / "snapshots").stat().st_mode) == 0o700
    assert stat.S_IMODE(live.stat().st_mode) == 0o777  # containers write as any user


def test_folders_an_older_dockyard_left_open_are_tightened(store: VolumeStore) -> None:
    store.ensure("v")
    os.chmod(store.root, 0o755)
    os.chmod(store.folder("v"), 0o777)
    with store.lock("v", exclusive=True):
        pass
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.folder("v").stat().st_mode) == 0o700


def test_rollback_gives_a_folder_back_its_permissions(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "home")
    live = store.ensure("perm")
    (live / "sub").mkdir()
    (live / "sub" / "kept").write_text("x")
    (live / "sub").chmod(0o755)
    with store.lock("perm", exclusive=True):
        snap = store.snapshot("perm")
    (live / "sub").chmod(0o700)
    with store.lock("perm", exclusive=True):
        store.rollback("perm", snap)
    assert stat.S_IMODE((live / "sub").stat().st_mode) == 0o755
    assert (live / "sub" / "kept").read_text() == "x"


def test_a_volume_command_a_backend_does_not_offer_says_which_volumes_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`volume move` asks for volumes that live on a cluster's nodes; `rollback`, `send`
    and `receive` for snapshots all in reach (one machine's): each by its interface."""
    from dockyard.backends.local.ports import LocalVolumes
    from dockyard.execution.ports import PlacedVolumes, VolumeHistory

    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path))
    VolumeStore(tmp_path).ensure("v")
    assert isinstance(LocalVolumes(), VolumeHistory)
    assert not isinstance(LocalVolumes(), PlacedVolumes)
    assert main(["volume", "move", "v", "node-2"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "works on a swarm's volumes" in said and "--backend swarm" in said

    class Unkept(LocalVolumes):  # (a backend without history: its class says nothing else)
        rollback = send = receive = None  # type: ignore[assignment]

    monkeypatch.setattr("dockyard.cli.volume.choose", lambda name: replace(LOCAL, volumes=Unkept))
    assert main(["volume", "rollback", "v", "1"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "works on this machine's volumes" in said
