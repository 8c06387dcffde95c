"""The lease rules, the compare-and-swap loop over a store, and the signed frames that
carry volume streams between agents."""

from __future__ import annotations

import io
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.agent import leases
from dockyard.agent.frames import MAX_FRAME, FrameError, FrameReader, FrameWriter
from dockyard.agent.leases import Fenced, Held, Lease, LeaseError, Releasing
from dockyard.testing.fake_leases import MemoryLeases


def test_taking_a_free_lease_raises_the_epoch() -> None:
    lease = leases.taken(Lease("v", epoch=3, owner="a"), "b", owner_gone=False)
    assert (lease.owner, lease.epoch, lease.held) == ("b", 4, True)


def test_a_held_lease_is_refused_to_another_node_until_its_holder_is_gone() -> None:
    held = Lease("v", epoch=2, owner="a", held=True)
    with pytest.raises(Held, match="mounted read-write on node a"):
        leases.taken(held, "b", owner_gone=False)
    assert leases.taken(held, "a", owner_gone=False) == held  # its holder again: unchanged
    taken = leases.taken(held, "b", owner_gone=True)
    assert (taken.owner, taken.epoch) == ("b", 3)


def test_a_release_under_a_stale_epoch_is_fenced() -> None:
    now = Lease("v", epoch=5, owner="b", held=True, snapshot="s1", holders=("a", "b"))
    with pytest.raises(Fenced, match="epoch 4"):
        leases.released(now, "a", 4, "s2", 1.0)
    with pytest.raises(Fenced):
        leases.released(now, "b", 4, "s2", 1.0)  # the right node, an old epoch
    done = leases.released(now, "b", 5, "s2", 1.0)
    assert (done.held, done.snapshot, done.holders) == (False, "s2", ("b",))
    with pytest.raises(Fenced):
        leases.released(done, "b", 5, "s3", 2.0)  # not held any more


def test_a_releasing_lease_is_waited_for_taken_back_by_its_holder_or_taken_over() -> None:
    held = Lease("v", epoch=2, owner="a", held=True, snapshot="s1", holders=("a", "b"))
    with pytest.raises(Fenced):
        leases.releasing(held, "a", 1)  # (an old epoch)
    with pytest.raises(Fenced):
        leases.releasing(held, "b", 2)  # (not its holder)
    releasing = leases.releasing(held, "a", 2)
    assert (releasing.held, releasing.releasing) == (True, True)
    assert leases.releasing(releasing, "a", 2) == releasing  # (said again: unchanged)
    with pytest.raises(Releasing, match="being released by node a"):
        leases.taken(releasing, "b", owner_gone=False)
    with pytest.raises(Held):  # (a planned hand-over waits for the publish too)
        leases.handed(releasing, "b")
    back = leases.taken(releasing, "a", owner_gone=False)  # (mounted there again)
    assert (back.held, back.releasing, back.epoch) == (True, False, 2)
    over = leases.taken(releasing, "b", owner_gone=True)
    assert (over.owner, over.epoch, over.held, over.releasing) == ("b", 3, True, False)
    done = leases.released(releasing, "a", 2, "s2", 1.0)
    assert (done.held, done.releasing, done.snapshot) == (False, False, "s2")
    given = leases.given_back(releasing, "a", 2)
    assert (given.held, given.releasing, given.snapshot) == (False, False, "s1")
    with pytest.raises(Fenced):
        leases.releasing(done, "a", 2)  # (free: nothing to release)
    assert Lease.from_json(releasing.to_json()) == releasing


def test_holders_are_added_for_the_published_snapshot_only() -> None:
    lease = Lease("v", snapshot="s2", holders=("a",))
    assert leases.with_holder(lease, "s2", "b").holders == ("a", "b")
    assert leases.with_holder(lease, "s1", "b") == lease  # a replica of an older one


def test_a_planned_hand_over_needs_the_latest_snapshot_on_the_new_node() -> None:
    lease = Lease("v", epoch=1, owner="a", snapshot="s1", holders=("a",))
    with pytest.raises(LeaseError, match="does not keep the latest"):
        leases.handed(lease, "b")
    moved = leases.handed(Lease("v", epoch=1, owner="a", snapshot="s1", holders=("a", "b")), "b")
    assert (moved.owner, moved.epoch) == ("b", 2)
    with pytest.raises(Held):
        leases.handed(Lease("v", epoch=1, owner="a", held=True), "b")


def test_racing_takers_get_one_lease_each_in_turn_and_epochs_never_repeat() -> None:
    store = MemoryLeases({"a": "", "b": "", "c": ""})
    store.create("v")
    winners: list[Lease] = []
    refused: list[str] = []

    def take(node: str) -> None:
        try:
            winners.append(
                leases.change(store, "v", lambda lease: leases.taken(lease, node, False))
            )
        except Held:
            refused.append(node)

    threads = [threading.Thread(target=take, args=(n,)) for n in "abc" * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    owners = {lease.owner for lease in winners}
    assert len(owners) == 1  # one node took it; its own later takes changed nothing
    assert len(winners) + len(refused) == 12
    assert store.get("v").epoch == 1  # type: ignore[union-attr]


def test_a_volume_without_a_record_is_said_so() -> None:
    with pytest.raises(leases.NoSuchVolume, match="no volume 'x'"):
        leases.change(MemoryLeases({}), "x", lambda lease: lease)


@given(st.binary(max_size=3 * MAX_FRAME + 7), st.integers(1, 5000))
def test_frames_give_back_what_was_written(data: bytes, piece: int) -> None:
    out = io.BytesIO()
    writer = FrameWriter(out, b"k" * 32, "nonce-1")
    writer.write(data[:piece])
    writer.write(data[piece:])
    writer.close()
    reader = FrameReader(io.BytesIO(out.getvalue()), b"k" * 32, "nonce-1")
    got = b""
    while chunk := reader.read(piece):
        got += chunk
    assert got == data


def _framed(data: bytes, key: bytes = b"k" * 32, context: str = "n") -> bytes:
    out = io.BytesIO()
    writer = FrameWriter(out, key, context)
    writer.write(data)
    writer.close()
    return out.getvalue()


def test_lines_are_read_across_frames() -> None:
    framed = _framed(b"first line\nsecond\n" + b"x" * MAX_FRAME + b"\nend")
    reader = FrameReader(io.BytesIO(framed), b"k" * 32, "n")
    assert reader.readline() == b"first line\n"
    assert reader.readline(3) == b"sec"
    assert reader.readline() == b"ond\n"
    assert len(reader.readline()) == MAX_FRAME + 1
    assert reader.readline() == b"end"
    assert reader.read() == b""


@pytest.mark.parametrize(
    "framed, problem",
    [
        (_framed(b"data", key=b"o" * 32), "not what the cluster key signed"),
        (_framed(b"data", context="another request"), "not what the cluster key signed"),
        (_framed(b"data")[:-40], "ended early"),
        (_framed(b"data").replace(b"data", b"dada"), "not what the cluster key signed"),
        ((MAX_FRAME + 1).to_bytes(4, "big") + b"x", "longer than"),
    ],
)
def test_a_stream_that_is_not_signed_or_cut_short_never_ends(framed: bytes, problem: str) -> None:
    reader = FrameReader(io.BytesIO(framed), b"k" * 32, "n")
    with pytest.raises(FrameError, match=problem):
        reader.read()
