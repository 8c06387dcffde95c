"""Volumes kept by node agents: leases, fencing, replication and moves, with real agents on
loopback addresses, real files and the lease rules over an in-memory compare-and-swap
store (the same rules run over Swarm's store in tests/integration/test_swarm_volumes.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.node_volumes import KEEP_SNAPSHOTS, NodeVolumes, Refused
from dockyard.disk import live_index, safefs
from dockyard.testing.agents import TEST_KEY, VolumeCluster, volume_agents

NODES = ["node-a", "node-b", "node-c"]


@pytest.fixture
def cluster(tmp_path: Path):
    with volume_agents(tmp_path / "agents", NODES) as made:
        yield made


def write(cluster: VolumeCluster, node: str, volume: str, name: str, text: str) -> None:
    live = Path(cluster.volumes(node).mountpoint(volume))
    (live / name).write_text(text)


def read(cluster: VolumeCluster, node: str, volume: str, name: str) -> str:
    return (Path(cluster.volumes(node).mountpoint(volume)) / name).read_text()


def releases_held(volumes: NodeVolumes, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The releases after ``volumes``' unmounts, queued here instead of taken (the caller
    runs them, or not)."""
    queued: list[Any] = []
    monkeypatch.setattr(volumes.releaser.threads, "start", queued.append)
    return queued


def test_written_on_one_node_read_on_another(cluster: VolumeCluster) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    b.create("data")
    a.mount("data", "m1")
    write(cluster, "node-a", "data", "greeting", "hello from a")
    a.unmount("data", "m1")
    cluster.settle()
    lease = cluster.leases.get("data")
    assert lease is not None and not lease.held and lease.owner == "node-a"
    assert len(lease.holders) == 2  # the owner and one replica
    b.mount("data", "m2")
    assert read(cluster, "node-b", "data", "greeting") == "hello from a"
    assert cluster.leases.get("data").owner == "node-b"  # type: ignore[union-attr]
    b.unmount("data", "m2")


def test_a_second_node_cannot_mount_while_the_first_holds_the_lease(
    cluster: VolumeCluster,
) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    a.create("db")
    a.mount("db", "first")
    with pytest.raises(Exception, match="mounted read-write on node node-a"):
        b.mount("db", "second")
    a.mount("db", "again-on-a")  # the same node: a second mount shares the lease
    a.unmount("db", "first")
    with pytest.raises(Exception, match="mounted read-write"):
        b.mount("db", "second")
    a.unmount("db", "again-on-a")
    b.mount("db", "second")
    b.unmount("db", "second")


def test_a_node_declared_down_is_fenced_and_never_mounts_stale_data(
    cluster: VolumeCluster,
) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    a.create("state")
    a.mount("state", "step-1")
    write(cluster, "node-a", "state", "counter", "1")
    a.unmount("state", "step-1")
    cluster.settle()  # replicated: the pre-step snapshot is on another node
    a.mount("state", "step-2")
    write(cluster, "node-a", "state", "counter", "2 (never committed)")
    cluster.leases.down.add("node-a")  # Swarm declares node-a down mid-step
    before = cluster.leases.get("state")
    b.mount("state", "rerun")  # taken over with the next epoch, from the pre-step snapshot
    assert read(cluster, "node-b", "state", "counter") == "1"
    after = cluster.leases.get("state")
    assert after is not None and before is not None
    assert (after.owner, after.epoch) == ("node-b", before.epoch + 1)
    write(cluster, "node-b", "state", "counter", "2")
    b.unmount("state", "rerun")

    cluster.leases.down.discard("node-a")  # it comes back
    with pytest.raises(Refused, match="still has 1 mount"):
        a.mount("state", "too-soon")  # (step-2's container may still write its live/)
    a.unmount("state", "step-2")  # its engine unmounts the dead step
    published = cluster.leases.get("state")
    assert published is not None and published.owner == "node-b"  # refused: fenced
    a.mount("state", "later")
    assert read(cluster, "node-a", "state", "counter") == "2"  # node-b's, not its own
    a.unmount("state", "later")


def test_a_move_sends_the_increment_over_a_pre_copy(cluster: VolumeCluster) -> None:
    a, c = cluster.volumes("node-a"), cluster.volumes("node-c")
    a.create("index")
    a.mount("index", "build")
    live = Path(a.mountpoint("index"))
    for i in range(20):
        (live / f"part-{i}").write_bytes(os.urandom(64 * 1024))
    a.unmount("index", "build")
    cluster.settle()
    pre = cluster.leases.get("index")
    assert pre is not None
    c.pull("index", pre.snapshot, {"node-a": cluster.address("node-a")})  # the pre-copy
    a.mount("index", "update")
    (live / "part-3").write_bytes(b"changed")
    a.unmount("index", "update")
    cluster.settle()
    fetched: list[tuple[list[str], int]] = []  # (what node-c said it has, bytes received)
    real = c.peers.open_send

    @contextlib.contextmanager
    def counting(node, address, volume, snapshot, have):  # type: ignore[no-untyped-def]
        with real(node, address, volume, snapshot, have) as stream:
            counted = Counting(stream)
            yield counted
        fetched.append((list(have), counted.bytes))

    c.peers.open_send = counting  # type: ignore[method-assign]
    c.mount("index", "query")
    assert (Path(c.mountpoint("index")) / "part-3").read_bytes() == b"changed"
    assert (Path(c.mountpoint("index")) / "part-7").stat().st_size == 64 * 1024
    c.unmount("index", "query")
    [(have, size)] = fetched  # one fetch, inside the mount: the increment alone
    assert pre.snapshot in have
    assert size < 16 * 1024  # (the volume is 1.3 MB; the change 7 bytes plus the listing)


class Counting:
    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner = inner
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.inner.readline(size)
        self.bytes += len(data)
        return data


def test_a_mount_refuses_when_the_latest_snapshot_is_on_no_node_that_is_up(
    tmp_path: Path,
) -> None:
    with volume_agents(tmp_path / "agents", NODES, replicas=0) as cluster:
        a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
        a.create("only-here")
        a.mount("only-here", "m")
        write(cluster, "node-a", "only-here", "f", "x")
        a.unmount("only-here", "m")
        cluster.settle()  # (its snapshot taken and published)
        cluster.leases.down.add("node-a")
        with pytest.raises(Refused, match="none of which is up"):
            b.mount("only-here", "m2")
        lease = cluster.leases.get("only-here")
        assert lease is not None and not lease.held  # the failed mount gave it back


def test_old_snapshots_are_pruned(cluster: VolumeCluster) -> None:
    a = cluster.volumes("node-a")
    a.create("busy")
    for i in range(KEEP_SNAPSHOTS + 3):
        a.mount("busy", f"m{i}")
        write(cluster, "node-a", "busy", "n", str(i))
        a.unmount("busy", f"m{i}")
        a.releaser.wait(30.0)  # (else the next mount takes the lease back first)
    cluster.settle()
    assert len(a.store.snapshots("busy")) == KEEP_SNAPSHOTS


def test_names_that_are_not_volume_names_are_refused(cluster: VolumeCluster) -> None:
    with pytest.raises(Refused, match="not a volume name"):
        cluster.volumes("node-a").mount("../etc", "m")


def test_a_publish_that_cannot_reach_the_lease_store_is_made_later_and_keeps_the_writes(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.agent import publishing

    monkeypatch.setattr(publishing, "PUBLISH_RETRY", 0.05)
    b = cluster.volumes("node-b")
    b.create("journal")
    b.mount("journal", "m1")
    write(cluster, "node-b", "journal", "entry", "kept")
    cluster.leases.away = True
    b.unmount("journal", "m1")  # (Docker's unmount returns; the publish waits)
    cluster.leases.away = False
    b.mount("journal", "m2")  # before the publish got through: still this node's
    assert read(cluster, "node-b", "journal", "entry") == "kept"
    b.unmount("journal", "m2")
    cluster.settle()
    lease = cluster.leases.get("journal")
    assert lease is not None and not lease.held and lease.snapshot
    cluster.volumes("node-c").mount("journal", "m3")
    assert read(cluster, "node-c", "journal", "entry") == "kept"
    cluster.volumes("node-c").unmount("journal", "m3")


def test_an_unmount_whose_snapshot_fails_gives_the_lease_back(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = cluster.volumes("node-a")
    logged: list[str] = []
    a.log = logged.append
    a.create("full")
    a.mount("full", "m")
    write(cluster, "node-a", "full", "f", "kept")
    a.unmount("full", "m")
    cluster.settle()
    a.mount("full", "m")
    write(cluster, "node-a", "full", "f", "lost")

    def no_room(name: str, tag: str | None = None, **_: bool) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(a.store, "snapshot", no_room)
    a.unmount("full", "m")  # (returns: the snapshot is taken after)
    cluster.settle()
    assert any("No space left on device" in line and "not kept" in line for line in logged)
    lease = cluster.leases.get("full")
    assert lease is not None and not lease.held  # others may mount it
    b = cluster.volumes("node-b")
    b.mount("full", "m2")
    assert read(cluster, "node-b", "full", "f") == "kept"  # what was published before
    b.unmount("full", "m2")


def test_a_mount_elsewhere_waits_for_the_snapshot_an_unmount_left_to_take(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    a.create("slow")
    a.mount("slow", "m")
    write(cluster, "node-a", "slow", "f", "written on a")
    queued = releases_held(a, monkeypatch)  # (taken when we say)
    a.unmount("slow", "m")
    lease = cluster.leases.get("slow")
    assert lease is not None and lease.held and lease.releasing and lease.owner == "node-a"
    with pytest.raises(Refused, match="waits to be published"):
        a.forget("slow")
    threading.Timer(0.3, queued[0]).start()
    b.mount("slow", "m2")  # (waits for node-a to publish, rather than being refused)
    assert read(cluster, "node-b", "slow", "f") == "written on a"
    b.unmount("slow", "m2")


def test_a_mount_on_the_same_node_before_the_snapshot_publishes_what_was_written_first(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = cluster.volumes("node-a")
    a.create("again")
    a.mount("again", "m1")
    write(cluster, "node-a", "again", "f", "first")
    queued = releases_held(a, monkeypatch)
    a.unmount("again", "m1")
    a.mount("again", "m2")  # (a container restarted: before the snapshot was taken)
    lease = cluster.leases.get("again")
    assert lease is not None and lease.held and not lease.releasing
    assert lease.snapshot  # (what m1 wrote is published: an engine restart now loses only m2's)
    assert read(cluster, "node-a", "again", "f") == "first"
    write(cluster, "node-a", "again", "f", "second")
    a.void_mounts()  # (the engine restarted: m2 is void)
    monkeypatch.undo()
    for work in queued:
        work()  # (the release queued by m1's unmount: nothing left)
    cluster.volumes("node-b").mount("again", "m3")
    assert read(cluster, "node-b", "again", "f") == "first"


def test_a_snapshot_that_fails_gives_the_lease_back_once_the_store_answers(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.agent import releasing

    monkeypatch.setattr(releasing, "GIVE_BACK_RETRY", 0.05)
    a = cluster.volumes("node-b")  # (a worker: its leases through the manager)
    a.create("stuck")
    a.mount("stuck", "m")

    def no_room(name: str, tag: str | None = None, **_: bool) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(a.store, "snapshot", no_room)
    real_give_back, failures = a.leases.give_back, [2]

    def flaky(volume: str, epoch: int):  # type: ignore[no-untyped-def]
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("no manager answers")
        return real_give_back(volume, epoch)

    monkeypatch.setattr(a.leases, "give_back", flaky)
    a.unmount("stuck", "m")
    deadline = time.monotonic() + 10
    while cluster.leases.get("stuck").held and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    lease = cluster.leases.get("stuck")
    assert lease is not None and not lease.held and failures == [0]
    assert not a.records.state("stuck").get("releasing")


def test_an_unmount_the_lease_store_does_not_answer_still_publishes_in_the_background(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = cluster.volumes("node-b")  # (a worker: its leases through the manager)
    a.create("away")
    a.mount("away", "m")
    write(cluster, "node-b", "away", "f", "kept")

    def away(volume: str, epoch: int) -> None:
        raise ConnectionError("no manager answers")

    monkeypatch.setattr(a.leases, "releasing", away)
    a.unmount("away", "m")  # (returns at once all the same)
    assert a.records.state("away")["releasing"]  # (noted first: a restart takes it)
    cluster.settle()
    lease = cluster.leases.get("away")
    assert lease is not None and lease.snapshot and not lease.held


def test_a_node_declared_down_while_releasing_is_taken_over_from_the_snapshot_before(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    a.create("lost")
    a.mount("lost", "m1")
    write(cluster, "node-a", "lost", "f", "published")
    a.unmount("lost", "m1")
    cluster.settle()
    a.mount("lost", "m2")
    write(cluster, "node-a", "lost", "f", "never published")
    releases_held(a, monkeypatch)  # (never taken: it went down first)
    a.unmount("lost", "m2")
    cluster.leases.down.add("node-a")
    b.mount("lost", "m3")
    assert read(cluster, "node-b", "lost", "f") == "published"
    b.unmount("lost", "m3")


def test_a_worker_declared_down_is_fenced_through_the_manager_s_agent_too(
    cluster: VolumeCluster,
) -> None:
    """node-b reaches the leases through node-a's agent: a refusal keeps its kind, so a
    fenced worker does not try to publish again and again."""
    b, c = cluster.volumes("node-b"), cluster.volumes("node-c")
    b.create("ledger")
    b.mount("ledger", "old")
    write(cluster, "node-b", "ledger", "line", "never published")
    cluster.leases.down.add("node-b")
    c.mount("ledger", "new")
    c.unmount("ledger", "new")
    cluster.leases.down.discard("node-b")
    b.unmount("ledger", "old")
    assert not b.records.state("ledger").get("unpublished")  # refused, not retried
    lease = cluster.leases.get("ledger")
    assert lease is not None and lease.owner == "node-c"


def test_forgetting_a_copy_never_forgets_the_last_one(cluster: VolumeCluster) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    a.create("shared")
    a.mount("shared", "m")
    write(cluster, "node-a", "shared", "f", "x")
    a.unmount("shared", "m")
    cluster.settle()
    lease = cluster.leases.get("shared")
    assert lease is not None and set(lease.holders) == {"node-a", "node-b"}
    a.forget("shared")  # (docker volume rm on node-a)
    assert not a.store.exists("shared")
    assert cluster.leases.get("shared").holders == ("node-b",)  # type: ignore[union-attr]
    with pytest.raises(Exception, match="only copy"):
        b.forget("shared")
    assert b.store.exists("shared")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("take", {"volume": "ledger"}),
        ("give_back", {"volume": "ledger", "epoch": 1}),
        ("release", {"volume": "ledger", "epoch": 1, "snapshot": ""}),
        ("seeded", {"volume": "ledger", "snapshot": "s"}),
        ("unhold", {"volume": "ledger"}),
        ("take", {"volume": "ledger", "node": ""}),
        ("take", {"volume": "ledger", "node": 7}),
    ],
)
def test_a_lease_call_for_a_node_names_that_node(
    cluster: VolumeCluster, route: str, body: dict[str, object]
) -> None:
    """A call that acts for the node that asks must say which node that is: never taken
    as the manager itself, never an empty or odd name as a lease's owner."""
    manager = NODES[0]
    client = AgentClient(cluster.address(manager), TEST_KEY, manager)
    client.call("POST", "leases/create", {"volume": "ledger"})
    with pytest.raises(AgentError) as refused:
        client.call("POST", f"leases/{route}", body)
    assert refused.value.status == 400
    lease = cluster.leases.get("ledger")
    assert lease is not None and (lease.owner, lease.held, lease.epoch) == ("", False, 0)


@pytest.mark.parametrize("replicated", [True, False], ids=["replicated-first", "in-the-mount"])
def test_a_hand_off_walks_the_volume_once_and_moves_only_what_changed(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch, replicated: bool
) -> None:
    a = cluster.volumes("node-a")
    a.create("big")
    a.mount("big", "write")
    live = Path(a.mountpoint("big"))
    (live / "parts").mkdir()
    for i in range(200):
        (live / "parts" / f"p{i}").write_bytes(os.urandom(4096))
    a.unmount("big", "write")
    cluster.settle()
    lease = cluster.leases.get("big")
    assert lease is not None
    [replica] = [h for h in lease.holders if h != "node-a"]
    b = cluster.volumes(replica)
    a.mount("big", "update")
    (live / "parts" / "p7").write_bytes(b"changed")
    (live / "parts" / "p8").unlink()
    (live / "added").write_text("new")
    expected = {str(p.relative_to(live)): p.read_bytes() for p in live.rglob("*") if p.is_file()}

    walks: list[str] = []  # every walk of a tree: the live folder's scans, and the others
    real_walk, real_scan = safefs.walk, live_index.scan
    monkeypatch.setattr(safefs, "walk", lambda *a, **k: walks.append("walk") or real_walk(*a, **k))
    monkeypatch.setattr(
        live_index, "scan", lambda *a, **k: walks.append("scan") or real_scan(*a, **k)
    )
    later: list[str] = []
    for node in (a, b):
        monkeypatch.setattr(node, "settle_later", later.append)  # (trees: after the hand-off)
    if not replicated:  # the next mount fetches the increment itself
        monkeypatch.setattr(a.replicator, "later", lambda *args: None)
    a.unmount("big", "update")
    cluster.settle()  # (the replication: node-b takes the increment while it is idle)
    b.mount("big", "next")
    assert walks == ["scan"]  # node-a's walk of its live folder; nothing else walks
    moved = Path(b.mountpoint("big"))
    assert {str(p.relative_to(moved)): p.read_bytes() for p in moved.rglob("*") if p.is_file()} == (
        expected
    )
    published = cluster.leases.get("big")
    assert published is not None
    b.unmount("big", "next")
    monkeypatch.undo()
    cluster.settle()  # (node-b's snapshot, replicated back)
    for node in (a, b):
        node.settle("big")
        for snap in node.store.snapshots("big"):
            assert (node.store.snapshot_folder("big", snap) / "tree").is_dir()

    def tree_of(node: NodeVolumes) -> dict[str, bytes]:
        [snap] = [s for s in node.store.snapshots("big") if s.uuid == published.snapshot]
        tree = node.store.tree("big", snap)
        return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}

    assert tree_of(a) == tree_of(b) == expected


def test_a_snapshot_being_sent_is_not_pruned(cluster: VolumeCluster) -> None:
    a = cluster.volumes("node-a")
    a.create("sent")
    a.mount("sent", "m0")
    write(cluster, "node-a", "sent", "n", "0")
    a.unmount("sent", "m0")
    cluster.settle()
    oldest = a.store.snapshots("sent")[0]
    with a.settler.busy.hold("sent", [oldest.uuid]):  # (as a send of it holds it)
        for i in range(1, KEEP_SNAPSHOTS + 2):
            a.mount("sent", f"m{i}")
            write(cluster, "node-a", "sent", "n", str(i))
            a.unmount("sent", f"m{i}")
            a.releaser.wait(30.0)  # (else the next mount takes the lease back first)
        cluster.settle()
        assert oldest.uuid in [s.uuid for s in a.store.snapshots("sent")]
    a.settle("sent")
    assert len(a.store.snapshots("sent")) == KEEP_SNAPSHOTS


def test_each_hand_off_is_logged_with_its_parts_and_their_times(cluster: VolumeCluster) -> None:
    a = cluster.volumes("node-a")
    logged: list[str] = []
    a.log = logged.append
    a.create("timed")
    a.mount("timed", "m1")
    write(cluster, "node-a", "timed", "f", "x" * 100)
    a.unmount("timed", "m1")
    cluster.settle()
    lease = cluster.leases.get("timed")
    assert lease is not None
    [other] = [n for n in NODES if n not in lease.holders]  # (neither the owner nor a replica)
    cluster.volumes(other).log = logged.append
    cluster.volumes(other).mount("timed", "m2")
    assert logged[0].startswith("mount of timed: ")
    assert "made empty in " in logged[0]  # (a new volume: nothing published yet)
    assert logged[1].startswith("unmount of timed: ")
    assert "its snapshot is taken and published in the background" in logged[1]
    assert logged[2].startswith("snapshot of timed: ")
    assert f"snapshot {lease.snapshot[:12]} of 1 files in " in logged[2]
    assert "100 bytes copied; published in " in logged[2]
    assert logged[3].startswith("mount of timed: ")
    assert f"brought to snapshot {lease.snapshot[:12]} in " in logged[3]
    cluster.volumes(other).unmount("timed", "m2")


def test_settling_a_volume_asked_many_times_runs_one_thread_and_once_more_after(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = cluster.volumes("node-a")
    started, gate = threading.Event(), threading.Event()
    settled: list[str] = []

    def slow(name: str) -> None:
        settled.append(name)
        started.set()
        gate.wait(10)

    monkeypatch.setattr(a.settler, "settle", slow)
    a.settler.later("v")
    assert started.wait(10)
    for _ in range(5):  # (asked while the first one works: settled once more, not five times)
        a.settler.later("v")
    assert len(a.settler.threads.running) == 1
    gate.set()
    a.settler.wait(10)
    assert settled == ["v", "v"]
    a.settler.later("v")  # (asked after: settled again)
    a.settler.wait(10)
    assert settled == ["v", "v", "v"]


def test_a_snapshot_is_on_the_disk_before_it_is_published_or_said_to_be_kept(
    cluster: VolumeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cluster.volumes("node-a"), cluster.volumes("node-b")
    synced: list[tuple[str, bool]] = []  # (node, whether the lease named it then)

    def recording(node: str, real):  # type: ignore[no-untyped-def]
        def sync(name: str, snap) -> None:  # type: ignore[no-untyped-def]
            lease = cluster.leases.get(name)
            synced.append((node, lease is not None and snap.uuid in lease.snapshot))
            real(name, snap)

        return sync

    monkeypatch.setattr(a.store, "sync", recording("node-a", a.store.sync))
    monkeypatch.setattr(b.store, "sync", recording("node-b", b.store.sync))
    a.create("durable")
    a.mount("durable", "m")
    write(cluster, "node-a", "durable", "f", "x")
    a.unmount("durable", "m")
    cluster.settle()
    lease = cluster.leases.get("durable")
    assert lease is not None and lease.snapshot and "node-b" in lease.holders
    assert synced == [("node-a", False), ("node-b", True)]  # (the publish after the first)
