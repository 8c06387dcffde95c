"""No-change rerun of a 1,000-instance pipeline (issue 3's goal: under 2 s wall).

The pipeline scatters over 999 input files (each instance mounts only its own file)
and gathers them in one more instance. The first run starts 1,000 containers; each
rerun, as a separate `dockyard run` process (interpreter start-up included), finds
every cache key unchanged and starts none. Prints both beside each other.

    .venv/bin/python benchmarks/resume.py [--files 999] [--reruns 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.testing.images import BUSYBOX_IMAGE, ensure_busybox_image


def timed_run(path: Path) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dockyard", "run", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=999)
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()
    probe = DockerRuntime()
    ensure_busybox_image(probe.api)
    probe.close()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        for n in range(args.files):
            (root / "data" / f"{n:04d}.txt").write_text(f"sample {n}\n" * 100)
        path = root / "dockyard.yaml"
        path.write_text(
            textwrap.dedent(f"""
            version: 1
            name: bench-resume
            defaults: {{image: "{BUSYBOX_IMAGE}", resources: {{cpus: 0.5, memory: 16m}}}}
            steps:
              count:
                scatter: {{f: {{glob: "data/*.txt"}}}}
                inputs: {{file: "./data/${{f}}"}}
                command: "wc -l < /in/file > /out/n"
              total:
                needs: [count]
                command: "cat /in/count/*/n | wc -l > /out/total"
        """)
        )
        first = timed_run(path)
        reruns = [timed_run(path) for _ in range(args.reruns)]

    instances = args.files + 1
    rerun = statistics.median(reruns)
    print(f"{instances} instances ({args.files} scattered over input files + 1 gather)")
    print(f"{'':34}{'wall (s)':>10}")
    print(f"{'first run (starts every container)':34}{first:>10.2f}")
    print(f"{'no-change rerun (median of ' + str(args.reruns) + ')':34}{rerun:>10.2f}")
    print(
        f"rerun / first run: {rerun / first:.4f}; goal: rerun under 2 s "
        f"({'met' if rerun < 2 else 'NOT met'}); reruns {[round(r, 2) for r in reruns]}"
    )


if __name__ == "__main__":
    main()
