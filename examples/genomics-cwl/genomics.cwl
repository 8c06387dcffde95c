#!/usr/bin/env cwl-runner
# The genomics example (examples/genomics) as a CWL v1.2 workflow, with the same images
# and commands: simulate a reference with planted variants and each sample's reads, index
# the reference (bwa, samtools faidx), align and sort each sample, call its variants, and
# gather every sample's calls into one table.
#
#   dockyard run --outdir out examples/genomics-cwl/genomics.cwl examples/genomics-cwl/job.yml
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  simulate: File
  call_script: File
  seed: int
  samples: string[]
outputs:
  calls:
    type: File
    outputSource: gather/table
  vcfs:
    type: File[]
    outputSource: call/vcf
steps:
  reference:
    run: tools/simulate-reference.cwl
    in: {script: simulate, seed: seed, samples: samples}
    out: [folder, fasta]
  reads:
    run: tools/simulate-reads.cwl
    scatter: sample
    in: {script: simulate, seed: seed, sample: samples, reference: reference/folder}
    out: [fastq]
  index:
    run: tools/bwa-index.cwl
    in: {fasta: reference/fasta}
    out: [indexed]
  faidx:
    run: tools/samtools-faidx.cwl
    in: {fasta: reference/fasta}
    out: [indexed]
  align:
    run: tools/bwa-mem.cwl
    scatter: [reads, sample]
    scatterMethod: dotproduct
    in: {reference: index/indexed, reads: reads/fastq, sample: samples}
    out: [sam]
  sort:
    run: tools/samtools-sort.cwl
    scatter: [sam, sample]
    scatterMethod: dotproduct
    in: {sam: align/sam, sample: samples}
    out: [bam]
  call:
    run: tools/bcftools-call.cwl
    scatter: bam
    in: {script: call_script, reference: faidx/indexed, bam: sort/bam}
    out: [vcf, table]
  gather:
    run: tools/gather.cwl
    in: {tables: call/table}
    out: [table]
