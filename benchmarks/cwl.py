"""A CWL workflow on dockyard against the reference runner (issue 23's targets: at most
0.6x cwltool's time fresh, at most 0.3x a no-change rerun with cwltool's cache).

The workflow is the genomics example written in CWL (examples/genomics-cwl: simulate a
reference and each sample's reads, index, align, sort, call, gather), with the same
images; each round runs, one after the other:

  cwltool fresh     `cwltool --parallel --outdir O --cachedir C1` with an empty C1 (its
                    cache must be on to be reused below; off, it costs the same)
  dockyard fresh    `dockyard-cwl --outdir O --cachedir C2` with an empty C2
  cwltool rerun     the same cwltool command again (C1 as the first run left it)
  dockyard rerun    the same dockyard-cwl command again (C2 as the first run left it)

and checks that both runners' calls are the same bytes. The images are made first (once,
outside the timings).

    .venv/bin/python benchmarks/cwl.py [--rounds 3] [--samples 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "genomics-cwl" / "genomics.cwl"
IMAGES = REPO / "examples" / "genomics-cwl" / "images.yaml"
BIN = Path(sys.executable).parent


def job_file(folder: Path, samples: int) -> Path:
    scripts = REPO / "examples" / "genomics" / "scripts"
    names = ", ".join(f"s{n}" for n in range(1, samples + 1))
    path = folder / "job.yml"
    path.write_text(
        f"simulate: {{class: File, path: {scripts / 'simulate.py'}}}\n"
        f"call_script: {{class: File, path: {scripts / 'call.sh'}}}\n"
        f"seed: 7\nsamples: [{names}]\n"
    )
    return path


def timed(argv: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took


def one_round(work: Path, job: Path) -> dict[str, float]:
    for name in ("cwltool-cache", "dockyard-cache", "out-cwltool", "out-dockyard"):
        shutil.rmtree(work / name, ignore_errors=True)
    cwltool = [
        str(BIN / "cwltool"),
        "--quiet",
        "--parallel",
        "--outdir",
        str(work / "out-cwltool"),
        "--cachedir",
        str(work / "cwltool-cache"),
        str(WORKFLOW),
        str(job),
    ]
    dockyard = [
        str(BIN / "dockyard-cwl"),
        "--quiet",
        "--outdir",
        str(work / "out-dockyard"),
        "--cachedir",
        str(work / "dockyard-cache"),
        str(WORKFLOW),
        str(job),
    ]
    times = {
        "cwltool fresh": timed(cwltool, work),
        "dockyard fresh": timed(dockyard, work),
        "cwltool rerun": timed(cwltool, work),
        "dockyard rerun": timed(dockyard, work),
    }
    ours = (work / "out-dockyard" / "calls.tsv").read_bytes()
    theirs = (work / "out-cwltool" / "calls.tsv").read_bytes()
    if ours != theirs or not ours:
        raise SystemExit("the two runners' calls differ")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    subprocess.run(
        [str(BIN / "dockyard-cwl"), "--images", str(IMAGES), "--make-images"],
        check=True,
        capture_output=True,
    )
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cwl-") as scratch:
        work = Path(scratch)
        job = job_file(work, args.samples)
        for n in range(args.rounds):
            for name, took in one_round(work, job).items():
                results.setdefault(name, []).append(took)
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()))
        # cwltool's cache is written by its containers as root: clean it up as root can
        subprocess.run(["rm", "-rf", str(work)], check=False)
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"\n{args.samples} samples, {args.rounds} rounds, medians ({os.cpu_count()} CPUs):")
    for name, value in median.items():
        print(f"  {name:15s} {value:6.2f} s")
    fresh = median["dockyard fresh"] / median["cwltool fresh"]
    rerun = median["dockyard rerun"] / median["cwltool rerun"]
    print(f"fresh: dockyard / cwltool = {fresh:.2f}x (target at most 0.6x)")
    print(f"rerun: dockyard / cwltool = {rerun:.2f}x (target at most 0.3x)")


if __name__ == "__main__":
    main()
