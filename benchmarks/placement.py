"""Placement on a three-node Swarm (issue 13's performance goals), measured in one run.

1. **Makespan of a heterogeneous DAG** (CPU-heavy, memory-heavy and small instances; step
   durations are sleeps, so the 2 cores of this machine are not the limit): dockyard's
   placement (``--backend swarm``: packed, critical path first, pinned with ``node.id==``)
   against Swarm placing the same jobs itself: each instance a service of one replica with
   the same reservations and limits and no constraint, submitted by a small driver as soon
   as its upstreams have completed (in the file's order), left to Swarm's spread
   strategy. Goal: dockyard at least 20% shorter, and within 10% of the lower bound (the
   larger of total work / capacity and the critical path).
2. **Per-instance overhead of the Swarm backend**: the same 200-instance scatter of a
   trivial step through ``dockyard run --backend swarm`` and through the local backend on
   the main engine, as a ratio of wall times per instance.

The cluster is made by ``dockyard.testing.swarm`` (as ``scripts/swarm-local.sh up 3``) and
removed at the end.

    .venv/bin/python benchmarks/placement.py [--rounds 2] [--instances 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dockyard.backends.choice import LOCAL, SWARM, Backend
from dockyard.backends.local.runtime import DockerRuntime
from dockyard.backends.swarm.agents import ROOT_ENV
from dockyard.backends.swarm.runtime import NO_NEW_PRIVILEGES, SwarmRuntime
from dockyard.execution import Executor
from dockyard.runtime.base import Runtime
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing.images import BUSYBOX_IMAGE, ensure_busybox_image
from dockyard.testing.swarm import LocalSwarm

GIB = 1024**3


@dataclass(frozen=True)
class Job:
    step: str
    count: int
    cpus: float
    memory: int
    seconds: float
    needs: str | None = None  # each instance follows the instance of that step with its index


# Small long jobs first in the file: Swarm spreads them one per node, and then no node has
# room for a job that needs a whole node until they end. Packing puts them on one node.
# Durations in units of SCALE seconds (--scale): steps of real pipelines take minutes, next
# to which a task's start and end on Swarm (about a second on this machine) are small.
DAG = (
    Job("small", 3, 0.5, 1 * GIB, 20),
    Job("big", 3, 2.0, 2 * GIB, 10),
    Job("fat", 2, 0.25, 12 * GIB, 10),  # memory-heavy
    Job("check", 2, 0.5, 1 * GIB, 5, needs="fat"),
)
SCALE = 3.0


def scaled(dag: tuple[Job, ...], scale: float) -> tuple[Job, ...]:
    return tuple(replace(job, seconds=job.seconds * scale) for job in dag)


def pipeline_text(name: str, dag: tuple[Job, ...]) -> str:
    lines = ["version: 1", f"name: {name}", "steps:"]
    for job in dag:
        values = ", ".join(str(n) for n in range(job.count))
        lines += [
            f"  {job.step}:",
            f'    image: "{BUSYBOX_IMAGE}"',
            f"    resources: {{cpus: {job.cpus}, memory: {job.memory // GIB}g}}",
            f"    scatter: {{n: [{values}]}}",
            f'    command: "sleep {job.seconds:g}; echo ${{n}} > /out/n"',
        ]
        if job.needs:
            lines.append(f"    needs: [{job.needs}]")  # pairs on n with that step
    return "\n".join(lines) + "\n"


def lower_bound(dag: tuple[Job, ...], nodes: int, cpus: float, memory: int) -> float:
    cpu_work = sum(j.count * j.cpus * j.seconds for j in dag) / (nodes * cpus)
    memory_work = sum(j.count * j.memory * j.seconds for j in dag) / (nodes * memory)
    by_step = {j.step: j for j in dag}
    critical = max(j.seconds + (by_step[j.needs].seconds if j.needs else 0.0) for j in dag)
    return max(cpu_work, memory_work, critical)


# -- dockyard ------------------------------------------------------------------------------


def dockyard_run(swarm: LocalSwarm, workdir: Path, text: str) -> float:
    """``dockyard run --backend swarm``: with its node agents moving the data (deployed by
    the first run; not in the time)."""
    runtime = SwarmRuntime(swarm.manager.url, [n.url for n in swarm.nodes])
    return timed_run(workdir, text, runtime, SWARM)


def timed_run(workdir: Path, text: str, runtime: Runtime, backend: Backend = LOCAL) -> float:
    """Wall time of ``dockyard run`` of ``text`` on ``runtime`` (closed afterwards)."""
    path = workdir / "dockyard.yaml"
    path.write_text(text)
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    ports = backend.ports(pf, runtime, print)
    began = time.perf_counter()
    try:
        Executor(pf, runtime, store, ports=ports).run()
        return time.perf_counter() - began
    finally:
        store.close()
        runtime.close()


# -- Swarm placing the jobs itself ----------------------------------------------------------


def swarm_run(swarm: LocalSwarm, image: str, dag: tuple[Job, ...]) -> float:
    """Each instance a service of one replica, no constraint; submitted once its upstream
    completed, in the file's order; Swarm places them."""
    client: Any = swarm.manager.engine.client()
    pending = [(job, n) for job in dag for n in range(job.count)]
    running: dict[str, tuple[Job, int]] = {}
    done: set[tuple[str, int]] = set()
    began = time.perf_counter()
    try:
        while pending or running:
            for job, n in [p for p in pending if p[0].needs is None or (p[0].needs, p[1]) in done]:
                pending.remove((job, n))
                service = client.create_service(
                    {
                        "ContainerSpec": {
                            "Image": image,
                            "Args": ["sh", "-c", f"sleep {job.seconds:g}"],
                        },
                        "Resources": {
                            "Limits": {"NanoCPUs": int(job.cpus * 1e9), "MemoryBytes": job.memory},
                            "Reservations": {
                                "NanoCPUs": int(job.cpus * 1e9),
                                "MemoryBytes": job.memory,
                            },
                        },
                        "RestartPolicy": {"Condition": "none"},
                    },
                    name=f"bench-{job.step}-{n}",
                    mode={"Replicated": {"Replicas": 1}},
                    endpoint_spec={"Mode": "dnsrr"},
                    labels={"dockyard.benchmark": "placement"},
                )
                running[service["ID"]] = (job, n)
            for service_id, (job, n) in list(running.items()):
                states = [t["Status"]["State"] for t in client.tasks({"service": service_id})]
                if "complete" in states:
                    done.add((job.step, n))
                    del running[service_id]
                elif any(s in ("failed", "rejected") for s in states):
                    raise RuntimeError(f"{job.step}[{n}] failed on the swarm: {states}")
            time.sleep(0.2)
        return time.perf_counter() - began
    finally:
        for service in client.services({"label": "dockyard.benchmark=placement"}):
            client.remove_service(service["ID"])
        client.close()


# -- overhead -------------------------------------------------------------------------------


def scatter_text(instances: int) -> str:
    values = ", ".join(str(n) for n in range(instances))
    return textwrap.dedent(f"""
        version: 1
        name: bench-swarm-overhead
        steps:
          trivial:
            image: "{BUSYBOX_IMAGE}"
            resources: {{cpus: 0.5, memory: 32m}}
            scatter: {{i: [{values}]}}
            command: "echo ${{i}} > /out/i"
    """)


def local_run(workdir: Path, text: str) -> float:
    return timed_run(workdir, text, DockerRuntime())


@contextmanager
def local_swarm() -> Iterator[LocalSwarm]:
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-swarm-"))
    swarm = LocalSwarm.up(3, root)
    os.environ[NO_NEW_PRIVILEGES] = "1"  # the local cluster's nodes set it
    try:
        yield swarm
    finally:
        swarm.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--scale", type=float, default=SCALE, help="seconds per duration unit")
    parser.add_argument("--only", choices=("makespan", "overhead"), help="measure one of the two")
    args = parser.parse_args()
    dag = scaled(DAG, args.scale)
    os.environ.setdefault("DOCKYARD_HOME", tempfile.mkdtemp(prefix="dockyard-bench-home-"))
    # The nodes share this machine's disk: their agents keep their folders under a scratch one.
    os.environ.setdefault(ROOT_ENV, tempfile.mkdtemp(prefix="dockyard-bench-agents-"))
    probe = DockerRuntime()
    ensure_busybox_image(probe.api)
    probe.close()

    with local_swarm() as swarm:
        if args.only != "overhead":
            measure_makespan(swarm, dag, args.rounds)
        if args.only != "makespan":
            measure_overhead(swarm, args.instances, args.rounds)


def measure_makespan(swarm: LocalSwarm, dag: tuple[Job, ...], rounds: int) -> None:
    runtime = SwarmRuntime(swarm.manager.url)
    nodes = [n for n in runtime.nodes() if n.ready]
    image = runtime.image_id(BUSYBOX_IMAGE) or BUSYBOX_IMAGE
    runtime.close()
    cpus, memory = nodes[0].capacity.cpus, nodes[0].capacity.memory
    bound = lower_bound(dag, len(nodes), cpus, memory)
    ours: list[float] = []
    theirs: list[float] = []
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            text = pipeline_text(f"bench-place-{round_}", dag)
            ours.append(dockyard_run(swarm, Path(tmp), text))
        theirs.append(swarm_run(swarm, image, dag))
    mine, swarms = statistics.median(ours), statistics.median(theirs)
    print(
        f"makespan of the DAG on {len(nodes)} nodes of {cpus:g} CPUs and "
        f"{memory / GIB:.1f} GiB, median of {rounds} round(s)"
    )
    print(f"  lower bound (work / capacity, critical path): {bound:6.1f} s")
    print(f"  Swarm placing the jobs itself (spread):       {swarms:6.1f} s")
    print(f"  dockyard's placement (packed):                {mine:6.1f} s")
    print(
        f"  dockyard {100 * (1 - mine / swarms):.0f}% shorter than Swarm (goal >= 20%); "
        f"{mine / bound:.2f}x the lower bound (goal <= 1.10)"
    )
    print(f"  all rounds: dockyard {_rounded(ours)}, swarm {_rounded(theirs)}")


def swarm_floor(swarm: LocalSwarm, image: str, instances: int, concurrency: int) -> float:
    """The same trivial tasks as services made directly with the SDK, ``concurrency`` at a
    time, each polled until complete and removed: what Swarm itself costs."""
    client: Any = swarm.manager.engine.client()

    def one(n: int) -> None:
        service = client.create_service(
            {
                "ContainerSpec": {"Image": image, "Args": ["sh", "-c", f"echo {n}"]},
                "Resources": {
                    "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 32 * 1024**2},
                    "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 32 * 1024**2},
                },
                "RestartPolicy": {"Condition": "none"},
            },
            name=f"bench-floor-{n}",
            mode={"Replicated": {"Replicas": 1}},
            endpoint_spec={"Mode": "dnsrr"},
        )
        while not any(
            t["Status"]["State"] == "complete" for t in client.tasks({"service": service["ID"]})
        ):
            time.sleep(0.1)
        client.remove_service(service["ID"])

    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(instances)))
        return time.perf_counter() - began
    finally:
        client.close()


def measure_overhead(swarm: LocalSwarm, instances: int, rounds: int) -> None:
    runtime = SwarmRuntime(swarm.manager.url)
    image = runtime.image_id(BUSYBOX_IMAGE) or BUSYBOX_IMAGE
    concurrency = int(runtime.capacity().cpus / 0.5)
    runtime.close()
    on_swarm: list[float] = []
    floor: list[float] = []
    on_engine: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            on_swarm.append(dockyard_run(swarm, Path(tmp), scatter_text(instances)))
        floor.append(swarm_floor(swarm, image, instances, concurrency))
        with tempfile.TemporaryDirectory() as tmp:
            on_engine.append(local_run(Path(tmp), scatter_text(instances)))
    swarm_wall, local_wall = statistics.median(on_swarm), statistics.median(on_engine)
    floor_wall = statistics.median(floor)
    print(f"\n{instances}-instance scatter of a trivial step (cpus 0.5), median wall time")
    for what, wall in (
        ("local backend (one engine, 2 CPUs)", local_wall),
        ("swarm backend (3 nodes, 6 CPUs)", swarm_wall),
        (f"Swarm floor (SDK, {concurrency} at a time)", floor_wall),
    ):
        print(f"  {what:36} {wall:6.1f} s, {wall / instances * 1000:6.0f} ms per instance")
    print(f"  ratio swarm backend / local backend per instance: {swarm_wall / local_wall:.2f}")
    print(f"  ratio swarm backend / Swarm floor: {swarm_wall / floor_wall:.2f}")
    print(
        f"  all rounds: swarm {_rounded(on_swarm)}, floor {_rounded(floor)}, "
        f"local {_rounded(on_engine)}"
    )


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 1) for t in times]


if __name__ == "__main__":
    main()
