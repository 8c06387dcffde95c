"""Deterministic test data for the genomics example (Python standard library only).

``reference``: a random genome of two contigs (60% and 40% of ``--length`` bases), and
variants planted at known places (60 per 100 kb), with a genotype per sample (the truth
set, as VCF). The samples are named by ``--samples a,b,c`` or by the ``sample`` column of
a sample sheet (``--sheet``: CSV, or TSV when its header has a tab). With
``--haplotypes``, also ``haplotypes/SAMPLE.fa`` per sample: the sample's two haplotypes
(the reference with its alleles applied) as contigs ``CHROM_1`` and ``CHROM_2``, from
which a read simulator (dwgsim, in the example) reads the sample without adding
mutations of its own, so that the truth set stays the truth.
``reads``: one sample's reads made here (the CWL example's simulator): its two
haplotypes read at even coverage from both strands, with sequencing errors.

The same seed gives the same bytes on every run, so the pipeline's cache holds.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

SITES_PER_100KB = 60  # planted variant sites
MARGIN = 300  # no site nearer than this to another site or a contig end
READ_LENGTH = 100
COVERAGE = 30
ERROR_RATE = 0.002
BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGT", "TGCA")
GENOTYPES = ("0/0", "0/1", "1/1")


def _wrap(seq: str, width: int = 60) -> str:
    return "\n".join(seq[i : i + width] for i in range(0, len(seq), width))


def contigs(length: int) -> dict[str, int]:
    """Two contigs of 60% and 40% of the genome's length."""
    if length < 10 * MARGIN:
        raise SystemExit(f"--length {length}: at least {10 * MARGIN} bases")
    first = length * 3 // 5
    return {"chr1": first, "chr2": length - first}


def read_sheet(path: Path) -> list[str]:
    """The ``sample`` column of a CSV or TSV sample sheet with a header."""
    text = path.read_text()
    header = text.split("\n", 1)[0]
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if "\t" in header else ","))
    if not rows or "sample" not in rows[0]:
        raise SystemExit(f"{path}: a header with a 'sample' column and at least one row")
    return [row["sample"] for row in rows]


def make_reference(
    seed: int, samples: list[str], out: Path, length: int = 100_000, haplotypes: bool = False
) -> None:
    for sample in samples:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sample):
            raise SystemExit(f"sample name {sample!r}: letters, digits, '.', '_', '-' only")
    if len(set(samples)) != len(samples):
        raise SystemExit("sample names repeat")
    sizes = contigs(length)
    rng = random.Random(seed)
    genome = {name: "".join(rng.choice(BASES) for _ in range(n)) for name, n in sizes.items()}
    with (out / "ref.fa").open("w") as fa:
        for name, seq in genome.items():
            fa.write(f">{name}\n{_wrap(seq)}\n")
    rows = []
    for contig, pos, ref, alt in _plant(rng, genome, SITES_PER_100KB * length // 100_000):
        genotypes = [rng.choice(GENOTYPES) for _ in samples]
        if all(g == "0/0" for g in genotypes):
            genotypes[rng.randrange(len(samples))] = rng.choice(GENOTYPES[1:])
        rows.append((contig, pos, ref, alt, genotypes))
    with (out / "truth.vcf").open("w") as vcf:
        vcf.write("##fileformat=VCFv4.2\n")
        for name, n in sizes.items():
            vcf.write(f"##contig=<ID={name},length={n}>\n")
        vcf.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        vcf.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples))
        vcf.write("\n")
        for contig, pos, ref, alt, genotypes in rows:
            vcf.write(f"{contig}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(genotypes))
            vcf.write("\n")
    if haplotypes:
        (out / "haplotypes").mkdir(exist_ok=True)
        for sample in samples:
            with (out / "haplotypes" / f"{sample}.fa").open("w") as fa:
                for hap, seqs in enumerate(_haplotypes(out, sample), start=1):
                    for name, seq in seqs.items():
                        fa.write(f">{name}_{hap}\n{_wrap(seq)}\n")


def _plant(
    rng: random.Random, genome: dict[str, str], count: int
) -> list[tuple[str, int, str, str]]:
    """Variant sites as (contig, 1-based pos, ref, alt), left-aligned as VCF wants them."""
    sites: list[tuple[str, int, str, str]] = []
    taken: dict[str, set[int]] = {name: set() for name in genome}
    while len(sites) < count:
        contig = rng.choice(sorted(genome))
        seq = genome[contig]
        p = rng.randrange(MARGIN, len(seq) - MARGIN)  # 0-based
        if any(q in taken[contig] for q in range(p - MARGIN + 1, p + MARGIN)):
            continue
        kind = rng.random()
        if kind < 0.8:  # a substitution
            ref = seq[p]
            alt = rng.choice([b for b in BASES if b != ref])
        elif kind < 0.9:  # a deletion of 1-3 bases after the anchor base
            n = rng.randint(1, 3)
            ref, alt = seq[p : p + n + 1], seq[p]
            if seq[p] == seq[p + n]:  # could shift left: not in normal form
                continue
        else:  # an insertion of 1-3 bases after the anchor base
            inserted = "".join(rng.choice(BASES) for _ in range(rng.randint(1, 3)))
            if inserted[-1] == seq[p] or seq[p + 1] == inserted[0]:  # could shift
                continue
            ref, alt = seq[p], seq[p] + inserted
        taken[contig].add(p)
        sites.append((contig, p + 1, ref, alt))
    return sorted(sites, key=lambda s: (list(genome).index(s[0]), s[1]))


def _read_fasta(path: Path) -> dict[str, str]:
    genome: dict[str, list[str]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            genome[name] = []
        elif line:
            genome[name].append(line.strip())
    return {k: "".join(v) for k, v in genome.items()}


def _haplotypes(reference: Path, sample: str) -> list[dict[str, str]]:
    genome = _read_fasta(reference / "ref.fa")
    edits: list[list[tuple[str, int, str, str]]] = [[], []]
    column = -1
    for line in (reference / "truth.vcf").read_text().splitlines():
        if line.startswith("#CHROM"):
            names = line.split("\t")[9:]
            if sample not in names:
                raise SystemExit(f"sample {sample!r} is not in the truth set ({', '.join(names)})")
            column = names.index(sample)
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        contig, pos, ref, alt = fields[0], int(fields[1]), fields[3], fields[4]
        genotype = fields[9 + column].split("/")
        for hap in (0, 1):
            if genotype[hap] == "1":
                edits[hap].append((contig, pos, ref, alt))
    haplotypes = []
    for hap in (0, 1):
        seqs = {}
        for contig, seq in genome.items():
            pieces, at = [], 0  # the contig in pieces, each edit once (linear in its length)
            for name, pos, ref, alt in sorted(e for e in edits[hap] if e[0] == contig):
                assert seq[pos - 1 : pos - 1 + len(ref)] == ref, (name, pos)
                pieces += [seq[at : pos - 1], alt]
                at = pos - 1 + len(ref)
            seqs[contig] = "".join(pieces) + seq[at:]
        haplotypes.append(seqs)
    return haplotypes


def make_reads(reference: Path, sample: str, seed: int, out: Path) -> None:
    rng = random.Random(f"{seed}:{sample}")
    haplotypes = _haplotypes(reference, sample)
    quality = "I" * READ_LENGTH
    lengths = {name: len(seq) for name, seq in _read_fasta(reference / "ref.fa").items()}
    with (out / "reads.fq").open("w") as fq:
        for contig, length in lengths.items():
            for i in range(COVERAGE * length // READ_LENGTH):
                seq = haplotypes[rng.randrange(2)][contig]
                start = rng.randrange(len(seq) - READ_LENGTH + 1)
                read = list(seq[start : start + READ_LENGTH])
                for j in range(READ_LENGTH):
                    if rng.random() < ERROR_RATE:
                        read[j] = rng.choice([b for b in BASES if b != read[j]])
                text = "".join(read)
                if rng.random() < 0.5:
                    text = text.translate(COMPLEMENT)[::-1]
                fq.write(f"@{sample}_{contig}_{i}\n{text}\n+\n{quality}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    ref = sub.add_parser("reference")
    ref.add_argument("--seed", type=int, required=True)
    names = ref.add_mutually_exclusive_group(required=True)
    names.add_argument("--samples", help="comma-separated sample names")
    names.add_argument("--sheet", type=Path, help="a CSV or TSV with a 'sample' column")
    ref.add_argument("--length", type=int, default=100_000, help="genome length (bases)")
    ref.add_argument("--haplotypes", action="store_true", help="haplotypes/SAMPLE.fa too")
    ref.add_argument("--out", type=Path, required=True)
    reads = sub.add_parser("reads")
    reads.add_argument("--seed", type=int, required=True)
    reads.add_argument("--sample", required=True)
    reads.add_argument("--reference", type=Path, required=True)
    reads.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "reference":
        samples = args.samples.split(",") if args.samples else read_sheet(args.sheet)
        make_reference(args.seed, samples, args.out, args.length, args.haplotypes)
    else:
        make_reads(args.reference, args.sample, args.seed, args.out)


if __name__ == "__main__":
    main()
