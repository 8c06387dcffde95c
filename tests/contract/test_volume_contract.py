"""What every named-volume backend keeps (:class:`~dockyard.execution.ports.VolumeBackend`):
this machine's volumes, the fake, and the Swarm's volumes through real node agents on
loopback (the manager's agent keeping the leases in memory). What only some offer has its
own suite: snapshots' history in ``test_storage_contract.py``, moves in the swarm tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.backends.local.ports import LocalVolumes
from dockyard.backends.swarm.ports import AgentPool
from dockyard.backends.swarm.volumes import SwarmVolumes
from dockyard.disk.volumes import VolumeInUse, VolumeStore
from dockyard.errors import InvalidInput, UnknownReference
from dockyard.execution.ports import PlacedVolumes, VolumeBackend, VolumeHistory
from dockyard.state.hashing import InputHasher
from dockyard.state.store import Store
from dockyard.testing import FakeVolumes
from dockyard.testing.agents import TEST_KEY, volume_agents

KINDS = ["local", "fake", "swarm"]
NODES = ["n1", "n2"]


@pytest.fixture(params=KINDS)
def volumes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VolumeBackend]:
    if request.param == "local":
        yield LocalVolumes(VolumeStore(tmp_path / "home"))
    elif request.param == "fake":
        yield FakeVolumes(tmp_path / "fake")
    else:
        with volume_agents(tmp_path / "agents", NODES) as cluster:
            pool = AgentPool(
                lambda: {node: cluster.address(node) for node in NODES},
                TEST_KEY,
                str(tmp_path / "agents"),
            )
            yield SwarmVolumes(
                pool,
                lambda: {NODES[0]: cluster.address(NODES[0])},
                local=VolumeStore(tmp_path / "this-machine"),
                names=lambda: {"n1": "one", "n2": "two"},
            )


def test_an_ensured_volume_exists_is_listed_and_inspected(volumes: VolumeBackend) -> None:
    assert not volumes.exists("ledger")
    volumes.ensure("ledger")
    volumes.ensure("ledger")  # (again: nothing to do)
    assert volumes.exists("ledger")
    assert [info.name for info in volumes.all()] == ["ledger"]
    info = volumes.inspect("ledger")
    assert (info.name, info.files) == ("ledger", 0)


def test_an_unknown_volume_is_said_so(volumes: VolumeBackend) -> None:
    with pytest.raises(UnknownReference):
        volumes.inspect("nothing-here")


def test_a_removed_volume_is_gone(volumes: VolumeBackend) -> None:
    volumes.ensure("scratch")
    volumes.remove("scratch")
    assert not volumes.exists("scratch")
    assert volumes.all() == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x\n", "-dash"])
def test_a_name_outside_the_rule_is_refused_before_anything_is_made(
    volumes: VolumeBackend, name: str
) -> None:
    with pytest.raises(InvalidInput):
        volumes.ensure(name)
    assert volumes.all() == []


def test_a_writer_is_refused_beside_another_and_a_waiting_one_gets_it(
    volumes: VolumeBackend,
) -> None:
    volumes.ensure("db")
    done = threading.Event()
    with volumes.hold("db", exclusive=True):
        with pytest.raises(VolumeInUse), volumes.hold("db", exclusive=True):
            pass

        def wait_for_it() -> None:
            with volumes.hold("db", exclusive=True, wait=True):
                done.set()

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert not done.wait(0.3)  # (held: it waits)
    waiter.join(timeout=30)
    assert done.is_set()


def test_readers_share_a_volume(volumes: VolumeBackend) -> None:
    volumes.ensure("refs")
    with volumes.hold("refs", exclusive=False), volumes.hold("refs", exclusive=False):
        pass


def test_a_new_volume_s_digest_is_the_same_each_time_and_it_has_no_history(
    volumes: VolumeBackend, tmp_path: Path
) -> None:
    volumes.ensure("fresh")
    store = Store(tmp_path / "state" / "state.db")
    hasher = InputHasher(store)
    assert volumes.digest("fresh", hasher) == volumes.digest("fresh", hasher)
    assert volumes.snapshots("fresh") == []
    store.close()


def test_each_backend_offers_what_its_kind_keeps(volumes: VolumeBackend) -> None:
    """One machine's volumes keep their history in reach; a cluster's are placed on its
    nodes: the command line asks these interfaces, never a backend by name."""
    if isinstance(volumes, SwarmVolumes):
        assert isinstance(volumes, PlacedVolumes) and not isinstance(volumes, VolumeHistory)
        volumes.ensure("placed")
        (placed,) = volumes.placements()
        assert (placed.volume, placed.mounted, placed.epoch) == ("placed", False, 0)
        assert volumes.node("one") == "n1"
    else:
        assert isinstance(volumes, VolumeHistory) and not isinstance(volumes, PlacedVolumes)
