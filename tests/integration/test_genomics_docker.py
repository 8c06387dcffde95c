"""The README's main example (issue 6): a real variant-calling pipeline on the real engine.

Images are made from Debian packages on first use (several minutes the first time on a
machine, then reused). The calls must find the planted variants, must equal those of the
same tools run natively on the host on the same inputs, and a second run must redo
nothing.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_PIPELINE
from tests.conftest import REPO, committed_output

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "genomics"
SAMPLES = ("s1", "s2", "s3", "s4")
Variant = tuple[str, int, str, str]  # chrom, pos, ref, alt


@pytest.fixture
def example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_runtime: DockerRuntime
) -> Iterator[Path]:
    """A copy of the example with its own state and volumes; its containers removed after."""
    shutil.copytree(EXAMPLE, tmp_path / "genomics", ignore=shutil.ignore_patterns(".dockyard"))
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    yield tmp_path / "genomics" / "dockyard.yaml"
    for container in docker_runtime.list({LABEL_PIPELINE: "genomics"}):
        docker_runtime.remove(container.id)


def status(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert main(["status", "-f", str(path), "--json"]) == 0
    return {i["instance"]: i for i in json.loads(capsys.readouterr().out)["instances"]}


def records(vcf_gz: Path) -> list[str]:
    """The variant lines of a VCF: what was called, without the header's paths and dates."""
    with gzip.open(vcf_gz, "rt") as text:
        return [line for line in text if not line.startswith("#")]


def truth(vcf: Path) -> dict[str, dict[Variant, str]]:
    """Planted variants per sample, with their genotype (0/0 left out)."""
    planted: dict[str, dict[Variant, str]] = {s: {} for s in SAMPLES}
    for line in vcf.read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        for sample, genotype in zip(SAMPLES, f[9:], strict=True):
            if genotype != "0/0":
                planted[sample][(f[0], int(f[1]), f[3], f[4])] = genotype
    return planted


def called(tsv: Path) -> dict[Variant, str]:
    calls = {}
    for line in tsv.read_text().splitlines():
        _, chrom, pos, ref, alt, _, genotype, _ = line.split("\t")
        calls[(chrom, int(pos), ref, alt)] = genotype
    return calls


def native_calls(workdir: Path, reference: Path, reads: Path, sample: str) -> Path:
    """The same tools, installed on the host from Debian, on the same inputs (``reads``:
    the folder of the sample's two FASTQ files)."""
    for tool in ("bwa", "samtools", "bcftools"):
        assert shutil.which(tool), f"{tool} is not installed on the host (scripts/setup.sh)"
    workdir.mkdir()
    ref = workdir / "ref.fa"
    shutil.copy(reference, ref)
    script = f"""
        set -eu
        bwa index ref.fa 2>/dev/null
        samtools faidx ref.fa
        bwa mem -t 1 -K 10000000 -R '@RG\\tID:{sample}\\tSM:{sample}' ref.fa \
          {reads}/reads.bwa.read1.fastq.gz {reads}/reads.bwa.read2.fastq.gz 2>/dev/null \
          | samtools sort -m 256M -o {sample}.bam -
        samtools index {sample}.bam
        bcftools mpileup -f ref.fa -Ou {sample}.bam | bcftools call -mv -Ou \
          | bcftools norm --no-version -f ref.fa -Oz -o calls.vcf.gz
    """
    subprocess.run(["sh", "-c", script], cwd=workdir, check=True, capture_output=True)
    return workdir / "calls.vcf.gz"


@pytest.mark.timeout(1500)
def test_genomics_example_calls_the_planted_variants_like_native_tools_and_reruns_from_cache(
    example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "-f", str(example)]) == 0
    first = status(example, capsys)
    assert all(i["state"] == "succeeded" for i in first.values())
    assert main(["status", "-f", str(example), "--json"]) == 0
    packages = json.loads(json.loads(capsys.readouterr().out)["run"]["image_packages"])
    assert packages["dockyard/bwa:0.7.17"].startswith("bwa=0.7.17-")  # the tools' versions
    assert packages["dockyard/dwgsim:0.1.14"].startswith("dwgsim=0.1.14-")  # the reads' simulator
    made_of = [p.split("=") for p in packages["dockyard/samtools:1.16"].split()]
    assert [name for name, _ in made_of] == ["bcftools", "samtools"]
    assert made_of[0][1].startswith("1.16-") and made_of[1][1].startswith("1.16")

    # The planted variants are found, and little else.
    reference = committed_output(example, "reference", capsys)
    planted = truth(reference / "truth.vcf")
    found = right_genotype = total_calls = total_planted = 0
    for sample in SAMPLES:
        calls = called(committed_output(example, f"call[{sample}]", capsys) / "calls.tsv")
        found += len(calls.keys() & planted[sample].keys())
        right_genotype += sum(calls[v] == g for v, g in planted[sample].items() if v in calls)
        total_calls += len(calls)
        total_planted += len(planted[sample])
    recall, precision = found / total_planted, found / total_calls
    with capsys.disabled():
        print(f"\nrecall {recall:.3f}, precision {precision:.3f}, ", end="")
        print(f"genotypes right {right_genotype}/{found}")
    assert total_planted > 100
    assert recall >= 0.95 and precision >= 0.95
    assert right_genotype >= 0.95 * found

    # The database holds every call; the summary is queried from it.
    summary = (committed_output(example, "summary", capsys) / "summary.csv").read_text()
    rows = [line.split(",") for line in summary.splitlines()]
    assert rows[0][:2] == ["sample", "variants"]
    per_sample = {row[0]: int(row[1]) for row in rows[1:]}
    for sample in SAMPLES:
        tsv = committed_output(example, f"call[{sample}]", capsys) / "calls.tsv"
        assert per_sample[sample] == len(tsv.read_text().splitlines())

    # Identical to the same tools run natively on the host, on the same inputs.
    for sample in SAMPLES[:2]:
        reads = committed_output(example, f"reads[{sample}]", capsys)
        native = native_calls(tmp_path / f"native-{sample}", reference / "ref.fa", reads, sample)
        ours = committed_output(example, f"call[{sample}]", capsys) / "calls.vcf.gz"
        assert records(ours) == records(native), sample

    # The images exist now: `dockyard build` lists them and makes nothing.
    assert main(["build", "-f", str(example)]) == 0
    listed = capsys.readouterr()
    assert "debootstrap" not in listed.err
    assert [line.split("\t")[1] for line in listed.out.splitlines()] == [
        "dockyard/python3:bookworm",
        "dockyard/bwa:0.7.17",
        "dockyard/dwgsim:0.1.14",
        "dockyard/samtools:1.16",
        "dockyard/postgres:15",
    ]

    # A second run reuses the reference index and every result: no container starts.
    assert main(["run", "-f", str(example)]) == 0
    second = status(example, capsys)
    assert {name: i["cached"] for name, i in second.items()} == {name: 1 for name in first}

    # Without its index, only the step that builds it runs again; the alignments, whose
    # inputs (the index's content) did not change, stay cached.
    assert main(["volume", "rm", "bwa-index"]) == 0
    assert main(["run", "-f", str(example)]) == 0
    third = status(example, capsys)
    assert [name for name, i in third.items() if not i["cached"]] == ["index"]
