"""Volumes that follow their containers on a real three-node Swarm (issue 14): plain
``docker run --volume-driver dockyard`` on any node, through the node agents' volume
plugin, with leases kept in Swarm's own store."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockyard.agent import DEFAULT_PORT
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.leases import Lease
from dockyard.agent.swarm_leases import config_name
from dockyard.backends.swarm.agents import ROOT_ENV, deploy, read_cluster_key
from dockyard.backends.swarm.ports import AgentPool
from dockyard.backends.swarm.runtime import SwarmRuntime
from dockyard.cli import main
from dockyard.testing.swarm import LocalSwarm, SwarmNode
from dockyard.testing.swarm import main as swarm_main
from tests.conftest import BUSYBOX_IMAGE
from tests.integration.test_swarm_agents import _latest
from tests.integration.test_swarm_docker import _ended, _run_in_background

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
        [config] = [c for c in api.configs() if c["Spec"]["Name"] == config_name(volume)]
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


def outputs_of(path: Path) -> dict[str, tuple[str, str]]:
    """The latest run's instances: (node, output digest)."""
    return {instance: (node, output) for instance, node, output in _latest(path)}


def output_file(path: Path, instance: str, name: str) -> str:
    node, digest = outputs_of(path)[instance]
    return (Path(os.environ[ROOT_ENV]) / node / "outputs" / digest / name).read_text()


def test_a_pipeline_s_volume_follows_its_writers_and_its_readers_read_a_snapshot(
    tmp_path: Path,
    on_swarm: LocalSwarm,
    swarm_runtime: SwarmRuntime,
    volume: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A volume seeded from this machine, two writers in turn, then readers (too big to
    share a node) on other nodes too: each sees what the writers left, from the volume's
    snapshot, read-only."""
    node_cpus = min(n.capacity.cpus for n in swarm_runtime.nodes())
    path = tmp_path / "dockyard.yaml"
    path.write_text(
        f"""
version: 1
name: stateful
defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.25, memory: 32m}}}}
volumes: {{{volume}: {{seed: ./seed}}}}
steps:
  first:
    volumes: {{{volume}: /state}}
    command: "sh -c 'cat /state/seeded > /out/seen; echo one >> /state/log'"
  hog:
    needs: [first]
    resources: {{cpus: {node_cpus * 0.9:g}, memory: 32m}}
    command: "sleep 3"
  second:
    needs: [first]
    volumes: {{{volume}: /state}}
    command: "sh -c 'sleep 1; cat /state/log > /out/seen; echo two >> /state/log'"
  read:
    needs: [second]
    scatter: {{n: [1, 2, 3]}}
    resources: {{cpus: {node_cpus * 0.6:g}, memory: 32m}}
    volumes: {{{volume}: {{path: /state, readonly: true}}}}
    command: "sh -c 'cat /state/log > /out/read; touch /state/x 2>/out/refused || true'"
"""
    )
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "seeded").write_text("from the seed\n")
    assert main(["run", "-f", str(path), "--backend", "swarm"]) == 0, capsys.readouterr()
    assert output_file(path, "first", "seen") == "from the seed\n"
    assert output_file(path, "second", "seen") == "one\n"
    reads = {output_file(path, f"read[{n}]", "read") for n in (1, 2, 3)}
    assert reads == {"one\ntwo\n"}
    assert "Read-only file system" in output_file(path, "read[1]", "refused")
    readers = {outputs_of(path)[f"read[{n}]"][0] for n in (1, 2, 3)}
    assert readers - {outputs_of(path)["second"][0]}  # (read on a node it was not written on)

    capsys.readouterr()
    assert main(["volume", "--backend", "swarm", "inspect", volume]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lease"]["owner"] == outputs_of(path)["second"][0]
    assert not shown["lease"]["mounted"] and shown["lease"]["epoch"] >= 2
    _until(lambda: len(lease(on_swarm, volume).holders) > 1, "a replica")

    # A second run: the writers run again (a step that writes a volume is not cached
    # unless it says so) on what the first run left; the readers, whose key is the
    # snapshot they read, run again too.
    capsys.readouterr()
    assert main(["run", "-f", str(path), "--backend", "swarm"]) == 0
    printed = capsys.readouterr().out
    assert "cached    read[1]" not in printed and "started   read[1]" in printed
    assert output_file(path, "read[2]", "read") == "one\ntwo\none\ntwo\n"


def test_volume_move_pre_copies_and_hands_the_lease_over(
    local_swarm: LocalSwarm, volume: str, capsys: pytest.CaptureFixture[str], on_swarm: LocalSwarm
) -> None:
    one, _, three = local_swarm.nodes
    docker_run(one, volume, "echo moved > /data/f")
    target = _node_id(local_swarm, three)
    capsys.readouterr()
    assert main(["volume", "--backend", "swarm", "move", volume, three.name]) == 0
    assert f"is on node {three.name}" in capsys.readouterr().out
    record = lease(local_swarm, volume)
    assert record.owner == target and target in record.holders and not record.held
    assert main(["volume", "--backend", "swarm", "ls"]) == 0
    listed = capsys.readouterr().out
    assert volume in listed and three.name in listed
    assert docker_run(three, volume, "cat /data/f") == "moved\n"
    assert lease(local_swarm, volume).epoch == record.epoch + 1


# -- the node that writes a volume dies --------------------------------------------------------


def test_a_writer_whose_node_dies_reruns_from_the_snapshot_before_it_and_its_node_is_fenced(
    tmp_path: Path, doomed_swarm: LocalSwarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stateful`` appends to a volume that ``prep`` wrote; its node's dockerd is killed
    mid-step. It reruns on another node from the snapshot ``prep`` left (what the lost
    attempt wrote is discarded): its output and the volume are what an undisturbed run
    gives. The node comes back: its stale lease is refused, and a mount there sees the
    volume as it is now, not what that node last had."""
    swarm = doomed_swarm
    runtime = SwarmRuntime(swarm.manager.url, [n.url for n in swarm.nodes])
    try:
        deploy(runtime, print)  # (the agents, before the manager takes no more work)
    finally:
        runtime.close()
    _set_availability(swarm, swarm.manager, "pause")  # the manager, with the leases, lives
    name = f"v-{uuid.uuid4().hex[:10]}"
    path = tmp_path / "dockyard.yaml"
    path.write_text(
        f"""
version: 1
name: fenced
defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.25, memory: 32m}}}}
volumes: {{{name}: {{}}}}
steps:
  prep:
    volumes: {{{name}: /state}}
    command: "sh -c 'echo prepared > /state/log'"
  stateful:
    needs: [prep]
    volumes: {{{name}: /state}}
    command: >-
      sh -c 'echo writing >> /state/log; sleep 12; echo done >> /state/log;
      cat /state/log > /out/log'
"""
    )
    run = _run_in_background(swarm, path)
    try:
        victim = _node_running(swarm, "fenced", "stateful", run)
        victim_id = _node_id(swarm, victim)
        stale = _lease_on_disk(victim_id, name)
        victim.kill()
        output, _ = run.communicate(timeout=240)
    finally:
        _ended(run)
    said = output.decode()
    assert run.returncode == 0, said
    record = lease(swarm, name)
    assert record.owner != victim_id and record.epoch > stale["epoch"], said
    node, digest = outputs_of(path)["stateful"]
    kept = Path(os.environ[ROOT_ENV]) / node / "outputs" / digest / "log"
    assert kept.read_text() == "prepared\nwriting\ndone\n"  # as if nothing had happened

    swarm.mend()  # the node comes back
    _set_availability(swarm, swarm.manager, "pause")
    manager = _manager_agent(swarm)
    with pytest.raises(AgentError, match="stale") as refused:
        manager.call(
            "POST",
            "leases/release",
            {"volume": name, "node": victim_id, "epoch": stale["epoch"],
             "snapshot": "from-the-dead"},
        )  # fmt: skip
    assert refused.value.status == 409
    assert lease(swarm, name) == record  # unchanged
    assert docker_run(victim, name, "cat /data/log") == "prepared\nwriting\ndone\n"


def _set_availability(swarm: LocalSwarm, node: SwarmNode, availability: str) -> None:
    api = swarm.manager.engine.client()
    try:
        found = next(n for n in api.nodes() if n["Description"]["Hostname"] == node.name)
        spec = {**found["Spec"], "Availability": availability}
        api.update_node(found["ID"], found["Version"]["Index"], spec)
    finally:
        api.close()


def _node_running(swarm: LocalSwarm, pipeline: str, step: str, run: Any) -> SwarmNode:
    """The node whose container of ``step`` runs (once it has written to the volume)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if run.poll() is not None:
            raise AssertionError(run.communicate()[0].decode())
        for node in swarm.nodes:
            api = node.engine.client()
            try:
                running = api.containers(filters={"label": f"dockyard.pipeline={pipeline}"})
            finally:
                api.close()
            if any(c["Labels"].get("dockyard.instance") == step for c in running):
                time.sleep(2)  # (it has written "writing" by then)
                return node
        time.sleep(0.2)
    raise AssertionError(f"{step} never ran")


def _lease_on_disk(node_id: str, volume: str) -> dict[str, Any]:
    """What the node's agent keeps of its lease on ``volume``."""
    state = Path(os.environ[ROOT_ENV]) / node_id / "volumes" / volume / "node.json"
    return dict(json.loads(state.read_text()))


def _manager_agent(swarm: LocalSwarm) -> AgentClient:
    runtime = SwarmRuntime(swarm.manager.url)
    try:
        key = read_cluster_key(runtime)
        manager = _node_id(swarm, swarm.manager)
        address = next(n.address for n in runtime.nodes() if n.id == manager)
    finally:
        runtime.close()
    return AgentClient(f"{address}:{DEFAULT_PORT}", key, manager)


def test_one_step_points_dockyard_at_the_swarm_and_node_setup_readies_every_node(
    local_swarm: LocalSwarm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval "$(scripts/swarm-local.sh env)"``, then ``dockyard node setup`` (no run): the
    plugin answers ``docker run --volume-driver dockyard`` on every node, and ``dockyard
    node ls`` says each agent is fine."""
    capsys.readouterr()
    assert swarm_main(["--root", str(local_swarm.root), "env"]) == 0
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in capsys.readouterr().out.splitlines()
    )
    assert exports.pop("DOCKYARD_BACKEND") == "swarm"
    assert exports == {
        name: shlex.quote(value) for name, value in local_swarm.environment().items()
    }
    for name, value in local_swarm.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOCKYARD_BACKEND", "swarm")

    assert main(["node", "setup"]) == 0
    said = capsys.readouterr().out
    assert sorted(said.splitlines()) == [f"{n.name}: agent ok" for n in local_swarm.nodes]
    name = f"v-{uuid.uuid4().hex[:10]}"
    try:
        for node in local_swarm.nodes:
            docker_run(node, name, f"echo {node.name} >> /data/seen")
        assert docker_run(local_swarm.manager, name, "cat /data/seen").split() == [
            n.name for n in local_swarm.nodes
        ]
    finally:
        api = local_swarm.manager.engine.client()
        with contextlib.suppress(docker.errors.APIError):
            api.remove_volume(name)
        api.close()
    assert main(["node", "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((row["name"], row["agent"]) for row in rows) == [
        (n.name, "ok") for n in local_swarm.nodes
    ]
