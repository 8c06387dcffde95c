"""One contract per storage port, on the fake (``dockyard.testing``) and the local
implementation: OutputStore, Workspace, VolumeBackend (as FolderVolumes). Tests speak to
the Protocols; only the fixtures know which implementation they hold."""

from __future__ import annotations

import io
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.backends.local.ports import LocalOutputs, LocalVolumes, LocalWorkspace, safe_name
from dockyard.backends.swarm.ports import AgentOutputs, AgentPool, AgentWorkspace
from dockyard.disk.kept import Staging
from dockyard.disk.node_disk import fifo_name
from dockyard.disk.volume_stream import StreamError
from dockyard.disk.volumes import VolumeInUse, VolumeStore
from dockyard.errors import InvalidInput, PlanError, UnknownReference
from dockyard.execution.ports import FolderVolumes, OutputsLost, OutputStore, Workspace
from dockyard.runtime.base import LOCAL_NODE
from dockyard.testing import FakeOutputs, FakeVolumes, FakeWorkspace
from dockyard.testing.agents import running_agents

KINDS = ["fake", "local"]
STORE_KINDS = [*KINDS, "agents"]  # outputs and work folders: also through a node agent
RUN = "run-1"
Contents = dict[str, tuple[object, ...]]


def contents(root: Path) -> Contents:
    """What a tree holds: folders, files (bytes, executable or not) and links, no link
    followed; anything else is listed as special."""
    found: Contents = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = Path(entry.path).relative_to(root).as_posix()
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    found[rel] = ("link", os.readlink(entry.path))
                elif stat.S_ISDIR(mode):
                    found[rel] = ("folder",)
                    pending.append(Path(entry.path))
                elif stat.S_ISREG(mode):
                    found[rel] = ("file", Path(entry.path).read_bytes(), bool(mode & 0o100))
                else:
                    found[rel] = ("special", stat.S_IFMT(mode))
    return found


def fill(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# -- fixtures: the only place that knows the implementations ----------------------------------


@dataclass
class Outputs:
    store: OutputStore
    workspace: Workspace  # where stagings come from, on the same disks
    names: Iterator[int]

    def staged(self, files: dict[str, bytes]) -> Staging:
        """A made staging folder on the local node holding ``files``."""
        staging = self.workspace.staging(RUN, f"step[{next(self.names)}]", 1, LOCAL_NODE)
        self.workspace.make(staging)
        fill(staging.path, files)
        return staging


@pytest.fixture
def agent_pool(tmp_path: Path) -> Iterator[AgentPool]:
    """A real node agent on loopback for the one node, its root in ``tmp_path``."""
    with running_agents(tmp_path / "agents", [LOCAL_NODE]) as pool:
        yield pool


@pytest.fixture(params=STORE_KINDS)
def outputs(request: pytest.FixtureRequest, tmp_path: Path) -> Outputs:
    state = tmp_path / ".dockyard"
    if request.param == "fake":
        fake = tmp_path / "fake"
        return Outputs(FakeOutputs(fake), FakeWorkspace(fake), itertools.count())
    if request.param == "agents":
        pool = request.getfixturevalue("agent_pool")
        return Outputs(
            AgentOutputs(pool, state / "outputs"),
            AgentWorkspace(pool, "proj", state),
            itertools.count(),
        )
    return Outputs(LocalOutputs(state), LocalWorkspace(state), itertools.count())


@pytest.fixture(params=STORE_KINDS)
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    if request.param == "fake":
        return FakeWorkspace(tmp_path / "fake")
    if request.param == "agents":
        return AgentWorkspace(request.getfixturevalue("agent_pool"), "proj", tmp_path / "state")
    return LocalWorkspace(tmp_path / ".dockyard")


MakeVolumes = Callable[[str], FolderVolumes]


@pytest.fixture(params=KINDS)
def make_volumes(request: pytest.FixtureRequest, tmp_path: Path) -> MakeVolumes:
    """Volume backends of one kind, each on a host of its own (``where`` names it)."""

    def make(where: str) -> FolderVolumes:
        if request.param == "fake":
            return FakeVolumes(tmp_path / where)
        return LocalVolumes(VolumeStore(tmp_path / where))

    return make


@pytest.fixture
def volumes(make_volumes: MakeVolumes) -> FolderVolumes:
    return make_volumes("home")


# -- OutputStore ------------------------------------------------------------------------------

RESULT = {"r.txt": b"42", "sub/x.tsv": b"a\t1\n"}


def test_a_sealed_staging_commits_under_the_digest_of_its_content(outputs: Outputs) -> None:
    first, same, other = (
        outputs.staged(RESULT),
        outputs.staged(RESULT),
        outputs.staged({"r.txt": b"43"}),
    )
    expected = contents(first.path)  # (a store may keep it at once: sealed, it is not here)
    sealed = outputs.store.seal(first)
    assert outputs.store.seal(same).digest == sealed.digest
    assert outputs.store.seal(other).digest != sealed.digest
    stored = outputs.store.commit(first, sealed)
    assert (stored.digest, stored.node, stored.size, stored.files) == (
        sealed.digest,
        LOCAL_NODE,
        6,
        2,
    )
    assert outputs.store.exists(sealed.digest)
    assert contents(outputs.store.locate(sealed.digest)) == expected


def test_the_same_content_committed_twice_is_one_output_and_the_second_staging_is_gone(
    outputs: Outputs,
) -> None:
    first, second = outputs.staged(RESULT), outputs.staged(RESULT)
    one = outputs.store.commit(first, outputs.store.seal(first))
    two = outputs.store.commit(second, outputs.store.seal(second))
    assert (two.digest, two.location) == (one.digest, one.location)
    assert not second.path.exists()
    assert contents(outputs.store.locate(one.digest)) == {
        "r.txt": ("file", b"42", False),
        "sub": ("folder",),
        "sub/x.tsv": ("file", b"a\t1\n", False),
    }


def test_a_committed_output_is_read_only_and_has_no_set_uid_bit_or_fifo(outputs: Outputs) -> None:
    staging = outputs.staged({"tool": b"#!/bin/sh\n", "data/table.tsv": b"x\n"})
    (staging.path / "tool").chmod(0o4755)
    os.mkfifo(staging.path / "data" / "pipe")
    sealed = outputs.store.seal(staging)
    assert any("set-uid" in change and "tool" in change for change in sealed.changes)
    assert any("FIFO" in change and "pipe" in change for change in sealed.changes)
    where = outputs.store.locate(outputs.store.commit(staging, sealed).digest)
    assert contents(where) == {
        "data": ("folder",),
        "data/table.tsv": ("file", b"x\n", False),
        "tool": ("file", b"#!/bin/sh\n", True),  # the executable bit is data, and stays
    }
    for path in (where, *where.rglob("*")):
        mode = path.lstat().st_mode
        assert not mode & 0o222, f"{path} is writable ({mode:o})"
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), f"{path}: {mode:o}"


def test_bind_on_a_node_gives_a_folder_with_the_same_content(outputs: Outputs) -> None:
    staging = outputs.staged({**RESULT, "bin/run": b"#!/bin/sh\n"})
    (staging.path / "bin" / "run").chmod(0o755)
    expected = contents(staging.path)
    stored = outputs.store.commit(staging, outputs.store.seal(staging))
    outputs.store.bring([stored.digest], LOCAL_NODE)
    bound = Path(outputs.store.bind(stored.digest, LOCAL_NODE))
    assert bound.is_dir()
    assert contents(bound) == expected


def test_discard_removes_a_staging_even_a_sealed_one(outputs: Outputs) -> None:
    fresh, sealed = outputs.staged(RESULT), outputs.staged({"deep/er/f": b"1"})
    outputs.store.seal(sealed)  # read-only now, folders too
    for staging in (fresh, sealed):
        outputs.store.discard(staging)
        assert not staging.path.exists()
        outputs.store.discard(staging)  # discarding what is gone is fine


def test_sealing_a_staging_that_is_gone_raises_oserror(outputs: Outputs) -> None:
    staging = outputs.staged(RESULT)
    outputs.store.discard(staging)
    with pytest.raises(OSError):
        outputs.store.seal(staging)


def test_an_output_never_committed_does_not_exist(outputs: Outputs) -> None:
    assert not outputs.store.exists("0" * 64)


# -- Workspace --------------------------------------------------------------------------------


def test_a_staging_is_named_not_made(workspace: Workspace) -> None:
    staging = workspace.staging(RUN, "align[a]", 1, LOCAL_NODE)
    assert staging.node == LOCAL_NODE
    assert not staging.path.exists()
    assert workspace.staging(RUN, "align[a]", 1, LOCAL_NODE) == staging  # found again


def test_a_made_staging_is_empty_and_writable_by_anyone_while_its_parents_are_not(
    workspace: Workspace,
) -> None:
    staging = workspace.staging(RUN, "align[a]", 1, LOCAL_NODE)
    workspace.make(staging)
    assert staging.path.is_dir()
    assert list(staging.path.iterdir()) == []
    assert stat.S_IMODE(staging.path.stat().st_mode) == 0o777
    for parent in (staging.path.parent, staging.path.parent.parent):
        mode = stat.S_IMODE(parent.stat().st_mode)
        assert not mode & 0o077, f"{parent} is open to others ({mode:o})"


def test_a_staging_made_after_its_runs_streams_still_has_private_parents(
    workspace: Workspace,
) -> None:
    """A streamed chain's FIFOs are made before its members' stagings: whichever comes
    first, nothing leading to a staging is open to other local users."""
    folder = workspace.streams(RUN, "sort[a]", 1, ["align[a]"], LOCAL_NODE)
    staging = workspace.staging(RUN, "align[a]", 1, LOCAL_NODE)
    workspace.make(staging)
    for parent in (staging.path.parent, staging.path.parent.parent, folder.parent):
        mode = stat.S_IMODE(parent.stat().st_mode)
        assert not mode & 0o077, f"{parent} is open to others ({mode:o})"


def test_making_a_staging_again_empties_it(workspace: Workspace) -> None:
    """What a run that died left in an attempt's staging is not this attempt's output."""
    staging = workspace.staging(RUN, "align[a]", 1, LOCAL_NODE)
    workspace.make(staging)
    fill(staging.path, {"partial": b"half", "sub/more": b"x"})
    (staging.path / "sub").chmod(0o555)
    workspace.make(staging)
    assert list(staging.path.iterdir()) == []
    assert stat.S_IMODE(staging.path.stat().st_mode) == 0o777


def test_every_attempt_of_every_instance_has_its_own_staging_in_its_run(
    workspace: Workspace,
) -> None:
    names = ["align[a]", "align[b]", "a/b", "../../escape", "..", "x y"]
    stagings = [workspace.staging(RUN, n, a, LOCAL_NODE) for n in names for a in (1, 2)]
    assert len({s.path for s in stagings}) == len(stagings)
    assert {s.path.parent for s in stagings} == {stagings[0].path.parent}  # none leads out
    assert workspace.staging("run-2", "align[a]", 1, LOCAL_NODE).path not in {
        s.path for s in stagings
    }


def test_streams_makes_one_fifo_per_producer(workspace: Workspace) -> None:
    producers = ["fetch", "align[a]"]
    folder = workspace.streams(RUN, "sort[a]", 1, producers, LOCAL_NODE)
    wired = sorted(fifo_name(safe_name(p)) for p in producers)  # as the launcher names them
    assert sorted(p.name for p in folder.iterdir()) == wired
    assert all(stat.S_ISFIFO(p.lstat().st_mode) for p in folder.iterdir())
    assert workspace.streams(RUN, "sort[a]", 1, producers, LOCAL_NODE) == folder  # again: the same
    assert workspace.streams(RUN, "sort[a]", 2, producers, LOCAL_NODE) != folder


def test_logs_of_two_attempts_differ(workspace: Workspace) -> None:
    logs = {
        workspace.log(RUN, "align[a]", 1),
        workspace.log(RUN, "align[a]", 2),
        workspace.log(RUN, "align[b]", 1),
        workspace.log("run-2", "align[a]", 1),
    }
    assert len(logs) == 4
    assert workspace.log(RUN, "align[a]", 1) == workspace.log(RUN, "align[a]", 1)


def test_clear_deletes_the_work_folders_and_keeps_the_logs(workspace: Workspace) -> None:
    staging = workspace.staging(RUN, "align[a]", 1, LOCAL_NODE)
    workspace.make(staging)
    fill(staging.path, {"f": b"1"})
    folder = workspace.streams(RUN, "sort[a]", 1, ["align[a]"], LOCAL_NODE)
    log = workspace.log(RUN, "align[a]", 1)
    fill(log.parent, {log.name: b"hello\n"})
    workspace.clear()
    assert not staging.path.exists()
    assert not folder.exists()
    assert log.read_bytes() == b"hello\n"
    workspace.clear()  # nothing to clear is fine


# -- FolderVolumes ----------------------------------------------------------------------------


def test_an_ensured_volume_has_a_live_folder_anyone_may_write(volumes: FolderVolumes) -> None:
    assert not volumes.exists("db")
    volumes.ensure("db")
    live = volumes.live("db")
    assert volumes.exists("db")
    assert live.is_dir() and list(live.iterdir()) == []
    assert stat.S_IMODE(live.stat().st_mode) == 0o777  # containers run as any user
    assert [v.name for v in volumes.all()] == ["db"]
    assert volumes.inspect("db").path == str(live)


def test_seeding_copies_the_seed_once(volumes: FolderVolumes, tmp_path: Path) -> None:
    seed = fill(tmp_path / "seed", {"table.tsv": b"a\t1\n", "sub/run": b"#!/bin/sh\n"})
    (seed / "sub" / "run").chmod(0o755)
    volumes.ensure("cache", seed)
    live = volumes.live("cache")
    assert contents(live) == contents(seed)
    (live / "table.tsv").write_bytes(b"changed\n")
    volumes.ensure("cache", seed)
    assert (live / "table.tsv").read_bytes() == b"changed\n"
    assert [v.name for v in volumes.all()] == ["cache"]


def volume_with_content(volumes: FolderVolumes, name: str = "db") -> Path:
    volumes.ensure(name)
    live = fill(
        volumes.live(name),
        {
            "keep.txt": b"keep",
            "edit.txt": b"before",
            "run.sh": b"#!/bin/sh\n",
            "sub/deep.txt": b"deep",
        },
    )
    (live / "run.sh").chmod(0o755)
    (live / "empty").mkdir()
    os.symlink("keep.txt", live / "link")
    return live


def change(live: Path) -> None:
    """Change every kind of thing: content, a mode, a link; remove a file and a folder;
    add a file; make a folder a file."""
    (live / "edit.txt").write_bytes(b"after, and longer")
    (live / "run.sh").chmod(0o644)
    (live / "keep.txt").unlink()
    (live / "sub" / "deep.txt").unlink()
    (live / "sub").rmdir()
    (live / "empty").rmdir()
    fill(live, {"empty": b"now a file", "new/x.txt": b"added"})
    (live / "link").unlink()
    os.symlink("new/x.txt", live / "link")


@pytest.mark.parametrize("by", ["id", "tag"])
def test_a_snapshot_keeps_what_the_live_folder_had_and_rollback_brings_it_back(
    volumes: FolderVolumes, by: str
) -> None:
    live = volume_with_content(volumes)
    before = contents(live)
    snap = volumes.snapshot("db", tag="clean")
    assert (snap.id, snap.tag, snap.files, snap.bytes) == (1, "clean", 4, 24)
    assert volumes.snapshots("db") == [snap]
    change(live)
    changed = contents(live)
    assert changed != before
    copied = volumes.rollback("db", str(snap.id) if by == "id" else "clean")
    assert contents(live) == before
    assert copied >= len(b"before")
    assert volumes.live("db") == live  # the same folder: containers keep their bind
    second = volumes.snapshot("db")
    assert second.id == 2
    assert volumes.rollback("db", "2") >= 0
    assert contents(live) == before


def test_snapshots_count_up_and_tags_are_unique(volumes: FolderVolumes) -> None:
    live = volume_with_content(volumes)
    first = volumes.snapshot("db", tag="v1")
    (live / "edit.txt").write_bytes(b"second version")
    second = volumes.snapshot("db")
    assert [(s.id, s.tag) for s in volumes.snapshots("db")] == [(1, "v1"), (2, None)]
    assert first.uuid and second.uuid and first.uuid != second.uuid
    assert volumes.inspect("db").snapshots == 2
    with pytest.raises(PlanError):
        volumes.snapshot("db", tag="v1")
    with pytest.raises(UnknownReference):
        volumes.rollback("db", "v9")
    with pytest.raises(UnknownReference):
        volumes.snapshot("absent")


def test_inspect_counts_the_live_files(volumes: FolderVolumes) -> None:
    volume_with_content(volumes)
    info = volumes.inspect("db")
    assert (info.name, info.files, info.bytes, info.snapshots) == ("db", 4, 24, 0)
    with pytest.raises(UnknownReference):
        volumes.inspect("absent")
    assert volumes.snapshots("absent") == []


def test_a_mount_binds_the_live_volume(volumes: FolderVolumes) -> None:
    live = volume_with_content(volumes)
    mount = volumes.mount("db", "/data", False, LOCAL_NODE)
    assert (mount.target, mount.readonly, mount.driver) == ("/data", False, None)
    bound = Path(mount.source)
    assert contents(bound) == contents(live)
    assert volumes.mount("db", "/ro", True, LOCAL_NODE).readonly
    (bound / "written-in-a-container").write_bytes(b"x")
    assert (live / "written-in-a-container").read_bytes() == b"x"


def refused(volumes: FolderVolumes, name: str, *, exclusive: bool) -> None:
    with pytest.raises(VolumeInUse), volumes.hold(name, exclusive=exclusive):
        pass


def test_two_exclusive_holds_conflict(volumes: FolderVolumes) -> None:
    volumes.ensure("db")
    with volumes.hold("db", exclusive=True):
        refused(volumes, "db", exclusive=True)
        refused(volumes, "db", exclusive=False)  # nor may a reader join a writer
    with volumes.hold("db", exclusive=True):  # released: it can be held again
        pass


def test_two_shared_holds_do_not_conflict(volumes: FolderVolumes) -> None:
    volumes.ensure("db")
    with volumes.hold("db", exclusive=False), volumes.hold("db", exclusive=False):
        assert volumes.exists("db")
    with volumes.hold("db", exclusive=True):  # both readers let go
        pass


def test_a_writer_is_refused_beside_a_reader(volumes: FolderVolumes) -> None:
    volumes.ensure("db")
    with volumes.hold("db", exclusive=False), volumes.hold("db", exclusive=False):
        refused(volumes, "db", exclusive=True)
    with volumes.hold("db", exclusive=False):  # one of two readers let go: still refused
        refused(volumes, "db", exclusive=True)


def test_holds_are_per_volume_and_released_by_an_error(volumes: FolderVolumes) -> None:
    volumes.ensure("one")
    volumes.ensure("two")
    with volumes.hold("one", exclusive=True), volumes.hold("two", exclusive=True):
        pass
    with pytest.raises(RuntimeError), volumes.hold("one", exclusive=True):
        raise RuntimeError("the run failed")
    with volumes.hold("one", exclusive=True):
        pass


def test_a_waiting_hold_gets_the_volume_once_it_is_released(volumes: FolderVolumes) -> None:
    volumes.ensure("db")
    got = threading.Event()
    failed: list[BaseException] = []

    def waiter() -> None:
        try:
            with volumes.hold("db", exclusive=True, wait=True):
                got.set()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    with volumes.hold("db", exclusive=False):
        thread.start()
        assert not got.wait(0.3)  # queued behind the reader
    assert got.wait(10)
    thread.join(10)
    assert failed == []


def send(volumes: FolderVolumes, name: str, **refs: str) -> bytes:
    out = io.BytesIO()
    records, size = volumes.send(name, out, refs.get("base"), refs.get("target"))
    data = out.getvalue()
    assert records > 0 and 0 < size <= len(data)
    return data


def test_send_then_receive_reproduces_the_snapshot(make_volumes: MakeVolumes) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    live = volume_with_content(sender)
    snap = sender.snapshot("db", tag="v1")
    expected = contents(live)
    change(live)  # the live folder is not what is sent
    got = receiver.receive("copy", io.BytesIO(send(sender, "db")))
    assert receiver.exists("copy")
    assert contents(receiver.live("copy")) == expected
    assert (got.uuid, got.tag, got.files, got.bytes) == (snap.uuid, "v1", snap.files, snap.bytes)
    assert receiver.snapshots("copy") == [got]


def test_an_increment_applies_onto_its_base(make_volumes: MakeVolumes) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    live = volume_with_content(sender)
    fill(live, {"big.bin": bytes(range(256)) * 64})  # unchanged: not in the increment
    first = sender.snapshot("db")
    change(live)
    second = sender.snapshot("db")
    expected = contents(live)
    receiver.receive("copy", io.BytesIO(send(sender, "db", target="1")))
    increment = send(sender, "db", base="1", target="2")
    assert len(increment) < len(send(sender, "db", target="2"))  # only what changed
    receiver.receive("copy", io.BytesIO(increment))
    assert contents(receiver.live("copy")) == expected
    assert [s.uuid for s in receiver.snapshots("copy")] == [first.uuid, second.uuid]
    assert receiver.rollback("copy", "1") >= 0  # the base is still there, whole
    sender.rollback("db", "1")
    assert contents(receiver.live("copy")) == contents(live)


def test_an_increment_without_its_base_is_refused(make_volumes: MakeVolumes) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    live = volume_with_content(sender)
    sender.snapshot("db")
    (live / "edit.txt").write_bytes(b"second version")
    sender.snapshot("db")
    with pytest.raises(StreamError):
        receiver.receive("copy", io.BytesIO(send(sender, "db", base="1", target="2")))
    assert not receiver.exists("copy")


def test_receiving_a_snapshot_twice_is_refused(make_volumes: MakeVolumes) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    volume_with_content(sender)
    sender.snapshot("db")
    stream = send(sender, "db")
    receiver.receive("copy", io.BytesIO(stream))
    with pytest.raises(StreamError):
        receiver.receive("copy", io.BytesIO(stream))
    assert len(receiver.snapshots("copy")) == 1


def test_send_without_a_snapshot_is_refused(volumes: FolderVolumes) -> None:
    volumes.ensure("db")
    with pytest.raises(UnknownReference):
        volumes.send("db", io.BytesIO())


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "not-a-stream": lambda data: b"hello, this is not a volume stream\n",
    "truncated": lambda data: data[: len(data) // 2],
    "without-its-last-byte": lambda data: data[:-1],
    "trailing-data": lambda data: data + b"more",
    "a-flipped-byte": lambda data: (
        data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0x01]) + data[len(data) // 2 + 1 :]
    ),
}


@pytest.mark.parametrize("damage", sorted(MALFORMED))
def test_a_malformed_stream_raises_stream_error_and_leaves_no_volume(
    make_volumes: MakeVolumes, damage: str
) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    live = volume_with_content(sender)
    fill(live, {"big.bin": bytes(range(256)) * 64})  # most of the stream is file data
    sender.snapshot("db")
    with pytest.raises(StreamError):
        receiver.receive("copy", io.BytesIO(MALFORMED[damage](send(sender, "db"))))
    assert not receiver.exists("copy")
    assert receiver.all() == []


def test_a_malformed_stream_leaves_an_existing_volume_as_it_was(
    make_volumes: MakeVolumes,
) -> None:
    sender, receiver = make_volumes("here"), make_volumes("there")
    volume_with_content(sender)
    sender.snapshot("db")
    mine = volume_with_content(receiver, "copy")
    (mine / "mine.txt").write_bytes(b"only here")
    receiver.snapshot("copy")
    before, snaps = contents(mine), receiver.snapshots("copy")
    with pytest.raises(StreamError):
        receiver.receive("copy", io.BytesIO(send(sender, "db")[:-10]))
    assert contents(mine) == before
    assert receiver.snapshots("copy") == snaps


BAD_NAMES: dict[str, Callable[[FolderVolumes], object]] = {
    "ensure-upper-case": lambda v: v.ensure("Bad"),
    "ensure-a-path": lambda v: v.ensure("../escape"),
    "exists-a-path": lambda v: v.exists("a/b"),
    "live-dot-dot": lambda v: v.live(".."),
    "hold-a-space": lambda v: v.hold("x y", exclusive=True).__enter__(),
    "snapshots-empty": lambda v: v.snapshots(""),
    "inspect-a-slash": lambda v: v.inspect("/"),
    "snapshot-tag-a-number": lambda v: v.snapshot("db", tag="12"),
    "snapshot-tag-a-path": lambda v: v.snapshot("db", tag="../t"),
    "rollback-ref-a-path": lambda v: v.rollback("db", "../1"),
    "send-ref-a-path": lambda v: v.send("db", io.BytesIO(), None, "a/b"),
    "receive-a-path": lambda v: v.receive("../x", io.BytesIO(b"")),
    "remove-a-path": lambda v: v.remove("../db"),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_names_raise_invalid_input(volumes: FolderVolumes, case: str) -> None:
    volume_with_content(volumes)
    volumes.snapshot("db", tag="v1")
    with pytest.raises(InvalidInput):
        BAD_NAMES[case](volumes)
    assert [v.name for v in volumes.all()] == ["db"]


def test_remove_deletes_the_volume_and_its_snapshots(volumes: FolderVolumes) -> None:
    live = volume_with_content(volumes)
    volumes.snapshot("db")
    with volumes.hold("db", exclusive=False), pytest.raises(VolumeInUse):
        volumes.remove("db")  # refused while a run uses it
    assert volumes.exists("db")
    volumes.remove("db")
    assert not volumes.exists("db")
    assert not live.exists()
    assert volumes.all() == []
    assert volumes.snapshots("db") == []
    with pytest.raises(UnknownReference):
        volumes.remove("db")
    volumes.ensure("db")  # a new volume of that name starts empty
    assert list(volumes.live("db").iterdir()) == []
    assert volumes.snapshot("db").id == 1


# -- the fakes' own model of where bytes live (no local counterpart: one machine) -------------


def test_fake_outputs_fetch_an_output_to_a_node_that_lacks_it(tmp_path: Path) -> None:
    store, workspace = FakeOutputs(tmp_path), FakeWorkspace(tmp_path)
    staging = workspace.staging(RUN, "align[a]", 1, "node-1")
    workspace.make(staging)
    fill(staging.path, RESULT)
    expected = contents(staging.path)
    stored = store.commit(staging, store.seal(staging))
    assert stored.node == "node-1"
    assert store.bind(stored.digest, "node-1") == stored.location
    store.bring([stored.digest], "node-1")
    assert store.fetches == 0
    there = store.bind(stored.digest, "node-2")
    assert not Path(there).exists()  # named, not fetched
    store.bring([stored.digest], "node-2")
    assert there != stored.location and contents(Path(there)) == expected
    store.bring([stored.digest], "node-2")
    assert store.fetches == 1


def test_fake_outputs_lose_what_only_a_forgotten_node_had(tmp_path: Path) -> None:
    store, workspace = FakeOutputs(tmp_path), FakeWorkspace(tmp_path)
    digests = []
    for n, node in enumerate(["node-1", "node-1"]):
        staging = workspace.staging(RUN, f"step[{n}]", 1, node)
        workspace.make(staging)
        fill(staging.path, {"n": str(n).encode()})
        digests.append(store.commit(staging, store.seal(staging)).digest)
    shared, alone = digests
    store.bring([shared], "node-2")
    store.forget("node-1")
    assert store.exists(shared) and not store.exists(alone)
    assert store.locate(shared).is_dir()
    store.forget("node-2")
    assert not store.exists(shared)
    with pytest.raises(OutputsLost):
        store.bring([shared], "node-3")


def test_fake_volumes_give_up_waiting_after_their_timeout(tmp_path: Path) -> None:
    volumes = FakeVolumes(tmp_path, hold_timeout=0.2)
    volumes.ensure("db")
    with (
        volumes.hold("db", exclusive=True),
        pytest.raises(VolumeInUse),
        volumes.hold("db", exclusive=False, wait=True),
    ):
        pass
