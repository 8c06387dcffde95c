"""Orchestrator time at scale: the real run loop over the fake runtime (containers end at once).

A scatter over N input files (each instance mounting only its own file) plus one gather,
run twice: a first run that starts every instance, then a no-change rerun in a separate
process that finds every cache key unchanged. With containers that take no time, what is
measured is dockyard itself: expanding and validating the pipeline, hashing inputs,
planning, launching, committing outputs and writing the state store. The baseline is the
same loop at 1,000 instances: per-instance time must not grow with N (linear planning).

    .venv/bin/python benchmarks/scale.py --instances 10000

The last line is ``instances=N first_s=F rerun_s=R peak_mb=M`` (peak RSS of the larger of
the two processes).

The pipeline's folder (its inputs, and ``.dockyard`` with the outputs and the state
database) is on tmpfs (``/dev/shm``) unless ``--dir`` names another place: the point is
dockyard's own time, and this VM's disk takes anywhere from 0.04 to 1 ms for one
``mkdir`` over a day, which would drown it (the script prints what a ``mkdir`` costs
where it runs, so the two can be told apart).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

IMAGE = "busybox:1.36"


def write_pipeline(root: Path, files: int) -> Path:
    data = root / "data"
    data.mkdir()
    past = time.time() - 60  # older than the few seconds in which a digest is not kept
    for n in range(files):
        (data / f"{n:06d}.txt").write_text(f"sample {n}\n")
        os.utime(data / f"{n:06d}.txt", (past, past))
    path = root / "dockyard.yaml"
    path.write_text(
        textwrap.dedent(f"""
        version: 1
        name: bench-scale
        defaults: {{image: "{IMAGE}", resources: {{cpus: 0.25, memory: 8m}}}}
        steps:
          count:
            scatter: {{f: {{glob: "data/*.txt"}}}}
            inputs: {{file: "./data/${{f}}"}}
            command: "cat /in/file > /out/n"
          total:
            needs: [count]
            command: "echo done > /out/total"
    """)
    )
    return path


def child(path: Path, expect_cached: bool) -> None:
    """One `dockyard run` in this process, on the fake runtime; prints its figures as JSON."""
    from dockyard.backends.local.ports import local_ports
    from dockyard.execution import Executor
    from dockyard.spec import load_pipeline
    from dockyard.state.store import Store
    from dockyard.testing import FakeRuntime

    began = time.perf_counter()
    runtime = FakeRuntime(cpus=2, memory=8 * 1024**3)  # this machine: eight at a time
    runtime.add_image(IMAGE)
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    run_id = Executor(pf, runtime, store, ports=local_ports(pf)).run()
    elapsed = time.perf_counter() - began
    states, cached = store.db.execute(  # (one query: checking is not the run's time)
        "SELECT group_concat(DISTINCT state), min(cached) FROM instances WHERE run_id=?",
        (run_id,),
    ).fetchone()
    store.close()
    if states != "succeeded" or bool(cached) != expect_cached:
        raise SystemExit(f"unexpected result: states {states}, all cached {bool(cached)}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "started": len(runtime.started)}))


def measured(path: Path, expect_cached: bool) -> dict[str, float]:
    """One run in a process of its own: the wall time of the whole process (interpreter
    start and imports included, as a user waits for `dockyard run`)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(path)]
        + (["--expect-cached"] if expect_cached else []),
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "seconds": wall}


def mkdir_cost(folder: Path, count: int = 500) -> float:
    """Microseconds per mkdir (and rmdir) under ``folder``: what the file system costs."""
    probe = folder / "mkdir-probe"
    probe.mkdir()
    began = time.perf_counter()
    for n in range(count):
        (probe / str(n)).mkdir()
    spent = time.perf_counter() - began
    for n in range(count):
        (probe / str(n)).rmdir()
    probe.rmdir()
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000, help="scattered instances")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expect-cached", action="store_true", help=argparse.SUPPRESS)
    shm = Path("/dev/shm")
    parser.add_argument(
        "--dir",
        type=Path,
        default=shm if shm.is_dir() else None,
        help="where to make the pipeline's folder (default: /dev/shm, a tmpfs)",
    )
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.expect_cached)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        mkdir_us = mkdir_cost(Path(tmp))
        path = write_pipeline(Path(tmp), args.instances)
        first = measured(path, expect_cached=False)
        rerun = measured(path, expect_cached=True)
    n = args.instances
    print(f"{n} instances scattered over input files, plus one gather; fake runtime")
    print(f"in {tmp} (one mkdir there: {mkdir_us:.0f} us)")
    print(f"{'':28}{'seconds':>10}{'per instance':>16}{'peak RSS':>12}")
    for label, figures in (("first run", first), ("no-change rerun", rerun)):
        per = figures["seconds"] / (n + 1) * 1000
        print(f"{label:28}{figures['seconds']:>10.2f}{per:>13.3f} ms{figures['peak_mb']:>9.0f} MB")
    peak = max(first["peak_mb"], rerun["peak_mb"])
    print(
        f"instances={n} first_s={first['seconds']:.2f} rerun_s={rerun['seconds']:.2f} "
        f"peak_mb={peak:.0f}"
    )


if __name__ == "__main__":
    main()
