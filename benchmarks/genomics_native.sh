#!/bin/sh
# The genomics example's compute steps natively on the host: the same tools (Debian's
# python3, dwgsim, bwa, samtools, bcftools), the same commands and the same files between
# steps as examples/genomics/dockyard.yaml, JOBS at a time (xargs -P), stage by stage:
#
#   reference                                   1 job
#   index, faidx, reads[each sample]            JOBS at a time
#   bwa mem | samtools sort [each sample]       JOBS at a time (one job per pipe, as a
#                                               Snakemake rule would be)
#   call[each sample]                           JOBS at a time
#
#   benchmarks/genomics_native.sh WORK EXAMPLE SHEET LENGTH DEPTH THREADS SEED JOBS
#
# WORK/STEP[/SAMPLE] holds each step's files (as /out does in a container) and
# WORK/usage.tsv one row per job: step, key, start, end (Unix seconds), user and system
# CPU seconds, peak resident memory (KiB, of the largest process; GNU time's %M).
# Used by benchmarks/genomics.py.
set -eu
export PATH="/usr/bin:/bin:$PATH" LC_ALL=C

if [ "${1:-}" = job ]; then # one job: job STEP KEY SEED (the environment holds the rest)
    step=$2 s=$3 sample_seed=$4
    case $step in
    reference)
        mkdir -p "$WORK/reference"
        cmd="python3 $EXAMPLE/scripts/simulate.py reference --seed $SEED --length $LENGTH"
        cmd="$cmd --sheet $SHEET --haplotypes --out $WORK/reference"
        ;;
    reads)
        mkdir -p "$WORK/reads/$s"
        cmd="dwgsim -r 0 -y 0 -e 0.002 -E 0.004 -1 100 -2 100 -d 350 -s 35"
        cmd="$cmd -C $((DEPTH / 2)) -z $sample_seed -o 1"
        cmd="$cmd $WORK/reference/haplotypes/$s.fa $WORK/reads/$s/reads"
        ;;
    index)
        mkdir -p "$WORK/index"
        cmd="cp $WORK/reference/ref.fa $WORK/index/ && bwa index $WORK/index/ref.fa"
        ;;
    faidx)
        mkdir -p "$WORK/faidx"
        cmd="cp $WORK/reference/ref.fa $WORK/faidx/ && samtools faidx $WORK/faidx/ref.fa"
        ;;
    align)
        mkdir -p "$WORK/sort/$s"
        r="$WORK/reads/$s/reads.bwa"
        cmd="bwa mem -t $THREADS -K 10000000 -R '@RG\\tID:$s\\tSM:$s' $WORK/index/ref.fa"
        cmd="$cmd $r.read1.fastq.gz $r.read2.fastq.gz"
        cmd="$cmd | samtools sort -m 256M -o $WORK/sort/$s/$s.bam -"
        cmd="$cmd && samtools index $WORK/sort/$s/$s.bam"
        ;;
    call)
        mkdir -p "$WORK/call/$s"
        cmd="sh $EXAMPLE/scripts/call.sh $WORK/faidx/ref.fa $WORK/sort/$s/$s.bam $WORK/call/$s"
        ;;
    *)
        echo "unknown step $step" >&2
        exit 2
        ;;
    esac
    mkdir -p "$WORK/logs"
    began=$(date +%s.%N)
    /usr/bin/time -f "%U	%S	%M" -o "$WORK/logs/$step.$s.time" \
        sh -c "$cmd" >"$WORK/logs/$step.$s.out" 2>"$WORK/logs/$step.$s.err" || {
        echo "$step $s failed: $cmd" >&2
        tail -n 20 "$WORK/logs/$step.$s.err" >&2
        exit 255 # (xargs stops at a command that exits 255)
    }
    ended=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$s" "$began" "$ended" \
        "$(tail -n 1 "$WORK/logs/$step.$s.time")" >>"$WORK/usage.tsv"
    exit 0
fi

[ $# -eq 8 ] || {
    echo "usage: $0 WORK EXAMPLE SHEET LENGTH DEPTH THREADS SEED JOBS" >&2
    exit 2
}
WORK=$1 EXAMPLE=$2 SHEET=$3 LENGTH=$4 DEPTH=$5 THREADS=$6 SEED=$7 JOBS=$8
export WORK EXAMPLE SHEET LENGTH DEPTH THREADS SEED
self=$(readlink -f "$0")
mkdir -p "$WORK"
: >"$WORK/usage.tsv"
# sample,seed per row (a TSV sheet's tabs read as commas), header left out
rows=$(tail -n +2 "$SHEET" | tr '\t' ',' | grep -v '^$' | cut -d, -f1,2 | tr ',' ' ')
stage() { xargs -P "$JOBS" -n 3 sh "$self" job; }

sh "$self" job reference - -
{
    echo "index - -"
    echo "faidx - -"
    echo "$rows" | sed 's/^/reads /'
} | stage
echo "$rows" | sed 's/^/align /' | stage
echo "$rows" | sed 's/^/call /' | stage
