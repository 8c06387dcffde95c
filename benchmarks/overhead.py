"""dockyard's overhead over the engine floor (issue 2's performance goal: at most 1.10x).

Runs, in one process and alternating, (a) a 200-instance scatter of a trivial step
(cpus 0.5) through dockyard's reconcile loop, and (b) the engine floor: the same 200
containers (same image, command, limits, init, security options, no network and /out bind) created,
started, waited for and removed directly with the docker SDK at the same concurrency
(pool CPUs / 0.5). Prints wall times and the ratio.

    .venv/bin/python benchmarks/overhead.py [--instances 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dockyard.backends.local.ports import local_ports
from dockyard.backends.local.runtime import DockerRuntime
from dockyard.execution import Executor
from dockyard.runtime.base import LABEL_PIPELINE, Bind, ContainerSpec
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing.images import BUSYBOX_IMAGE, ensure_busybox_image

CPUS = 0.5
MEMORY = 32 * 1024**2
COMMAND = "echo ${i} > /out/i"


def run_dockyard(workdir: Path, instances: int) -> float:
    values = ", ".join(f'"{n}"' for n in range(instances))
    path = workdir / "dockyard.yaml"
    path.write_text(
        textwrap.dedent(f"""
        version: 1
        name: bench-overhead
        steps:
          trivial:
            image: "{BUSYBOX_IMAGE}"
            resources: {{cpus: {CPUS}, memory: 32m}}
            scatter: {{i: [{values}]}}
            command: "{COMMAND}"
    """)
    )
    pf = load_pipeline(path)
    runtime = DockerRuntime()
    store = Store(pf.state_dir / "state.db")
    began = time.perf_counter()
    Executor(pf, runtime, store, ports=local_ports(pf)).run()
    elapsed = time.perf_counter() - began
    store.close()
    runtime.close()
    return elapsed


def run_floor(workdir: Path, instances: int, concurrency: int) -> float:
    runtime = DockerRuntime()

    def one(n: int) -> None:
        out = workdir / f"floor-{n}"
        out.mkdir()
        spec = ContainerSpec(
            image=BUSYBOX_IMAGE,
            command=("sh", "-c", COMMAND.replace("${i}", str(n))),
            cpus=CPUS,
            memory=MEMORY,
            labels={LABEL_PIPELINE: "bench-floor"},
            binds=(Bind(str(out), "/out", readonly=False),),
            network="none",  # as dockyard runs a step that asks for no network
        )
        cid = runtime.create(spec)
        runtime.start(cid)
        status = runtime.wait(cid)
        runtime.remove(cid)
        assert status.exit_code == 0, status

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(instances)))
    elapsed = time.perf_counter() - began
    runtime.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    probe = DockerRuntime()
    ensure_busybox_image(probe.api)
    host = probe.capacity()
    probe.close()
    concurrency = int(host.cpus / CPUS)

    floor_times: list[float] = []
    dockyard_times: list[float] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            floor_times.append(run_floor(Path(tmp), args.instances, concurrency))
        with tempfile.TemporaryDirectory() as tmp:
            dockyard_times.append(run_dockyard(Path(tmp), args.instances))

    floor, ours = statistics.median(floor_times), statistics.median(dockyard_times)
    print(
        f"{args.instances} instances, cpus {CPUS} each, {host.cpus:g} CPUs "
        f"-> concurrency {concurrency}, {args.rounds} round(s), median wall time"
    )
    print(f"{'':24}{'wall (s)':>10}{'per instance (ms)':>20}")
    print(f"{'engine floor (SDK)':24}{floor:>10.2f}{floor / args.instances * 1000:>20.1f}")
    print(f"{'dockyard run':24}{ours:>10.2f}{ours / args.instances * 1000:>20.1f}")
    print(f"ratio dockyard / floor: {ours / floor:.3f}  (goal <= 1.10)")
    print(
        f"all rounds: floor {[round(t, 2) for t in floor_times]}, "
        f"dockyard {[round(t, 2) for t in dockyard_times]}"
    )


if __name__ == "__main__":
    main()
