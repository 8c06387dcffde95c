# The genomics example's compute steps for Snakemake (benchmarks/genomics.py --moderate):
# the same commands as examples/genomics/dockyard.yaml and benchmarks/genomics_native.sh.
# @NAME@ are filled in by benchmarks/genomics.py.
SAMPLES = @SEEDS@
EX = "@EXAMPLE@"

rule all:
    input: expand("call/{s}/calls.tsv", s=SAMPLES)

rule reference:
    output: "reference/ref.fa", "reference/truth.vcf", expand("reference/haplotypes/{s}.fa", s=SAMPLES)
    shell: "python3 " + EX + "/scripts/simulate.py reference --seed @SEED@ --length @LENGTH@ --sheet @SHEET@ --haplotypes --out reference"

rule reads:
    input: "reference/haplotypes/{s}.fa"
    output: "reads/{s}/reads.bwa.read1.fastq.gz", "reads/{s}/reads.bwa.read2.fastq.gz"
    params: seed=lambda w: SAMPLES[w.s]
    shell: "dwgsim -r 0 -y 0 -e 0.002 -E 0.004 -1 100 -2 100 -d 350 -s 35 -C @HALF@ -z {params.seed} -o 1 {input} reads/{wildcards.s}/reads"

rule index:
    input: "reference/ref.fa"
    output: multiext("index/ref.fa", "", ".amb", ".ann", ".bwt", ".pac", ".sa")
    shell: "cp reference/ref.fa index/ && bwa index index/ref.fa"

rule faidx:
    input: "reference/ref.fa"
    output: "faidx/ref.fa", "faidx/ref.fa.fai"
    shell: "cp reference/ref.fa faidx/ && samtools faidx faidx/ref.fa"

rule align:
    input: rules.index.output, r1="reads/{s}/reads.bwa.read1.fastq.gz", r2="reads/{s}/reads.bwa.read2.fastq.gz"
    output: "sort/{s}/{s}.bam", "sort/{s}/{s}.bam.bai"
    threads: @THREADS@
    shell: "bwa mem -t @THREADS@ -K 10000000 -R '@RG\\tID:{wildcards.s}\\tSM:{wildcards.s}' index/ref.fa {input.r1} {input.r2} | samtools sort -m 256M -o sort/{wildcards.s}/{wildcards.s}.bam - && samtools index sort/{wildcards.s}/{wildcards.s}.bam"

rule call:
    input: "faidx/ref.fa.fai", bam="sort/{s}/{s}.bam"
    output: "call/{s}/calls.tsv", "call/{s}/calls.vcf.gz"
    shell: "sh " + EX + "/scripts/call.sh faidx/ref.fa {input.bam} call/{wildcards.s}"
