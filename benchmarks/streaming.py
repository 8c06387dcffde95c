"""Streaming throughput of A | B | C (issue 5's goal: at least 90% of native).

Pushes the same bytes through generate | transform | count three ways, in one run:
  native      the same static busybox binaries as a shell pipeline on the host;
  dockyard    three containers joined by `stdin:` (kernel FIFOs), container start-up
              and commit included (the reconcile loop runs in this process);
  docker -i   `docker run … | docker run -i … | docker run -i …`, whose bytes travel
              through the engine's attach API.
CPU quotas are hard limits in dockyard, so each stage gets what it uses natively
(measured: dd 0.16, tr 0.8, wc 0.8 of a core on this machine); the docker -i chain gets
the same limits.

    .venv/bin/python benchmarks/streaming.py [--gib 2] [--rounds 3] [--skip-docker-i]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from dockyard.backends.local.ports import local_ports
from dockyard.backends.local.runtime import DockerRuntime
from dockyard.execution import Executor, RunOptions
from dockyard.images.busybox import find_static_busybox
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing.images import BUSYBOX_IMAGE, ensure_busybox_image

CPUS = {"generate": 0.25, "transform": 0.85, "count": 0.9}


def stages(mib: int) -> dict[str, str]:
    return {
        "generate": f"dd if=/dev/zero bs=1M count={mib} 2>/dev/null",
        "transform": "tr '\\000' x",
        "count": "wc -c",
    }


def native(mib: int) -> tuple[float, int]:
    bb = find_static_busybox()
    s = stages(mib)
    line = f"{bb} {s['generate']} | {bb} {s['transform']} | {bb} {s['count']}"
    began = time.perf_counter()
    out = subprocess.run(["sh", "-c", line], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - began, int(out)


def docker_i(mib: int) -> tuple[float, int]:
    s = stages(mib)

    def run(stage: str, interactive: bool) -> str:
        flag = "-i " if interactive else ""
        return (
            f'docker run --rm {flag}--cpus {CPUS[stage]} -m 64m {BUSYBOX_IMAGE} sh -c "{s[stage]}"'
        )

    line = f"{run('generate', False)} | {run('transform', True)} | {run('count', True)}"
    began = time.perf_counter()
    out = subprocess.run(["sh", "-c", line], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - began, int(out)


def dockyard(mib: int, workdir: Path) -> tuple[float, int]:
    s = stages(mib)
    path = workdir / "dockyard.yaml"
    path.write_text(
        textwrap.dedent(f"""
        version: 1
        name: bench-streaming
        defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{memory: 64m}}}}
        steps:
          generate:
            resources: {{cpus: {CPUS["generate"]}}}
            command: "{s["generate"]}"
          transform:
            stdin: generate
            resources: {{cpus: {CPUS["transform"]}}}
            command: ["tr", "\\\\000", "x"]
          count:
            stdin: transform
            resources: {{cpus: {CPUS["count"]}}}
            command: "{s["count"]} > /out/bytes"
    """)
    )
    pf = load_pipeline(path)
    runtime = DockerRuntime()
    store = Store(pf.state_dir / "state.db")
    began = time.perf_counter()
    Executor(pf, runtime, store, ports=local_ports(pf), options=RunOptions(no_cache=True)).run()
    elapsed = time.perf_counter() - began
    row = next(r for r in store.instances(store.run().id) if r.instance == "count")
    output = store.output_path(row.output or "")
    store.close()
    runtime.close()
    return elapsed, int(Path(output or "").joinpath("bytes").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # busybox wc counts in 32 bits here: keep below 4 GiB.
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-docker-i", action="store_true")
    args = parser.parse_args()
    mib = int(args.gib * 1024)
    probe = DockerRuntime()
    ensure_busybox_image(probe.api)
    probe.close()

    times: dict[str, list[float]] = {"native": [], "dockyard": [], "docker -i": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, measure in (
                ("native", lambda: native(mib)),
                ("dockyard", lambda: dockyard(mib, Path(tmp))),
            ):
                elapsed, count = measure()
                assert count == mib * 1024 * 1024, (name, count)
                times[name].append(elapsed)
    if not args.skip_docker_i:
        elapsed, count = docker_i(mib)
        assert count == mib * 1024 * 1024, ("docker -i", count)
        times["docker -i"].append(elapsed)

    size_mb = mib * 1024 * 1024 / 1e6
    base = statistics.median(times["native"])
    print(
        f"{args.gib:g} GiB through generate | transform | count; median of "
        f"{args.rounds} round(s) (docker -i: 1)"
    )
    print(f"{'':12}{'wall (s)':>10}{'MB/s':>10}{'of native':>12}   rounds")
    for name, values in times.items():
        if not values:
            continue
        wall = statistics.median(values)
        print(
            f"{name:12}{wall:>10.2f}{size_mb / wall:>10.0f}{base / wall:>11.0%}   "
            f"{[round(v, 2) for v in values]}"
        )
    print("goal: dockyard at least 90% of native throughput, start-up included")


if __name__ == "__main__":
    main()
