"""Making images from Debian packages: two at once against one after the other (issue 6).

Makes the same two recipes (bwa; samtools + bcftools) twice in one run, forced each time:
once one after the other (the baseline), once with dockyard's BUILD_WORKERS side by side,
and prints both times and their ratio. A first, unmeasured round makes the minbase and
fills the package cache, so the rounds measure what every image after the first costs:
a copy of the base, apt-get in a chroot, trimming, packing and the engine's import.
Needs root and the machine's Debian mirror.

    sudo .venv/bin/python benchmarks/debian_images.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.images.resolve import BUILD_WORKERS, make_image, make_images
from dockyard.spec import load_pipeline

PIPELINE = """\
version: 1
name: bench-images
images:
  bwa: {debian: {include: [bwa]}, tag: "dockyard-bench/bwa:1"}
  samtools: {debian: {include: [samtools, bcftools]}, tag: "dockyard-bench/samtools:1"}
steps:
  a: {image: {ref: bwa}, command: "true"}
  b: {image: {ref: samtools}, command: "true"}
"""
NAMES = ("bwa", "samtools")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    runtime = DockerRuntime()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DOCKYARD_HOME"] = str(Path(tmp) / "home")  # its own package cache
        path = Path(tmp) / "dockyard.yaml"
        path.write_text(PIPELINE)
        pf = load_pipeline(path)
        # The base and the package cache, once, so that both ways download nothing.
        make_images(pf, [(n, False) for n in NAMES], runtime, force=True)
        serial: list[float] = []
        side_by_side: list[float] = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            for name in NAMES:
                make_image(pf, name, runtime, force=True)
            serial.append(time.perf_counter() - began)
            began = time.perf_counter()
            make_images(pf, [(n, False) for n in NAMES], runtime, force=True)
            side_by_side.append(time.perf_counter() - began)
    for name in NAMES:
        runtime.api.remove_image(pf.pipeline.images[name].tag or "", force=True)
    runtime.close()
    one, both = statistics.median(serial), statistics.median(side_by_side)
    print(f"rounds {args.rounds}, {os.cpu_count()} CPUs, BUILD_WORKERS {BUILD_WORKERS}")
    print(f"one after the other: {one:.1f} s (rounds: {', '.join(f'{t:.1f}' for t in serial)})")
    print(
        f"side by side:        {both:.1f} s (rounds: {', '.join(f'{t:.1f}' for t in side_by_side)})"
    )
    print(f"ratio side by side / one after the other: {both / one:.2f}")


if __name__ == "__main__":
    main()
