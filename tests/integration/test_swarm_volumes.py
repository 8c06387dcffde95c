"""Volumes that follow their containers on a real three-node Swarm (issue 14): plain
``docker run --volume-driver dockyard`` on any node, through the node agents' volume
plugin, with leases kept in Swarm's own store."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from dockyard.agent.leases import PREFIX, Lease
from dockyard.runtime.swarm import SwarmRuntime
from dockyard.runtime.swarm_agents import deploy
from dockyard.storage.agents import AgentPool
from dockyard.testing.swarm import LocalSwarm, SwarmNode
from tests.conftest import BUSYBOX_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.swarm]


@pytest.fixture
def agents(swarm_runtime: SwarmRuntime) -> Iterator[AgentPool]:
    yield deploy(swarm_runtime, print)


@pytest.fixture
def volume(local_swarm: LocalSwarm, agents: AgentPool) -> Iterator[str]:
    name = f"v-{uuid.uuid4().hex[:10]}"
    yield name
    for node in local_swarm.nodes:  # (the containers first: then the volume can go)
        api = node.engine.client()
        for container in api.containers(all=True, filters={"label": f"test-volume={name}"}):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container["Id"], force=True)
        api.close()
    api = local_swarm.manager.engine.client()
    with contextlib.suppress(docker.errors.APIError):
        api.remove_volume(name)
    api.close()


def docker_run(node: SwarmNode, volume: str, script: str, *, wait: bool = True) -> Any:
    """``docker run -v VOLUME:/data --volume-driver dockyard busybox sh -c SCRIPT`` on
    ``node``'s engine; its output (or, with ``wait=False``, its container's id)."""
    api = node.engine.client()
    try:
        container = api.create_container(
            BUSYBOX_IMAGE,
            ["sh", "-c", script],
            labels={"test-volume": volume},
            host_config=api.create_host_config(binds=[f"{volume}:/data"], volume_driver="dockyard"),
        )["Id"]
        api.start(container)
        if not wait:
            return container
        status = api.wait(container, timeout=120)["StatusCode"]
        output = api.logs(container).decode()
        api.remove_container(container)
        assert status == 0, output
        return output
    finally:
        api.close()


def lease(local_swarm: LocalSwarm, volume: str) -> Lease:
    api = local_swarm.manager.engine.client()
    try:
        [config] = [c for c in api.configs() if c["Spec"]["Name"] == PREFIX + volume]
    finally:
        api.close()
    return Lease.from_json(json.loads(config["Spec"]["Labels"]["dockyard.lease"]))


def test_written_with_docker_run_on_one_node_read_on_another(
    local_swarm: LocalSwarm, volume: str
) -> None:
    """Flocker's own demo: a file written into a volume on node 1 with plain ``docker run``
    is read on node 2 with the same command."""
    one, two, three = local_swarm.nodes
    docker_run(one, volume, "echo 'written on node 1' > /data/greeting")
    assert docker_run(two, volume, "cat /data/greeting") == "written on node 1\n"
    docker_run(three, volume, "echo 'and on node 3' >> /data/greeting")
    assert docker_run(one, volume, "cat /data/greeting") == "written on node 1\nand on node 3\n"
    record = lease(local_swarm, volume)
    assert record.owner == _node_id(local_swarm, one) and not record.held
    assert record.epoch == 4  # one take per mount that moved it (or took it again)


def test_a_second_node_cannot_mount_a_volume_another_node_holds(
    local_swarm: LocalSwarm, volume: str
) -> None:
    _, two, three = local_swarm.nodes
    holder = docker_run(two, volume, "echo held > /data/f; sleep 60", wait=False)
    _until(lambda: lease(local_swarm, volume).held, "the lease to be held")
    with pytest.raises(docker.errors.APIError, match="mounted read-write on node"):
        docker_run(three, volume, "cat /data/f")
    assert docker_run(two, volume, "cat /data/f") == "held\n"  # its own node shares it
    api = two.engine.client()
    api.remove_container(holder, force=True)
    api.close()
    _until(lambda: not lease(local_swarm, volume).held, "the lease to be given back")
    assert docker_run(three, volume, "cat /data/f") == "held\n"


def test_the_volume_is_seen_by_every_node_s_engine(local_swarm: LocalSwarm, volume: str) -> None:
    one, two, _ = local_swarm.nodes
    api = one.engine.client()
    api.create_volume(volume, driver="dockyard")
    api.close()
    api = two.engine.client()
    try:
        found = api.inspect_volume(volume)
        assert found["Driver"] == "dockyard" and found["Scope"] == "global"
        assert found["Status"]["epoch"] == 0
    finally:
        api.close()


def _node_id(local_swarm: LocalSwarm, node: SwarmNode) -> str:
    api = node.engine.client()
    try:
        return str(api.info()["Swarm"]["NodeID"])
    finally:
        api.close()


def _until(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.2)
