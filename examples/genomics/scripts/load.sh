#!/bin/sh
# load.sh CALLS: load CALLS/<sample>/calls.tsv into the calls table in one transaction;
# a sample's old rows are replaced, so loading again never adds duplicates.
set -eu
{
  cat <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS calls (
  sample text NOT NULL, chrom text NOT NULL, pos integer NOT NULL, ref text NOT NULL,
  alt text NOT NULL, qual real, genotype text NOT NULL, depth integer,
  PRIMARY KEY (sample, chrom, pos, alt));
BEGIN;
SQL
  for tsv in "$1"/*/calls.tsv; do
    sample=$(basename "$(dirname "$tsv")")
    printf "DELETE FROM calls WHERE sample = '%s';\n" "$sample"
    printf "\\\\copy calls FROM '%s'\n" "$tsv"
  done
  echo "COMMIT;"
} | psql -v ON_ERROR_STOP=1 --quiet
psql -v ON_ERROR_STOP=1 --tuples-only --no-align -c "SELECT count(*) || ' calls loaded' FROM calls"
