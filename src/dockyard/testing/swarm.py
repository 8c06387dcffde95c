"""A real Docker Swarm on one machine, for tests, benchmarks and CI.

Each node is a :class:`~dockyard.testing.dockerd.PrivateEngine` (its own ``dockerd`` and
``containerd``, data-root, exec-root, pidfile and socket, in network, mount and host-name
namespaces of its own), with one leg of a veth pair in its network namespace and the other
on a bridge that lives in a namespace of its own too: on the host, ``bridge-nf-call-iptables``
and the main engine's ``FORWARD DROP`` would silently drop the frames between nodes. The
bridge also has a leg on the host (``10.213.N.1``), so that this machine reaches the nodes'
own addresses (their dockyard node agents) as the machine that submits does on a real
cluster; each swarm takes a /24 of its own. The first node initialises the Swarm (a short
dispatcher heartbeat, so that a dead node is seen within seconds) and the others join it as
workers. The test image is made on the first node and copied to the others.

Killing a node's ``dockerd`` (:meth:`SwarmNode.kill`) or cutting its link (:meth:`cut`) is a
real node failure. Everything lives under one folder whose ``swarm.json`` lets another
process end it (``scripts/swarm-local.sh down``), also after a failure half-way through ``up``.

    python -m dockyard.testing.swarm up 3      # one line per node: NAME SOCKET PIDFILE
    python -m dockyard.testing.swarm env       # the exports that point dockyard at it
    python -m dockyard.testing.swarm down
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from dockyard.testing.dockerd import PrivateEngine, Process, wait_unshared
from dockyard.testing.images import BUSYBOX_IMAGE

DEFAULT_ROOT = Path(os.environ.get("DOCKYARD_SWARM_ROOT", "/tmp/dockyard-swarm"))
SUBNETS = range(7, 250)  # 10.213.N.0/24 between the nodes: .1 this machine, nodes from .11
SUBNET_LOCK = Path("/run/lock/dockyard-swarm-subnets")
HEARTBEAT_SECONDS = 1.0
JOIN_TIMEOUT = 60.0


@dataclass
class SwarmNode:
    name: str
    address: str
    engine: PrivateEngine

    @property
    def socket(self) -> Path:
        return self.engine.socket

    @property
    def url(self) -> str:
        return self.engine.url

    def kill(self) -> None:
        """The node dies: its dockerd is killed (its containers go on under containerd, as a
        machine that stopped answering would be seen from outside)."""
        self.engine.stop(signal.SIGKILL)

    def cut(self) -> None:
        """The node's link goes down: it is alive, and alone."""
        subprocess.run(self.engine.nsenter("ip", "link", "set", "eth0", "down"), check=True)

    def mend(self) -> None:
        subprocess.run(self.engine.nsenter("ip", "link", "set", "eth0", "up"), check=True)


class LocalSwarm:
    def __init__(
        self, root: Path, bridge: Process | None, nodes: list[SwarmNode], subnet: str = ""
    ):
        self.root = root
        self.bridge = bridge
        self.nodes = nodes
        self.subnet = subnet  # the first three numbers of the nodes' addresses

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    def environment(self) -> dict[str, str]:
        """What points dockyard's Swarm backend at this swarm: the manager's engine, every
        node's engine (images are copied engine to engine), that its nodes' daemons run
        with ``--no-new-privileges``, and where a node's own engine socket is for the
        agents on its managers."""
        from dockyard.backends.swarm.agents import ENGINE_SOCKET_ENV
        from dockyard.backends.swarm.images import ENVIRONMENT as ENGINES_ENV
        from dockyard.backends.swarm.runtime import NO_NEW_PRIVILEGES
        from dockyard.testing.dockerd import NODE_ENGINE_SOCKET

        return {
            "DOCKER_HOST": self.manager.url,
            ENGINES_ENV: " ".join(node.url for node in self.nodes),
            NO_NEW_PRIVILEGES: "1",
            ENGINE_SOCKET_ENV: NODE_ENGINE_SOCKET,
        }

    # -- up -------------------------------------------------------------------------------

    @classmethod
    def up(cls, count: int, root: Path = DEFAULT_ROOT) -> LocalSwarm:
        """Make ``count`` nodes joined into one Swarm; on any failure, remove what was made."""
        if count < 1:
            raise ValueError("a swarm needs at least one node")
        if (root / "swarm.json").exists():
            raise RuntimeError(f"a local swarm is already up under {root} (run down first)")
        root.mkdir(parents=True, exist_ok=True)
        swarm = cls(root, None, [])
        try:
            swarm.bridge = Process.spawn(["unshare", "--net", "sleep", "infinity"])
            swarm._save()
            wait_unshared(swarm.bridge.pid, "the bridge's")
            swarm._in_bridge("ip", "link", "add", "br0", "type", "bridge")
            swarm._in_bridge("ip", "link", "set", "br0", "up")
            swarm._link_host()
            for index in range(1, count + 1):
                swarm._add_node(index)
            swarm._form()
            swarm._load_test_images()
        except BaseException:
            swarm.down()
            raise
        return swarm

    def _add_node(self, index: int) -> None:
        name = f"dysw{index}"
        engine = PrivateEngine(name=f"dockyard-swarm-{index}", hostname=name)
        node = SwarmNode(name, f"{self.subnet}.{10 + index}", engine)
        self.nodes.append(node)
        self._save()
        # Unique on the host for the moment before they move (another swarm may be coming
        # up beside this one), and within the 15 characters of an interface name.
        tag = f"{os.getpid() % 100000}x{index}"
        inside, outside = f"dyi{tag}", f"dyo{tag}"
        _run("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
        try:
            _run("ip", "link", "set", inside, "netns", str(engine.holder.pid))
            _run("ip", "link", "set", outside, "netns", str(self._bridge_pid))
        except subprocess.CalledProcessError:
            for left in (inside, outside):  # whichever end is still on the host
                subprocess.run(["ip", "link", "del", left], capture_output=True)
            raise
        self._in_bridge("ip", "link", "set", outside, "master", "br0")
        self._in_bridge("ip", "link", "set", outside, "up")
        for command in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "link", "set", inside, "name", "eth0"),
            ("ip", "addr", "add", f"{node.address}/24", "dev", "eth0"),
            ("ip", "link", "set", "eth0", "up"),
        ):
            subprocess.run(engine.nsenter(*command), check=True)
        engine.start("--no-new-privileges")  # Swarm services cannot ask for it (see swarm.md)
        self._save()

    def _link_host(self) -> None:
        """A veth from the host onto the bridge, on a /24 no other local swarm uses (chosen
        under a lock: two swarms may come up side by side)."""
        SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with SUBNET_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            routes = subprocess.run(
                ["ip", "-4", "route", "show"], check=True, capture_output=True, text=True
            ).stdout
            free = [n for n in SUBNETS if f"10.213.{n}.0/24" not in routes]
            if not free:
                raise RuntimeError("no free 10.213.N.0/24 for another local swarm")
            self.subnet = f"10.213.{free[0]}"
            host, peer = f"dyh{free[0]}", f"dyb{free[0]}"  # unique as the subnet is
            _run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
            try:
                _run("ip", "link", "set", peer, "netns", str(self._bridge_pid))
                _run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", host)
                _run("ip", "link", "set", host, "up")
            except subprocess.CalledProcessError:
                subprocess.run(["ip", "link", "del", host], capture_output=True)
                raise
            self._save()
        self._in_bridge("ip", "link", "set", peer, "master", "br0")
        self._in_bridge("ip", "link", "set", peer, "up")

    def _form(self) -> None:
        manager = self.manager.engine.client()
        try:
            manager.init_swarm(
                advertise_addr=self.manager.address,
                listen_addr=f"{self.manager.address}:2377",
                swarm_spec=manager.create_swarm_spec(
                    dispatcher_heartbeat_period=int(HEARTBEAT_SECONDS * 1e9)
                ),
            )
            token = manager.inspect_swarm()["JoinTokens"]["Worker"]
            for node in self.nodes[1:]:
                client = node.engine.client()
                try:
                    client.join_swarm(
                        [f"{self.manager.address}:2377"],
                        token,
                        listen_addr=f"{node.address}:2377",
                        advertise_addr=node.address,
                    )
                finally:
                    client.close()
            deadline = time.monotonic() + JOIN_TIMEOUT
            while True:
                ready = [n for n in manager.nodes() if n["Status"]["State"] == "ready"]
                if len(ready) == len(self.nodes):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(ready)} of {len(self.nodes)} nodes are ready")
                time.sleep(0.2)
        finally:
            manager.close()

    def _load_test_images(self) -> None:
        """The test image, made on the manager and copied to every node, so that it has one
        id everywhere (an image made on each node would have as many ids as nodes)."""
        self.manager.engine.load_busybox()
        manager: Any = self.manager.engine.client()
        try:
            for node in self.nodes[1:]:
                client: Any = node.engine.client()
                try:
                    client.load_image(manager.get_image(BUSYBOX_IMAGE))
                finally:
                    client.close()
        finally:
            manager.close()

    # -- down -----------------------------------------------------------------------------

    @classmethod
    def load(cls, root: Path = DEFAULT_ROOT) -> LocalSwarm | None:
        try:
            state = json.loads((root / "swarm.json").read_text())
        except FileNotFoundError:
            return None
        bridge = Process(*state["bridge"]) if state["bridge"] else None
        nodes = [
            SwarmNode(n["name"], n["address"], PrivateEngine.adopt(n["engine"]))
            for n in state["nodes"]
        ]
        return cls(root, bridge, nodes, state.get("subnet", ""))

    def mend(self, timeout: float = 120.0) -> None:
        """Every node back: a killed engine started again (its node rejoins under its old
        id), every node active, all of them ready (for a swarm that tests kill nodes of)."""
        for node in self.nodes:
            if not node.engine.answers():
                node.engine.start("--no-new-privileges")
        client: Any = self.manager.engine.client()
        try:
            deadline = time.monotonic() + timeout
            while True:
                nodes = client.nodes()
                for found in nodes:
                    if found["Spec"].get("Availability") != "active":
                        spec = {**found["Spec"], "Availability": "active"}
                        with contextlib.suppress(docker.errors.APIError):  # (raced: again)
                            client.update_node(found["ID"], found["Version"]["Index"], spec)
                if all(n["Status"]["State"] == "ready" for n in nodes):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the swarm's nodes were not all ready in {timeout:g} s")
                time.sleep(0.5)
            self._global_tasks_settled(client, deadline)
        finally:
            client.close()

    @staticmethod
    def _global_tasks_settled(client: Any, deadline: float, quiet: float = 3.0) -> None:
        """Wait until every global service (the node agents) runs one task on each node,
        the same ones for ``quiet`` seconds: a node whose engine started again runs its old
        task for a moment before Swarm replaces it, and a test must not meet that one."""
        seen: tuple[str, ...] | None = None
        since = time.monotonic()
        while True:
            services = [s for s in client.services() if "Global" in s["Spec"].get("Mode", {})]
            wanted = [
                t
                for s in services
                for t in client.tasks(filters={"service": s["ID"], "desired-state": "running"})
            ]
            running = tuple(sorted(t["ID"] for t in wanted if t["Status"]["State"] == "running"))
            if running != seen or len(running) != len(wanted):
                seen, since = running, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the swarm's global services did not settle")
            time.sleep(0.5)

    def down(self) -> None:
        """Stop every node and remove everything, whatever state ``up`` left."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self._leave(node)
            with contextlib.suppress(Exception):  # (the other nodes and the bridge go all the same)
                node.engine.close()
        if self.bridge is not None:
            self.bridge.end(signal.SIGKILL, timeout=10)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "swarm.json").unlink()
        with contextlib.suppress(OSError):
            self.root.rmdir()

    @staticmethod
    def _leave(node: SwarmNode) -> None:
        """Remove the node's services (which would otherwise be restarted) before its end."""
        if not node.engine.answers():
            return
        client: Any = node.engine.client()
        try:
            with contextlib.suppress(docker.errors.APIError):
                for service in client.services():
                    client.remove_service(service["ID"])
            with contextlib.suppress(docker.errors.APIError):
                client.leave_swarm(force=True)
        finally:
            client.close()

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _bridge_pid(self) -> int:
        assert self.bridge is not None
        return self.bridge.pid

    def _in_bridge(self, *args: str) -> None:
        _run("nsenter", f"--target={self._bridge_pid}", "--net", "--", *args)

    def _save(self) -> None:
        state: dict[str, Any] = {
            "bridge": [self.bridge.pid, self.bridge.started] if self.bridge else None,
            "subnet": self.subnet,
            "nodes": [
                {"name": n.name, "address": n.address, "engine": n.engine.state()}
                for n in self.nodes
            ],
        }
        temporary = self.root / "swarm.json.new"
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(self.root / "swarm.json")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarm-local", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up").add_argument("count", type=int, nargs="?", default=3)
    commands.add_parser("env", help="print the exports that point dockyard at the swarm")
    commands.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            swarm = LocalSwarm.up(args.count, args.root)
        except (
            RuntimeError,
            OSError,
            subprocess.CalledProcessError,
            docker.errors.APIError,
        ) as exc:
            print(f"swarm-local: {exc}", file=sys.stderr)
            return 1
        for node in swarm.nodes:
            print(node.name, node.socket, node.engine.pidfile)
        print('swarm-local: to use it: eval "$(scripts/swarm-local.sh env)"', file=sys.stderr)
        return 0
    found = LocalSwarm.load(args.root)
    if args.command == "env":
        if found is None:
            print(f"swarm-local: no local swarm is up under {args.root}", file=sys.stderr)
            return 1
        exports = {**found.environment(), "DOCKYARD_BACKEND": "swarm"}
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if found is not None:
        found.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
