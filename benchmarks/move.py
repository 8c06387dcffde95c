"""Moving a volume between nodes of a Swarm (issue 14's performance goal), measured in one
run, with ``rsync`` of the same change as the reference.

For each size (1 GiB and 4 GiB by default), on a three-node local Swarm with dockyard's
node agents:

1. A volume of files of random data (1 MiB each by default, ``--file-mib``) is written on
   node A with plain ``docker run --volume-driver dockyard``; its snapshot is published
   and replicated, and the node that keeps the replica (B) is where the volume will move:
   that copy is the pre-copy.
2. The old user runs on A: it rewrites 1% of the files, notes the time (the kernel's
   uptime, shared with the host) and exits. At once the new user starts on B and notes the
   time as its first act. **Downtime** = the new user's first act - the old user's last:
   it holds the old mount's unmount (the lease marked releasing; the snapshot of what
   changed is taken and published after it returns), the new mount (the lease taken once
   published, the increment fetched from A, the live folder brought to it) and the
   engines' own container stop, removal, creation and start. Each move's parts are shown:
   the agents' (their logged unmount and mount, and the snapshot taken between) and the
   engines' (as the engine calls returned).
3. **Bytes sent** = what node A's network interface sent during the move, against the
   bytes the old user changed.
4. **rsync**: the same change, from A's new snapshot to a copy of the one before it
   (``rsync -a --no-whole-file --stats``): its time and its literal data sent.

Goals: downtime under 2 s, within 20% between the sizes; bytes sent within 1.1x of the
changed bytes. ``--changed-mib`` rewrites the same MiB at every size (1% of 16 GiB is 16
times the bytes of 1% of 1 GiB: that part of the downtime grows with the size by design);
``--repeat`` moves the volume back and forth that many times and reports the median; each
move waits until the volume is at rest (replicated, its snapshots' trees built in the
background on both nodes, and its bytes on the disk: a hand-off leaves that work behind
it, and moves back to back would measure it too). ``--together`` writes every size first
and then moves them in rounds, one size after the other: the engines' own times drift
over minutes on a busy machine (container creation took 0.03 s for a while and 0.4 s for
another), and so each size's moves then share the same minutes.

    .venv/bin/python benchmarks/move.py [--sizes 1 4] [--changed 0.01] [--file-mib 1]
    .venv/bin/python benchmarks/move.py --sizes 1 16 --changed-mib 10 --repeat 9 --together
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.agent.leases import Lease
from dockyard.agent.swarm_leases import config_name
from dockyard.backends.swarm.agents import (
    ENGINE_SOCKET_ENV,
    MANAGER_SERVICE,
    ROOT_ENV,
    SERVICE,
    deploy,
)
from dockyard.backends.swarm.runtime import NO_NEW_PRIVILEGES, SwarmRuntime
from dockyard.testing.dockerd import NODE_ENGINE_SOCKET
from dockyard.testing.images import BUSYBOX_IMAGE
from dockyard.testing.swarm import LocalSwarm, SwarmNode

MIB = 1024**2
DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def docker_run(
    node: SwarmNode, volume: str, script: str, stamps: dict[str, float] | None = None
) -> str:
    """Run ``script`` in a container on ``node`` with the volume at /data; ``stamps`` gets
    the moments (the kernel's boot clock, as /proc/uptime) each engine call returned."""
    api = node.engine.client()
    stamps = {} if stamps is None else stamps
    try:
        container = api.create_container(
            BUSYBOX_IMAGE,
            ["sh", "-c", script],
            host_config=api.create_host_config(binds=[f"{volume}:/data"], volume_driver="dockyard"),
        )["Id"]
        stamps["created"] = boot_clock()
        api.start(container)
        stamps["started"] = boot_clock()
        status = api.wait(container, timeout=3600)["StatusCode"]
        stamps["exited"] = boot_clock()
        output = str(api.logs(container).decode())
        api.remove_container(container)
        stamps["removed"] = boot_clock()
    finally:
        api.close()
    if status != 0:
        raise RuntimeError(f"a container on {node.name} failed: {output}")
    return output


def boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def lease(swarm: LocalSwarm, volume: str) -> Lease:
    api = swarm.manager.engine.client()
    try:
        [config] = [c for c in api.configs() if c["Spec"]["Name"] == config_name(volume)]
    finally:
        api.close()
    return Lease.from_json(json.loads(config["Spec"]["Labels"]["dockyard.lease"]))


def node_named(swarm: LocalSwarm, node_id: str) -> SwarmNode:
    for node in swarm.nodes:
        api = node.engine.client()
        try:
            if api.info()["Swarm"]["NodeID"] == node_id:
                return node
        finally:
            api.close()
    raise LookupError(node_id)


def sent_bytes(node: SwarmNode) -> int:
    """What the node's eth0 has sent (read from /proc/net/dev in the node's network
    namespace: /sys would show the host's)."""
    read = node.engine.nsenter("cat", "/proc/net/dev")
    table = subprocess.run(read, capture_output=True, text=True, check=True).stdout
    for line in table.splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "eth0":
            return int(counters.split()[8])  # (8 receive counters, then bytes sent)
    raise RuntimeError(f"node {node.name} has no eth0")


def agent_log(node: SwarmNode) -> str:
    """What the node's agent has logged (its container's standard error)."""
    api = node.engine.client()
    try:
        texts = []
        for service in (SERVICE, MANAGER_SERVICE):
            label = f"com.docker.swarm.service.name={service}"
            for container in api.containers(filters={"label": label}):
                texts.append(api.logs(container["Id"], stdout=False).decode(errors="replace"))
        return "".join(texts)
    finally:
        api.close()


def agent_seconds(log: str, what: str, volume: str) -> float:
    """The duration of the last ``mount``, ``unmount`` or ``snapshot`` of the volume in an
    agent's ``log`` (NaN if there is none)."""
    found = re.findall(rf"agent: {what} of {re.escape(volume)}: ([0-9.]+) s", log)
    return float(found[-1]) if found else float("nan")


def uptime(output: str, mark: str) -> float:
    found = re.search(rf"{mark} ([0-9.]+)", output)
    if found is None:
        raise RuntimeError(f"no {mark} in {output!r}")
    return float(found.group(1))


def wait_for(check: Any, what: str, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g} s for {what}")
        time.sleep(0.5)


@dataclass
class Moving:
    """One volume moved back and forth between the two nodes that keep it (see the top)."""

    swarm: LocalSwarm
    root: Path
    volume: str
    gib: float
    file_mib: int
    touched: int  # files rewritten at each move
    downtimes: list[float] = field(default_factory=list)
    sents: list[float] = field(default_factory=list)
    unmounts: list[float] = field(default_factory=list)  # (the agents' parts of each downtime)
    mounts: list[float] = field(default_factory=list)
    snapshots: list[float] = field(default_factory=list)  # (after the unmount returned)
    phases: list[tuple[float, ...]] = field(default_factory=list)  # (the engines' parts)
    rsync: tuple[float, int] = (0.0, 0)

    @property
    def files(self) -> int:
        return int(self.gib * 1024 / self.file_mib)

    def write(self) -> None:
        """Write the volume on node A and wait for its replica (the pre-copy)."""
        self.a = self.swarm.nodes[1]  # (workers: the manager keeps the leases)
        docker_run(
            self.a,
            self.volume,
            f"i=0; while [ $i -lt {self.files} ]; do dd if=/dev/urandom of=/data/f$i "
            f"bs={self.file_mib * MIB} count=1 2>/dev/null; i=$((i+1)); done",
        )
        wait_for(lambda: len(lease(self.swarm, self.volume).holders) > 1, "the replica")
        self.first = lease(self.swarm, self.volume)
        self.old_node, self.new_node = self.a, node_named(self.swarm, self.first.holders[1])

    def move(self, turn: int) -> None:
        """Move it once (from the node that has it to the other one), once it is at rest:
        replicated, its snapshots' trees built, its bytes on the disk."""
        swarm, volume, files = self.swarm, self.volume, self.files
        wait_for(lambda: len(lease(swarm, volume).holders) > 1, "the replica")
        for node_id in lease(swarm, volume).holders:
            wait_for(lambda n=node_id: settled(self.root, n, volume), "the snapshots' trees")
        os.sync()
        sent_before = sent_bytes(self.old_node)
        stamps: dict[str, float] = {}
        old = docker_run(
            self.old_node,
            volume,
            f"i=0; while [ $i -lt {self.touched} ]; do "
            f"dd if=/dev/urandom of=/data/f$((i * {files // self.touched} + {turn})) "
            f"bs={self.file_mib * MIB} count=1 2>/dev/null; i=$((i+1)); done; "
            "echo end $(cut -d' ' -f1 /proc/uptime)",
            stamps,
        )
        exited, removed = stamps["exited"], stamps["removed"]
        new = docker_run(
            self.new_node,
            volume,
            "echo start $(cut -d' ' -f1 /proc/uptime); ls /data | wc -l",
            stamps,
        )
        end, start = uptime(old, "end"), uptime(new, "start")
        self.downtimes.append(start - end)
        self.phases.append(
            (exited - end, removed - exited, stamps["created"] - removed, start - stamps["created"])
        )
        old_log = agent_log(self.old_node)
        self.unmounts.append(agent_seconds(old_log, "unmount", volume))
        self.snapshots.append(agent_seconds(old_log, "snapshot", volume))
        self.mounts.append(agent_seconds(agent_log(self.new_node), "mount", volume))
        wait_for(lambda: not lease(swarm, volume).held, "the new user's unmount")
        self.sents.append(sent_bytes(self.old_node) - sent_before)
        if int(new.split()[-1]) != files:
            raise RuntimeError(f"the moved volume has {new.split()[-1]} files, not {files}")
        self.old_node, self.new_node = self.new_node, self.old_node
        if turn == 0:
            wait_for(lambda: settled(self.root, self.first.owner, volume), "the snapshot's tree")
            self.rsync = rsync_reference(self.root, volume, self.first)

    def result(self) -> dict[str, Any]:
        return {
            "gib": self.gib,
            "files": self.files,
            "changed_bytes": self.touched * self.file_mib * MIB,
            "downtime": statistics.median(self.downtimes),
            "downtimes": self.downtimes,
            "unmount": statistics.median(self.unmounts),
            "mount": statistics.median(self.mounts),
            "unmounts": self.unmounts,
            "mounts": self.mounts,
            "snapshots": self.snapshots,
            "phases": self.phases,
            "sent": statistics.median(self.sents),
            "rsync_seconds": self.rsync[0],
            "rsync_sent": self.rsync[1],
        }


def touched(args: argparse.Namespace, gib: float) -> int:
    """Files rewritten at each move."""
    if args.changed_mib is not None:
        return max(1, round(args.changed_mib / args.file_mib))
    return max(1, round(gib * 1024 / args.file_mib * args.changed))


def move_in_turn(swarm: LocalSwarm, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each size in turn: written, moved ``--repeat`` times, removed."""
    results = []
    for gib in args.sizes:
        if not fits(gib):
            print(f"{gib:g} GiB: skipped, the disk cannot hold four copies of it")
            continue
        volume = f"move-{uuid.uuid4().hex[:8]}"
        moving = Moving(swarm, root, volume, gib, args.file_mib, touched(args, gib))
        try:
            moving.write()
            for turn in range(args.repeat):
                moving.move(turn)
            results.append(moving.result())
        finally:
            remove(swarm, volume)
    return results


def move_together(swarm: LocalSwarm, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size written first, then moved one after the other, ``--repeat`` rounds."""
    if not fits(sum(args.sizes)):
        raise SystemExit(f"the disk cannot hold four copies of {sum(args.sizes):g} GiB")
    movings = [
        Moving(swarm, root, f"move-{uuid.uuid4().hex[:8]}", gib, args.file_mib, touched(args, gib))
        for gib in args.sizes
    ]
    try:
        for moving in movings:
            moving.write()
        for turn in range(args.repeat):
            for moving in movings:
                moving.move(turn)
        return [moving.result() for moving in movings]
    finally:
        for moving in movings:
            remove(swarm, moving.volume)


def warm_up(swarm: LocalSwarm) -> None:
    """Use the volume plugin once on every node, trying again for a minute: an engine that
    looks for the plugin before its agent serves the socket answers that it does not
    implement volumes."""
    volume = f"warm-{uuid.uuid4().hex[:8]}"
    for node in swarm.nodes:
        deadline = time.monotonic() + 60
        while True:
            try:
                docker_run(node, volume, "true")
                break
            except Exception as exc:  # (docker.errors.APIError, as a string from the engine)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the plugin on {node.name} does not answer: {exc}") from exc
                time.sleep(2)
    remove(swarm, volume)


def remove(swarm: LocalSwarm, volume: str) -> None:
    """Remove the volume from every node (``docker volume rm`` on a node only forgets that
    node's copy): a size's copies are gone before the next size is written."""
    env = {**os.environ, **swarm.environment(), "DOCKYARD_BACKEND": "swarm"}
    wait_for(lambda: not lease(swarm, volume).held, "the volume's last unmount", 120)
    subprocess.run([DOCKYARD, "volume", "rm", volume], env=env, check=True, capture_output=True)


def fits(gib: float) -> bool:
    """Whether the disk holds a volume of ``gib`` four times over (its live folder and a
    snapshot on each of two nodes), with 2 GiB to spare (the moves add only their changes:
    the snapshots after the first share the files that did not change, as hard links)."""
    free = shutil.disk_usage("/var/tmp").free
    return free > (4 * gib + 2) * 1024**3


def settled(root: Path, node: str, volume: str) -> bool:
    """Whether every snapshot of the volume on that node has its tree and the old ones are
    gone (both done in the background after a hand-off)."""
    snapshots = root / node / "volumes" / volume / "snapshots"
    return all(
        (folder / "tree").is_dir() if folder.name.isdigit() else not folder.name.startswith(".")
        for folder in snapshots.iterdir()
        if folder.name != ".build.lock"
    )


def rsync_reference(root: Path, volume: str, record: Lease) -> tuple[float, int]:
    """rsync of the same change: from node A's newest snapshot of the volume to a copy (hard
    links) of the one before it (``record``'s)."""
    before = record.snapshot
    snapshots = root / record.owner / "volumes" / volume / "snapshots"
    trees = {}
    for folder in snapshots.iterdir():
        if folder.name.isdigit():
            meta = json.loads((folder / "meta.json").read_text())
            trees[meta["uuid"]] = (int(folder.name), folder / "tree")
    newest = max(trees.values())[1]
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        copy = Path(scratch) / "copy"
        subprocess.run(["cp", "-al", str(trees[before][1]), str(copy)], check=True)
        subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True)
        began = time.monotonic()
        done = subprocess.run(
            ["rsync", "-a", "--no-whole-file", "--stats", f"{newest}/", f"{copy}/"],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.monotonic() - began
    found = re.search(r"Total bytes sent: ([0-9,]+)", done.stdout)
    return seconds, int(found.group(1).replace(",", "")) if found else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4], help="GiB each")
    parser.add_argument("--changed", type=float, default=0.01, help="the share rewritten")
    parser.add_argument("--file-mib", type=int, default=1, help="the volume's file size")
    parser.add_argument(
        "--changed-mib",
        type=float,
        default=None,
        help="MiB rewritten at each move, whatever the size (instead of --changed)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="moves per size (the median)")
    parser.add_argument("--agent-logs", type=Path, help="a folder to keep the agents' logs in")
    parser.add_argument(
        "--together",
        action="store_true",
        help="write every size first, then move them in turn, size after size, move after "
        "move (what drifts on the machine meanwhile is then the same for every size)",
    )
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("move.py needs rsync (apt-get install rsync) for its reference")
    work = Path(tempfile.mkdtemp(prefix="dockyard-move-", dir="/var/tmp"))
    root = work / "agents" / "root"
    root.parent.mkdir(parents=True)
    os.environ.update(
        {NO_NEW_PRIVILEGES: "1", ROOT_ENV: str(root), ENGINE_SOCKET_ENV: NODE_ENGINE_SOCKET}
    )
    swarm = LocalSwarm.up(3, work / "swarm")
    try:
        runtime = SwarmRuntime(swarm.manager.url, [n.url for n in swarm.nodes])
        try:
            deploy(runtime, print)
        finally:
            runtime.close()
        warm_up(swarm)
        results = (move_together if args.together else move_in_turn)(swarm, root, args)
    finally:
        if args.agent_logs is not None:
            args.agent_logs.mkdir(parents=True, exist_ok=True)
            for node in swarm.nodes:
                (args.agent_logs / f"{node.name}.log").write_text(agent_log(node))
        swarm.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'size':>6} {'files':>7} {'changed':>9} {'downtime':>9} {'unmount':>8}"
          f" {'mount':>7} {'sent':>10} {'sent/changed':>13} {'rsync s':>8}"
          f" {'rsync sent':>11}")  # fmt: skip
    for r in results:
        print(
            f"{r['gib']:>4g} G {r['files']:>7} {r['changed_bytes'] / MIB:>7.1f} M "
            f"{r['downtime']:>7.2f} s {r['unmount']:>6.3f} s {r['mount']:>5.3f} s "
            f"{r['sent'] / MIB:>8.1f} M {r['sent'] / r['changed_bytes']:>12.2f}x "
            f"{r['rsync_seconds']:>7.2f} {r['rsync_sent'] / MIB:>9.1f} M"
        )
    print("\neach move, in order: downtime (the old node's unmount + the new node's mount, as the")
    print("agents logged them; the rest is the engines' stop and start of the containers), and")
    print("the old node's snapshot, taken after its unmount returned (the mount waits for it)")
    for r in results:
        moves = zip(r["downtimes"], r["unmounts"], r["mounts"], r["snapshots"], strict=True)
        print(
            f"{r['gib']:>4g} G  "
            + "  ".join(f"{d:.2f} ({u:.2f}+{m:.2f}; {t:.2f})" for d, u, m, t in moves)
        )
    print("\neach move's parts as the benchmark saw them: the old container's end to its")
    print("engine's wait returning (its unmount inside), its removal, the new one's creation, its")
    print("start to its first act (the mount inside)")
    for r in results:
        print(
            f"{r['gib']:>4g} G  "
            + "  ".join("/".join(f"{p:.2f}" for p in ps) for ps in r["phases"])
        )
    downtimes = [r["downtime"] for r in results]
    spread = max(downtimes) / min(downtimes) - 1 if min(downtimes) > 0 else float("inf")
    print(f"downtime spread between sizes: {spread:.0%} (goal: within 20%; each under 2 s)")


if __name__ == "__main__":
    main()
