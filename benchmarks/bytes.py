"""Bytes on one node and between nodes (issue 24): dockyard's commit and fetch against a
plain copy of the same tree over the same path, in one run.

On a three-node local Swarm with dockyard's node agents (each node its own ``dockerd`` in
network and mount namespaces of its own; the agents' root on the host's disk), for each
size (``--sizes``, GiB) and each shape (``--shapes``: ``big``, one file; ``small``,
``--files`` files of equal size, 10,000 by default), a source tree of random data is
written once on the host, then:

**Commit, on one node (node A).**
  - *dockyard*: a container on A copies the source into a staging folder its agent made
    (``cp -a /src/. /out/``), then the agent seals it and keeps it by its digest
    (``staging/commit``: every byte read and hashed once, in one walk);
  - *baseline*: the same container copies the source into a plain folder, then one
    ``sha256sum`` reads every file (``find -type f | xargs sha256sum``).

**Fetch, between nodes (A to B).**
  - *dockyard*: B's agent fetches the committed tree from A's agent
    (``objects/fetch``: the signed tree stream over the nodes' network, the digest checked
    before it is kept);
  - *baseline*: ``tar c`` of the same kept tree in A's network namespace, through a TCP
    socket to B's (a small Python relay at each end: 1 MiB reads and writes), into
    ``tar x`` there.

A ratio is baseline seconds / dockyard seconds: 1.0 is as fast as the plain copy, the goal
is at least 0.8. Each is timed ``--repeat`` times (3 by default; baseline and dockyard in
turn), and the median is what counts: the machine may be shared. Each agent's peak
resident memory (``VmHWM`` of its process) and this process's are printed after each
size: they must not grow with it. What a size left on disk is removed before the next;
``sync`` runs before each timing.

    .venv/bin/python benchmarks/bytes.py [--sizes 1 4 16] [--shapes big small] [--repeat 3]
    .venv/bin/python benchmarks/bytes.py --sizes 0.25 --files 1000 --repeat 1   # a first try
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.agent import layout
from dockyard.backends.swarm.agents import ENGINE_SOCKET_ENV, ROOT_ENV, deploy
from dockyard.backends.swarm.ports import AgentPool
from dockyard.backends.swarm.runtime import NO_NEW_PRIVILEGES, SwarmRuntime
from dockyard.testing.dockerd import NODE_ENGINE_SOCKET
from dockyard.testing.images import BUSYBOX_IMAGE
from dockyard.testing.swarm import LocalSwarm, SwarmNode

MIB = 1024**2
GIB = 1024**3
PORT = 47011  # the baseline's socket, on node B
RELAY_IN = (
    "import os, socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1)\n"
    "print('ready', file=sys.stderr, flush=True)\n"
    "c, _ = s.accept(); buf = bytearray(1 << 20); view = memoryview(buf)\n"
    "while n := c.recv_into(buf):\n"
    "    w = 0\n"
    "    while w < n: w += os.write(1, view[w:n])\n"
)
RELAY_OUT = (
    "import os, socket, sys\n"
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
    "while data := os.read(0, 1 << 20): c.sendall(data)\n"
    "c.close()\n"
)


def node_id(node: SwarmNode) -> str:
    api = node.engine.client()
    try:
        return str(api.info()["Swarm"]["NodeID"])
    finally:
        api.close()


def run_container(node: SwarmNode, binds: list[str], script: str) -> None:
    api = node.engine.client()
    try:
        container = api.create_container(
            BUSYBOX_IMAGE, ["sh", "-c", script], host_config=api.create_host_config(binds=binds)
        )["Id"]
        api.start(container)
        status = api.wait(container, timeout=7200)["StatusCode"]
        output = api.logs(container).decode(errors="replace")
        api.remove_container(container)
    finally:
        api.close()
    if status != 0:
        raise RuntimeError(f"a container on {node.name} failed: {output}")


def agent_peak_mib(node: SwarmNode) -> float:
    """The peak resident memory of the node's agent (the VmHWM of the largest process in
    its containers), in MiB."""
    api = node.engine.client()
    try:
        found = [
            c
            for c in api.containers()
            if c["Labels"].get("com.docker.swarm.service.name", "").startswith("dockyard-agent")
        ]
        pids = []  # (every process in the agents' containers, by its host pid)
        for c in found:
            top = api.top(c["Id"], ps_args="-eo pid")
            pids += [int(row[0]) for row in top["Processes"]]
    finally:
        api.close()
    peaks = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=float("nan"))


def make_source(path: Path, size: int, files: int) -> None:
    """``files`` files of random data, ``size`` bytes in all (a pool of random bytes,
    written at a different offset each MiB: no two MiB alike)."""
    pool = os.urandom(64 * MIB + MIB)
    path.mkdir(parents=True)
    each = size // files
    written = 0
    for i in range(files):
        target = path / (f"f{i:05d}" if files > 1 else "data")
        with open(target, "wb", buffering=0) as out:
            left = each
            while left:
                n = min(left, MIB)
                at = (written // MIB * 7919 * 4096) % (64 * MIB)
                out.write(pool[at : at + n])
                left -= n
                written += n


def timed(act: Callable[[], Any]) -> float:
    subprocess.run(["sync"], check=True)
    began = time.monotonic()
    act()
    return time.monotonic() - began


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def baseline_fetch(a: SwarmNode, b: SwarmNode, tree: Path, into: Path) -> None:
    into.mkdir(parents=True)
    receiver = subprocess.Popen(
        b.engine.nsenter(
            "sh", "-c", f'"$0" -c "$1" {PORT} | tar x -C {into}', sys.executable, RELAY_IN
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stderr is not None
        if receiver.stderr.readline().strip() != "ready":
            raise RuntimeError("the baseline's receiver did not start")
        subprocess.run(
            a.engine.nsenter(
                "sh",
                "-c",
                f'tar c -C {tree} . | "$0" -c "$1" {b.address} {PORT}',
                sys.executable,
                RELAY_OUT,
            ),
            check=True,
        )
        if receiver.wait(timeout=3600) != 0:
            raise RuntimeError("the baseline's receiver failed")
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def measure(
    pool: AgentPool,
    a: SwarmNode,
    b: SwarmNode,
    ids: tuple[str, str],
    root: Path,
    work: Path,
    gib: float,
    files: int,
    repeat: int,
) -> dict[str, Any]:
    a_id, b_id = ids
    copy = "cp -a /src/. /out/"
    size = int(gib * GIB) // files * files
    source = work / "source"
    make_source(source, size, files)
    result: dict[str, Any] = {"gib": gib, "files": files, "size": size}
    times: dict[str, list[float]] = {
        k: [] for k in ("commit_base", "commit", "fetch_base", "fetch")
    }
    try:
        digest = ""
        for _ in range(repeat):  # (each side in turn: the machine's noise falls on both)
            # -- commit on node A --------------------------------------------------------
            plain = work / "plain"
            plain.mkdir()
            binds = [f"{source}:/src:ro", f"{plain}:/out"]

            def plain_commit(binds: list[str] = binds, plain: Path = plain) -> None:
                run_container(a, binds, copy)
                subprocess.run(
                    f"find {plain} -type f -print0 | xargs -0 sha256sum > /dev/null",
                    shell=True,
                    check=True,
                )

            times["commit_base"].append(timed(plain_commit))
            remove(plain)
            staging = {"project": "bytes", "run": uuid.uuid4().hex[:8], "name": "out"}
            made = pool.call(a_id, "staging/make", staging)
            kept: dict[str, Any] = {}

            def dockyard_commit(
                made: dict[str, Any] = made,
                staging: dict[str, str] = staging,
                kept: dict[str, Any] = kept,
            ) -> None:
                run_container(a, [f"{source}:/src:ro", f"{made['path']}:/out"], copy)
                kept.update(pool.call(a_id, "staging/commit", staging))

            times["commit"].append(timed(dockyard_commit))
            digest = str(kept["digest"])
        tree = Path(layout.object_dir(str(root), a_id, digest))
        fetched = Path(layout.object_dir(str(root), b_id, digest))
        source_address = pool.addresses()[a_id]
        body = {"digest": digest, "source": source_address, "source_node": a_id}
        into = work / "fetched"
        for _ in range(repeat):
            # -- fetch from A to B -------------------------------------------------------
            times["fetch_base"].append(timed(lambda: baseline_fetch(a, b, tree, into)))
            remove(into)
            times["fetch"].append(timed(lambda: pool.call(b_id, "objects/fetch", body)))
            if not fetched.is_dir():
                raise RuntimeError(f"node B keeps no {digest[:12]} after the fetch")
            remove(fetched)
        for name, seconds in times.items():
            result[name] = statistics.median(seconds)
            result[f"{name}_all"] = seconds
        result["agent_mib"] = (agent_peak_mib(a), agent_peak_mib(b))
        result["self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        for node in (a_id, b_id):
            outputs = root / node / "outputs"
            for kept_tree in outputs.glob("*") if outputs.is_dir() else []:
                if kept_tree.name != ".incoming" and kept_tree.is_dir():
                    remove(kept_tree)
            remove(root / node / "projects")
        for left in ("source", "plain", "fetched"):
            remove(work / left)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], help="GiB each")
    parser.add_argument("--shapes", nargs="+", choices=["big", "small"], default=["big", "small"])
    parser.add_argument("--files", type=int, default=10_000, help="files of the small shape")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each (the median)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bytes-", dir="/var/tmp"))
    root = work / "agents" / "root"
    root.parent.mkdir(parents=True)
    os.environ.update(
        {NO_NEW_PRIVILEGES: "1", ROOT_ENV: str(root), ENGINE_SOCKET_ENV: NODE_ENGINE_SOCKET}
    )
    results = []
    swarm = LocalSwarm.up(3, work / "swarm")
    try:
        runtime = SwarmRuntime(swarm.manager.url, [n.url for n in swarm.nodes])
        try:
            pool = deploy(runtime, print)
            a, b = swarm.nodes[1], swarm.nodes[2]
            ids = (node_id(a), node_id(b))
            for gib in args.sizes:
                for shape in args.shapes:
                    files = 1 if shape == "big" else args.files
                    r = measure(pool, a, b, ids, root, work / "data", gib, files, args.repeat)
                    results.append(r)
                    print(
                        f"{gib:g} GiB x {files} file(s): commit {r['commit']:.2f} s (base "
                        f"{r['commit_base']:.2f} s), fetch {r['fetch']:.2f} s (base "
                        f"{r['fetch_base']:.2f} s); each: "
                        + ", ".join(f"{k} {r[k + '_all']}" for k in ("commit", "fetch")),
                        flush=True,
                    )
        finally:
            runtime.close()
    finally:
        swarm.down()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{'size':>8} {'files':>6} | {'commit':>7} {'base':>7} {'ratio':>6} |"
        f" {'fetch':>7} {'base':>7} {'ratio':>6} {'MiB/s':>6} | agents' peak MiB (A, B), ours"
    )
    for r in results:
        print(
            f"{r['gib']:>6g} G {r['files']:>6} | {r['commit']:>6.2f}s {r['commit_base']:>6.2f}s"
            f" {r['commit_base'] / r['commit']:>5.2f}x | {r['fetch']:>6.2f}s"
            f" {r['fetch_base']:>6.2f}s {r['fetch_base'] / r['fetch']:>5.2f}x"
            f" {r['size'] / MIB / r['fetch']:>6.0f} | {r['agent_mib'][0]:.0f}, "
            f"{r['agent_mib'][1]:.0f}, {r['self_mib']:.0f}"
        )
    print("ratio = baseline s / dockyard s (goal: at least 0.8)")


if __name__ == "__main__":
    main()
