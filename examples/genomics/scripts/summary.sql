-- One row per sample: how many variants of each kind were called, and how well.
SELECT sample,
       count(*) AS variants,
       count(*) FILTER (WHERE length(ref) = 1 AND length(alt) = 1) AS snvs,
       count(*) FILTER (WHERE length(ref) <> length(alt)) AS indels,
       count(*) FILTER (WHERE genotype = '0/1') AS heterozygous,
       count(*) FILTER (WHERE genotype = '1/1') AS homozygous,
       round(avg(qual)::numeric, 1) AS mean_quality,
       round(avg(depth)::numeric, 1) AS mean_depth
  FROM calls
 GROUP BY sample
 ORDER BY sample;
