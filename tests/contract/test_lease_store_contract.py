"""One contract for the stores that keep the volumes' leases: the in-memory one the unit
tests use (:class:`~dockyard.testing.fake_leases.MemoryLeases`) and Swarm's own Raft store
(:class:`~dockyard.agent.swarm_leases.SwarmLeases`, configs updated at their version index) on a
real local swarm's manager. Every rule of :mod:`dockyard.agent.leases` rests on these."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from dockyard.agent.engine import Engine
from dockyard.agent.leases import Lease, LeaseStore, NoSuchVolume, change
from dockyard.agent.swarm_leases import SwarmLeases
from dockyard.testing.fake_leases import MemoryLeases

NODES = {"n1": "10.0.0.1", "n2": "10.0.0.2"}


@pytest.fixture(
    params=[
        "memory",
        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm]),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[LeaseStore]:
    if request.param == "memory":
        yield MemoryLeases(NODES)
        return
    swarm = request.getfixturevalue("local_swarm")
    leases = SwarmLeases(Engine(str(swarm.manager.socket)))
    before = {lease.volume for lease in leases.all()}
    yield leases
    for lease in leases.all():  # (what this test made; the session's volumes stay)
        if lease.volume not in before:
            leases.remove(lease.volume)


def _volume() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def test_a_volume_without_a_record_has_none(store: LeaseStore) -> None:
    assert store.get(_volume()) is None


def test_create_makes_one_record_and_a_second_create_finds_it(store: LeaseStore) -> None:
    name = _volume()
    made = store.create(name)
    assert (made.volume, made.epoch, made.owner, made.held) == (name, 0, "", False)
    assert made.incarnation  # (a volume removed and made again is another one)
    again = store.create(name)
    assert again.incarnation == made.incarnation and again.version == made.version
    assert store.get(name) == made
    assert name in [lease.volume for lease in store.all()]


def test_a_swap_at_the_current_version_writes_and_moves_the_version_on(
    store: LeaseStore,
) -> None:
    made = store.create(_volume())
    written = store.swap(made, replace(made, epoch=1, owner="n1"))
    assert written is not None
    assert (written.epoch, written.owner) == (1, "n1") and written.version > made.version
    assert store.get(made.volume) == written


def test_a_swap_at_an_old_version_is_refused_and_changes_nothing(store: LeaseStore) -> None:
    made = store.create(_volume())
    first = store.swap(made, replace(made, epoch=1, owner="n1"))
    assert first is not None
    assert store.swap(made, replace(made, epoch=1, owner="n2")) is None  # (made is stale)
    assert store.get(made.volume) == first


def test_a_removed_volume_is_gone_and_cannot_be_swapped(store: LeaseStore) -> None:
    made = store.create(_volume())
    store.remove(made.volume)
    assert store.get(made.volume) is None
    with pytest.raises(NoSuchVolume):
        store.swap(made, replace(made, epoch=1))
    store.remove(made.volume)  # (twice: nothing to do)


def test_racing_changes_each_apply_once(store: LeaseStore) -> None:
    """Four writers raise the epoch five times each through read-apply-swap: every change
    lands exactly once (a compare-and-swap, not last-writer-wins)."""
    made = store.create(_volume())

    def raise_epoch() -> None:
        for _ in range(5):
            change(store, made.volume, lambda lease: replace(lease, epoch=lease.epoch + 1))

    writers = [threading.Thread(target=raise_epoch) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    final = store.get(made.volume)
    assert final is not None and final.epoch == 20


def test_the_nodes_that_are_up_are_not_gone_and_a_stranger_is(store: LeaseStore) -> None:
    up = store.nodes()
    assert up and all(address for address in up.values())
    assert not any(store.gone(node) for node in up)
    assert store.gone("no-such-node")


def test_a_lease_round_trips_every_field(store: LeaseStore) -> None:
    made = store.create(_volume())
    full = replace(
        made,
        epoch=3,
        owner="n1",
        held=True,
        snapshot="s" * 32,
        holders=("n2",),
        published=1765000000.25,
    )
    written = store.swap(made, full)
    assert isinstance(written, Lease)
    assert written == full  # (every field but the store's version)
