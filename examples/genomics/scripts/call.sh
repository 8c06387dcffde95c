#!/bin/sh
# call.sh REF.fa SAMPLE.bam OUT: variants of one sample, normalised (left-aligned, minimal).
set -eu
ref=$1 bam=$2 out=$3
bcftools mpileup -f "$ref" -Ou "$bam" \
  | bcftools call -mv -Ou \
  | bcftools norm --no-version -f "$ref" -Oz -o "$out/calls.vcf.gz"
bcftools index "$out/calls.vcf.gz"
bcftools query -f '[%SAMPLE]\t%CHROM\t%POS\t%REF\t%ALT\t%QUAL\t[%GT]\t[%DP]\n' \
  "$out/calls.vcf.gz" > "$out/calls.tsv"
