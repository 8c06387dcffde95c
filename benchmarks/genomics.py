"""The genomics example at a realistic size (issue 24): dockyard on one machine, dockyard on
a three-node local Swarm, and the same tool commands natively on the host, in one run.

The pipeline is examples/genomics/dockyard.yaml's compute steps (reference with planted
variants and each sample's haplotypes, dwgsim reads, bwa index, samtools faidx, bwa mem |
samtools sort, bcftools calls), taken from a copy of the example with its database, load
and summary left out; the database's share of the CPUs is given back (`defaults`: 1 CPU
a step instead of 0.75). The size comes in as the example's parameters (`--param`) and a
sample sheet written next to the copy. Each mode starts from nothing (a fresh copy, state
and `--no-cache`):

  local    `dockyard run` on this machine's engine
  swarm    `dockyard run --backend swarm` on `scripts/swarm-local.sh up 3` (made, used and
           removed within the mode; the example's images copied to its manager first)
  native   benchmarks/genomics_native.sh: the same commands on the host's own tools
           (Debian's dwgsim, bwa, samtools, bcftools, python3), JOBS at a time per stage
           with `xargs -P`, the same files between steps
  snakemake  Snakemake 9.27.1 (its own venv under the work folder) running the same
           commands natively, JOBS jobs at a time (`--cores JOBS`)

It checks that every mode's calls are the same bytes (`calls.tsv`) and that the reads are
the same bytes in dockyard and natively, and reports recall and precision against the
planted variants, wall time, and per step the instances' summed duration, CPU seconds and
peak memory (dockyard: `dockyard status --json`, the container's cgroup; native: GNU
time, the largest process), and the ratios.

    .venv/bin/python benchmarks/genomics.py                      # 5 Mb, 8 samples, 30x
    .venv/bin/python benchmarks/genomics.py --genome-mb 1 --samples 4   # quicker
    .venv/bin/python benchmarks/genomics.py --moderate   # issue 24's "moderate" size against
                                                         # Snakemake: 1 Mb, 4 samples, 30x,
                                                         # every step 1 CPU, 2 jobs

`--lock FILE` holds an flock on FILE during each mode (not between them), for machines
shared with other heavy work. Needs root (the swarm, making images), and the host tools
(`apt-get install dwgsim bwa samtools bcftools`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "genomics"
NATIVE = REPO / "benchmarks" / "genomics_native.sh"
BIN = Path(sys.executable).parent
DOCKYARD = str(BIN / "dockyard")
SNAKEMAKE_VERSION = "9.27.1"
IMAGES = (
    "dockyard/python3:bookworm",
    "dockyard/dwgsim:0.1.14",
    "dockyard/bwa:0.7.17",
    "dockyard/samtools:1.16",
)
STEPS = ("reference", "reads", "index", "faidx", "align", "sort", "call")
Variant = tuple[str, int, str, str]


@dataclass
class Size:
    genome: int
    samples: int
    depth: int
    threads: int
    seed: int
    jobs: int
    one_cpu: bool  # every step given 1 CPU (the "moderate" measurement)

    def params(self, sheet: str) -> list[str]:
        values = {
            "genome_length": self.genome,
            "sheet": sheet,
            "depth": self.depth,
            "threads": self.threads,
            "seed": self.seed,
        }
        return [arg for k, v in values.items() for arg in ("--param", f"{k}={v}")]


@dataclass
class Result:
    mode: str
    wall: float
    calls: dict[str, bytes]  # sample -> calls.tsv
    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    reads: dict[str, str] = field(default_factory=dict)  # sample -> digest of its FASTQs
    truth: bytes = b""


# -- the pipeline ----------------------------------------------------------------------------


def sheet_text(samples: int) -> str:
    """s1..sN, read seeds 11.. (the example's samples.csv is the first four)."""
    return "sample,seed\n" + "".join(f"s{n},{10 + n}\n" for n in range(1, samples + 1))


def prepare(dest: Path, size: Size) -> Path:
    """A copy of the example without its database, with the sheet written next to it."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".dockyard"))
    yaml = YAML()
    path = dest / "dockyard.yaml"
    spec = yaml.load(path)
    del spec["services"]
    del spec["volumes"]["variants-db"]
    for step in ("load", "summary"):
        del spec["steps"][step]
    spec["defaults"]["resources"]["cpus"] = 1  # the database's share given back
    if size.one_cpu:
        for step in spec["steps"].values():
            if "resources" in step:
                step["resources"]["cpus"] = 1
    with path.open("w") as out:
        yaml.dump(spec, out)
    (dest / sheet_name(size)).write_text(sheet_text(size.samples))
    return path


def sheet_name(size: Size) -> str:
    return f"samples-{size.samples}.csv"


# -- running ---------------------------------------------------------------------------------


@contextlib.contextmanager
def held(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    began = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    took = time.perf_counter() - began
    if done.returncode != 0:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{tail}")
    return took


def dockyard_json(argv: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run([DOCKYARD, *argv], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


def output_folder(path: Path, instance: str, env: dict[str, str]) -> Path:
    done = subprocess.run(
        [DOCKYARD, "outputs", "-f", str(path), instance],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return Path(done.stdout.strip())


def step_usage(status: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per step: instances, summed duration, summed CPU seconds, largest peak memory, and
    the span from the first attempt's start to the last one's end."""
    steps: dict[str, dict[str, float]] = {}
    for instance in status["instances"]:
        row = steps.setdefault(
            instance["step"],
            {"n": 0, "duration": 0.0, "cpu": 0.0, "peak": 0.0, "start": 1e18, "end": 0.0},
        )
        row["n"] += 1
        for attempt in instance["attempts"]:
            if attempt["state"] != "succeeded":
                continue
            row["duration"] += attempt["ended_at"] - attempt["started_at"]
            row["cpu"] += attempt["cpu_seconds"] or 0.0
            row["peak"] = max(row["peak"], float(attempt["peak_memory"] or 0))
            row["start"] = min(row["start"], attempt["started_at"])
            row["end"] = max(row["end"], attempt["ended_at"])
    return steps


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def run_dockyard(
    mode: str, work: Path, size: Size, env: dict[str, str], samples: list[str]
) -> Result:
    path = prepare(work / f"pipeline-{mode}", size)
    env = {**env, "DOCKYARD_HOME": str(work / f"home-{mode}")}
    argv = [DOCKYARD, "run", "-f", str(path), "--no-cache", *size.params(sheet_name(size))]
    if mode == "swarm":
        argv += ["--backend", "swarm"]
    print(f"[{mode}] dockyard run ...", flush=True)
    wall = run(argv, work / f"{mode}.log", env=env)
    (work / f"{mode}.wall").write_text(f"{wall}\n")
    return collect_dockyard(mode, work, env, samples)


def collect_dockyard(mode: str, work: Path, env: dict[str, str], samples: list[str]) -> Result:
    """A dockyard run's result, from its state (its wall time as measured, else the run's
    own duration)."""
    path = work / f"pipeline-{mode}" / "dockyard.yaml"
    env = {**env, "DOCKYARD_HOME": str(work / f"home-{mode}")}
    status = dockyard_json(["status", "-f", str(path), "--json"], env)
    measured = work / f"{mode}.wall"
    wall = float(measured.read_text()) if measured.exists() else float(status["run"]["duration"])
    calls, reads = {}, {}
    for sample in samples:
        calls[sample] = (output_folder(path, f"call[{sample}]", env) / "calls.tsv").read_bytes()
        if mode == "local":  # (the swarm's outputs stay on its nodes; calls are fetched)
            folder = output_folder(path, f"reads[{sample}]", env)
            reads[sample] = digest(sorted(folder.glob("reads.bwa.read*.fastq.gz")))
    truth = (output_folder(path, "reference", env) / "truth.vcf").read_bytes()
    result = Result(mode, wall, calls, step_usage(status), reads, truth)
    print(f"[{mode}] {wall:.1f} s", flush=True)
    return result


def run_native(work: Path, size: Size, samples: list[str]) -> Result:
    example = prepare(work / "pipeline-native", size).parent
    out = work / "native"
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        "sh",
        str(NATIVE),
        str(out),
        str(example),
        str(example / sheet_name(size)),
        str(size.genome),
        str(size.depth),
        str(size.threads),
        str(size.seed),
        str(size.jobs),
    ]
    print("[native] genomics_native.sh ...", flush=True)
    wall = run(argv, work / "native.log")
    (work / "native.wall").write_text(f"{wall}\n")
    return collect_native(work, samples)


def collect_native(work: Path, samples: list[str]) -> Result:
    """The native run's result from its files (its wall time as measured, else the span of
    its jobs)."""
    out = work / "native"
    steps: dict[str, dict[str, float]] = {}
    for line in (out / "usage.tsv").read_text().splitlines():
        step, _, start, end, user, system, rss = line.split("\t")
        row = steps.setdefault(
            step, {"n": 0, "duration": 0.0, "cpu": 0.0, "peak": 0.0, "start": 1e18, "end": 0.0}
        )
        row["n"] += 1
        row["duration"] += float(end) - float(start)
        row["cpu"] += float(user) + float(system)
        row["peak"] = max(row["peak"], float(rss) * 1024)
        row["start"] = min(row["start"], float(start))
        row["end"] = max(row["end"], float(end))
    calls = {s: (out / "call" / s / "calls.tsv").read_bytes() for s in samples}
    reads = {
        s: digest(sorted((out / "reads" / s).glob("reads.bwa.read*.fastq.gz"))) for s in samples
    }
    truth = (out / "reference" / "truth.vcf").read_bytes()
    measured = work / "native.wall"
    if measured.exists():
        wall = float(measured.read_text())
    else:
        wall = max(r["end"] for r in steps.values()) - min(r["start"] for r in steps.values())
    print(f"[native] {wall:.1f} s", flush=True)
    return Result("native", wall, calls, steps, reads, truth)


SNAKEFILE = REPO / "benchmarks" / "genomics.Snakefile"


def snakemake_bin(work: Path) -> Path:
    """Snakemake in a venv of its own under the work folder (made once, from PyPI)."""
    venv = work / "snakemake-venv"
    binary = venv / "bin" / "snakemake"
    if binary.exists():
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        if version.stdout.strip() == SNAKEMAKE_VERSION:
            return binary
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", f"snakemake=={SNAKEMAKE_VERSION}"]
    subprocess.run(pip, check=True)
    return binary


def run_snakemake(work: Path, size: Size, samples: list[str]) -> Result:
    binary = snakemake_bin(work)
    example = prepare(work / "pipeline-snakemake", size).parent
    out = work / "snakemake"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    seeds = {
        line.split(",")[0]: line.split(",")[1] for line in sheet_text(size.samples).split()[1:]
    }
    text = SNAKEFILE.read_text()
    for name, value in {
        "@SEEDS@": repr(seeds),
        "@EXAMPLE@": str(example),
        "@SEED@": str(size.seed),
        "@LENGTH@": str(size.genome),
        "@SHEET@": str(example / sheet_name(size)),
        "@HALF@": str(size.depth // 2),
        "@THREADS@": str(size.threads),
    }.items():
        text = text.replace(name, value)
    (out / "Snakefile").write_text(text)
    env = {**os.environ, "PATH": "/usr/bin:/bin:" + os.environ.get("PATH", ""), "LC_ALL": "C"}
    argv = [str(binary), "--cores", str(size.jobs), "--snakefile", "Snakefile", "all"]
    print("[snakemake] snakemake ...", flush=True)
    wall = run(argv, work / "snakemake.log", env=env, cwd=out)
    calls = {s: (out / "call" / s / "calls.tsv").read_bytes() for s in samples}
    truth = (out / "reference" / "truth.vcf").read_bytes()
    print(f"[snakemake] {wall:.1f} s", flush=True)
    return Result("snakemake", wall, calls, {}, {}, truth)


# -- the swarm -------------------------------------------------------------------------------


@contextlib.contextmanager
def local_swarm(work: Path) -> Iterator[dict[str, str]]:
    """`scripts/swarm-local.sh up 3` under the work folder; its environment; down after."""
    root = work / "swarm"
    script = str(REPO / "scripts" / "swarm-local.sh")
    base = {**os.environ, "DOCKYARD_SWARM_ROOT": str(root)}
    subprocess.run([script, "down"], env=base, check=False, capture_output=True)
    print("[swarm] scripts/swarm-local.sh up 3 ...", flush=True)
    try:
        run([script, "up", "3"], work / "swarm-up.log", env=base)
        exports = subprocess.run(
            [script, "env"], env=base, capture_output=True, text=True, check=True
        )
        env = dict(base)
        for line in exports.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
        env["DOCKYARD_AGENT_ROOT"] = str(work / "agents")
        copy_images(env["DOCKER_HOST"])
        yield env
    finally:
        subprocess.run([script, "down"], env=base, check=False, capture_output=True)


def copy_images(manager: str) -> None:
    """The example's images, from this machine's engine to the swarm's manager."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    save = subprocess.Popen(["docker", "save", *IMAGES], stdout=subprocess.PIPE, env=env)
    subprocess.run(["docker", "-H", manager, "load", "-q"], stdin=save.stdout, check=True, env=env)
    if save.wait() != 0:
        raise SystemExit("docker save failed")


# -- checks and the report -------------------------------------------------------------------


def planted(truth: bytes, samples: list[str]) -> dict[str, set[Variant]]:
    found: dict[str, set[Variant]] = {s: set() for s in samples}
    names: list[str] = []
    for line in truth.decode().splitlines():
        if line.startswith("#CHROM"):
            names = line.split("\t")[9:]
        if line.startswith("#"):
            continue
        f = line.split("\t")
        for sample, genotype in zip(names, f[9:], strict=True):
            if genotype != "0/0":
                found[sample].add((f[0], int(f[1]), f[3], f[4]))
    return found


def recall_precision(result: Result, samples: list[str]) -> tuple[float, float, int, int]:
    truth = planted(result.truth, samples)
    hits = total_calls = total_planted = 0
    for sample in samples:
        calls = set()
        for line in result.calls[sample].decode().splitlines():
            _, chrom, pos, ref, alt, *_ = line.split("\t")
            calls.add((chrom, int(pos), ref, alt))
        hits += len(calls & truth[sample])
        total_calls += len(calls)
        total_planted += len(truth[sample])
    return hits / total_planted, hits / max(total_calls, 1), total_planted, total_calls


def fastq_bytes(work: Path, samples: list[str]) -> tuple[int, int]:
    """The native run's FASTQ: compressed bytes and uncompressed bytes."""
    packed = unpacked = 0
    for sample in samples:
        for path in sorted((work / "native" / "reads" / sample).glob("*.fastq.gz")):
            packed += path.stat().st_size
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    unpacked += len(chunk)
    return packed, unpacked


def report(results: list[Result], size: Size, samples: list[str], work: Path) -> None:
    print(
        f"\n{size.genome / 1e6:g} Mb genome, {size.samples} samples at {size.depth}x, "
        f"{size.threads} thread(s) per aligner, {size.jobs} jobs/CPUs"
        + (", every step 1 CPU" if size.one_cpu else "")
    )
    by_mode = {r.mode: r for r in results}
    if "native" in by_mode:
        packed, unpacked = fastq_bytes(work, samples)
        print(f"FASTQ: {unpacked / 1e9:.2f} GB ({packed / 1e9:.2f} GB gzipped)")
    first = results[0]
    for r in results[1:]:
        same = r.calls == first.calls and r.truth == first.truth
        print(f"calls and truth set of {r.mode} identical to {first.mode}'s: {same}")
        if not same:
            raise SystemExit("the calls differ")
    with_reads = [r for r in results if r.reads]
    if len(with_reads) > 1:
        same = all(r.reads == with_reads[0].reads for r in with_reads)
        names = " and ".join(r.mode for r in with_reads)
        print(f"reads of {names} identical: {same}")
        if not same:
            raise SystemExit("the reads differ")
    recall, precision, n_planted, n_calls = recall_precision(first, samples)
    print(
        f"recall {recall:.4f}, precision {precision:.4f} "
        f"({n_planted} planted genotypes, {n_calls} calls)"
    )
    print("\nwall time:")
    for r in results:
        print(f"  {r.mode:10s} {r.wall:8.1f} s")
    for baseline in ("native", "snakemake"):
        if baseline in by_mode:
            for r in results:
                if r.mode in ("local", "swarm"):
                    ratio = by_mode[baseline].wall / r.wall
                    print(f"  throughput {r.mode} / {baseline}: {ratio:.2f}x")
    print("\nper step: instances, summed duration (s), CPU (s), peak memory (MiB), span (s)")
    for r in results:
        if not r.steps:
            continue
        print(f"  {r.mode}")
        for step in STEPS:
            if step not in r.steps:
                continue
            row = r.steps[step]
            print(
                f"    {step:10s} {int(row['n']):3d} {row['duration']:8.1f} {row['cpu']:8.1f} "
                f"{row['peak'] / 2**20:8.0f} {row['end'] - row['start']:8.1f}"
            )
    summary = {
        "size": size.__dict__,
        "recall": recall,
        "precision": precision,
        "results": [{"mode": r.mode, "wall": r.wall, "steps": r.steps} for r in results],
    }
    (work / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"\n(also in {work / 'results.json'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genome-mb", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="threads per aligner")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="native jobs")
    parser.add_argument(
        "--modes", default=None, help="comma-separated; default: local,swarm,native"
    )
    parser.add_argument(
        "--moderate",
        action="store_true",
        help="1 Mb, 4 samples, 30x, every step 1 CPU, 2 jobs: local and snakemake",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/dockyard-bench-genomics"))
    parser.add_argument("--lock", type=Path, default=None, help="flock this file per mode")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the local and native modes already run in --workdir",
    )
    args = parser.parse_args()
    if args.moderate:
        size = Size(1_000_000, 4, 30, 1, args.seed, 2, one_cpu=True)
        modes = (args.modes or "local,snakemake").split(",")
    else:
        genome = int(args.genome_mb * 1_000_000)
        size = Size(genome, args.samples, args.depth, args.threads, args.seed, args.jobs, False)
        modes = (args.modes or "local,swarm,native").split(",")
    for tool in ("dwgsim", "bwa", "samtools", "bcftools"):
        if ("native" in modes or "snakemake" in modes) and not shutil.which(tool):
            raise SystemExit(f"{tool} is not on this machine: apt-get install {tool}")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    samples = [f"s{n}" for n in range(1, size.samples + 1)]
    if args.report_only:
        done = []
        for mode in modes:
            if mode in ("local", "swarm"):
                done.append(collect_dockyard(mode, work, dict(os.environ), samples))
            elif mode == "native":
                done.append(collect_native(work, samples))
        report(done, size, samples, work)
        return
    with held(args.lock):  # the images, made once (outside the timings)
        path = prepare(work / "pipeline-build", size)
        run([DOCKYARD, "build", "-f", str(path)], work / "build.log")
    results = []
    for mode in modes:
        if args.lock is not None:
            time.sleep(10)  # a chance for other work waiting on the lock
        with held(args.lock):
            if mode == "local":
                results.append(run_dockyard("local", work, size, dict(os.environ), samples))
            elif mode == "swarm":
                with local_swarm(work) as env:
                    results.append(run_dockyard("swarm", work, size, env, samples))
            elif mode == "native":
                results.append(run_native(work, size, samples))
            elif mode == "snakemake":
                results.append(run_snakemake(work, size, samples))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
    report(results, size, samples, work)


if __name__ == "__main__":
    main()
