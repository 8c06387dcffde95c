"""Docker's volume plugin protocol as the agent serves it, over a real unix socket, with
what the engine sends (tests/integration/test_swarm_volumes.py has the engine itself)."""

from __future__ import annotations

import http.client
import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.plugin import PluginServer
from dockyard.testing.agents import VolumeCluster, volume_agents


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def call(sock: Path, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    conn = _Unix(sock)
    conn.request("POST", route, body=json.dumps(body or {}).encode())
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return dict(answer)


@pytest.fixture
def plugins(tmp_path: Path):
    with volume_agents(tmp_path / "agents", ["n1", "n2"]) as cluster:
        servers = {}
        for node in ("n1", "n2"):
            path = tmp_path / node / "plugins" / "dockyard.sock"
            server = PluginServer(path, cluster.volumes(node))
            server.start()
            servers[node] = server
        yield cluster, {node: Path(s.server_address) for node, s in servers.items()}
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_the_socket_is_roots_alone(plugins: tuple[VolumeCluster, dict[str, Path]]) -> None:
    _, sockets = plugins
    info = sockets["n1"].stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600


def test_activate_and_capabilities(plugins: tuple[VolumeCluster, dict[str, Path]]) -> None:
    _, sockets = plugins
    assert call(sockets["n1"], "/Plugin.Activate") == {"Err": "", "Implements": ["VolumeDriver"]}
    answer = call(sockets["n1"], "/VolumeDriver.Capabilities")
    assert answer["Capabilities"] == {"Scope": "global"}


def test_the_engine_s_calls_in_order(plugins: tuple[VolumeCluster, dict[str, Path]]) -> None:
    cluster, sockets = plugins
    one, two = sockets["n1"], sockets["n2"]
    assert "no volume" in call(one, "/VolumeDriver.Get", {"Name": "cache"})["Err"]
    assert call(one, "/VolumeDriver.Create", {"Name": "cache", "Opts": {}})["Err"] == ""
    got = call(two, "/VolumeDriver.Get", {"Name": "cache"})  # global: seen from every node
    assert got["Err"] == "" and got["Volume"]["Name"] == "cache"
    mounted = call(one, "/VolumeDriver.Mount", {"Name": "cache", "ID": "c1"})
    assert mounted["Err"] == ""
    (Path(mounted["Mountpoint"]) / "hello").write_text("from n1")
    path = call(one, "/VolumeDriver.Path", {"Name": "cache"})
    assert path["Mountpoint"] == mounted["Mountpoint"]
    refused = call(two, "/VolumeDriver.Mount", {"Name": "cache", "ID": "c2"})
    assert "mounted read-write on node n1" in refused["Err"]
    assert call(one, "/VolumeDriver.Unmount", {"Name": "cache", "ID": "c1"})["Err"] == ""
    cluster.settle()
    second = call(two, "/VolumeDriver.Mount", {"Name": "cache", "ID": "c2"})
    assert (Path(second["Mountpoint"]) / "hello").read_text() == "from n1"
    listed = call(one, "/VolumeDriver.List")["Volumes"]
    assert [v["Name"] for v in listed] == ["cache"]
    assert listed[0]["Status"]["owner"] == "n2" and listed[0]["Status"]["held"]
    assert "stop what uses it" in call(two, "/VolumeDriver.Remove", {"Name": "cache"})["Err"]
    call(two, "/VolumeDriver.Unmount", {"Name": "cache", "ID": "c2"})
    cluster.settle()
    # Docker's Remove (`docker volume rm`, `prune`) forgets one node's copy, never the
    # swarm's volume: it is still there, with its content, for every node.
    assert call(one, "/VolumeDriver.Remove", {"Name": "cache"})["Err"] == ""
    assert not cluster.volumes("n1").store.exists("cache")
    assert call(two, "/VolumeDriver.Get", {"Name": "cache"})["Err"] == ""
    again = call(one, "/VolumeDriver.Mount", {"Name": "cache", "ID": "c3"})
    assert (Path(again["Mountpoint"]) / "hello").read_text() == "from n1"
    call(one, "/VolumeDriver.Unmount", {"Name": "cache", "ID": "c3"})


def test_a_node_s_only_copy_of_the_latest_snapshot_is_not_forgotten(tmp_path: Path) -> None:
    with volume_agents(tmp_path / "agents", ["n1", "n2"], replicas=0) as cluster:
        volumes = cluster.volumes("n1")
        volumes.create("solo")
        volumes.mount("solo", "m")
        volumes.unmount("solo", "m")
        cluster.settle()  # (its snapshot published: kept on this node alone)
        from dockyard.agent.refused import Refused

        with pytest.raises(Refused, match="only copy"):
            volumes.forget("solo")


def test_an_engine_that_starts_again_voids_the_mounts_of_the_one_before(
    plugins: tuple[VolumeCluster, dict[str, Path]],
) -> None:
    cluster, sockets = plugins
    one = sockets["n1"]
    call(one, "/VolumeDriver.Create", {"Name": "work", "Opts": {}})
    mounted = call(one, "/VolumeDriver.Mount", {"Name": "work", "ID": "died"})
    (Path(mounted["Mountpoint"]) / "half").write_text("half-written")
    # The engine restarts (its containers die, no Unmount comes) and activates its plugin:
    assert call(one, "/Plugin.Activate")["Implements"] == ["VolumeDriver"]
    lease = cluster.leases.get("work")
    assert lease is not None and not lease.held  # another node may mount it now
    fresh = call(sockets["n2"], "/VolumeDriver.Mount", {"Name": "work", "ID": "new"})
    assert not (Path(fresh["Mountpoint"]) / "half").exists()  # never published


@pytest.mark.parametrize(
    "route, body, problem",
    [
        ("/VolumeDriver.Create", {"Name": "../../etc"}, "not a volume name"),
        ("/VolumeDriver.Create", {"Name": "ok", "Opts": {"size": "1G"}}, "takes no options"),
        ("/VolumeDriver.Mount", {"Name": "ok"}, "ID"),
        ("/VolumeDriver.Mount", {"Name": 3, "ID": "x"}, "Name"),
        ("/VolumeDriver.Nonsense", {}, "no such call"),
    ],
)
def test_bad_calls_get_an_error_not_a_crash(
    plugins: tuple[VolumeCluster, dict[str, Path]], route: str, body: dict[str, Any], problem: str
) -> None:
    _, sockets = plugins
    assert problem in call(sockets["n1"], route, body)["Err"]


def test_a_body_that_is_not_json_is_refused(
    plugins: tuple[VolumeCluster, dict[str, Path]],
) -> None:
    _, sockets = plugins
    conn = _Unix(sockets["n1"])
    conn.request("POST", "/VolumeDriver.Get", body=b"{not json")
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 400 and "not a JSON object" in answer["Err"]
