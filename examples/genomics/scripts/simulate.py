"""Deterministic test data for the genomics example (Python standard library only).

``reference``: a random genome of two contigs, and variants planted at known places,
with a genotype per sample (the truth set, as VCF).
``reads``: one sample's reads: its two haplotypes (the reference with that sample's
alleles applied) read at even coverage from both strands, with sequencing errors.

The same seed gives the same bytes on every run, so the pipeline's cache holds.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

CONTIGS = {"chr1": 60_000, "chr2": 40_000}
SITES = 60  # planted variant sites over the genome
MARGIN = 300  # no site nearer than this to another site or a contig end
READ_LENGTH = 100
COVERAGE = 30
ERROR_RATE = 0.002
BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGT", "TGCA")
GENOTYPES = ("0/0", "0/1", "1/1")


def _wrap(seq: str, width: int = 60) -> str:
    return "\n".join(seq[i : i + width] for i in range(0, len(seq), width))


def make_reference(seed: int, samples: list[str], out: Path) -> None:
    rng = random.Random(seed)
    genome = {name: "".join(rng.choice(BASES) for _ in range(n)) for name, n in CONTIGS.items()}
    with (out / "ref.fa").open("w") as fa:
        for name, seq in genome.items():
            fa.write(f">{name}\n{_wrap(seq)}\n")
    rows = []
    for contig, pos, ref, alt in _plant(rng, genome):
        genotypes = [rng.choice(GENOTYPES) for _ in samples]
        if all(g == "0/0" for g in genotypes):
            genotypes[rng.randrange(len(samples))] = rng.choice(GENOTYPES[1:])
        rows.append((contig, pos, ref, alt, genotypes))
    with (out / "truth.vcf").open("w") as vcf:
        vcf.write("##fileformat=VCFv4.2\n")
        for name, n in CONTIGS.items():
            vcf.write(f"##contig=<ID={name},length={n}>\n")
        vcf.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        vcf.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples))
        vcf.write("\n")
        for contig, pos, ref, alt, genotypes in rows:
            vcf.write(f"{contig}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(genotypes))
            vcf.write("\n")


def _plant(rng: random.Random, genome: dict[str, str]) -> list[tuple[str, int, str, str]]:
    """Variant sites as (contig, 1-based pos, ref, alt), left-aligned as VCF wants them."""
    sites: list[tuple[str, int, str, str]] = []
    taken: dict[str, list[int]] = {name: [] for name in genome}
    while len(sites) < SITES:
        contig = rng.choice(sorted(genome))
        seq = genome[contig]
        p = rng.randrange(MARGIN, len(seq) - MARGIN)  # 0-based
        if any(abs(p - q) < MARGIN for q in taken[contig]):
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
        taken[contig].append(p)
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
        seqs = dict(genome)
        for contig, pos, ref, alt in sorted(edits[hap], key=lambda e: -e[1]):
            seq = seqs[contig]
            assert seq[pos - 1 : pos - 1 + len(ref)] == ref
            seqs[contig] = seq[: pos - 1] + alt + seq[pos - 1 + len(ref) :]
        haplotypes.append(seqs)
    return haplotypes


def make_reads(reference: Path, sample: str, seed: int, out: Path) -> None:
    rng = random.Random(f"{seed}:{sample}")
    haplotypes = _haplotypes(reference, sample)
    quality = "I" * READ_LENGTH
    with (out / "reads.fq").open("w") as fq:
        for contig, length in CONTIGS.items():
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
    ref.add_argument("--samples", required=True, help="comma-separated sample names")
    ref.add_argument("--out", type=Path, required=True)
    reads = sub.add_parser("reads")
    reads.add_argument("--seed", type=int, required=True)
    reads.add_argument("--sample", required=True)
    reads.add_argument("--reference", type=Path, required=True)
    reads.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "reference":
        make_reference(args.seed, args.samples.split(","), args.out)
    else:
        make_reads(args.reference, args.sample, args.seed, args.out)


if __name__ == "__main__":
    main()
