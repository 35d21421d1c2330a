#!/usr/bin/env bash
# Paper Figure 3 (sparsity): models x training fractions x seeds. Env: MODELS, FRACS, DATASETS, SEEDS.
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-mf ncf cnncf urec irec vaecf daecf bpmf xfvae}
FRACS=${FRACS:-0.01,0.02,0.03,0.05,0.10}
RUNS=logs/figure3/$STAMP
OUT=${OUT:-results/figure3/$(echo "$DATASETS" | tr ' ' '+')}
for d in $DATASETS; do
  for m in $MODELS; do
    train_sweep "$d/$m" experiment=figure3 model="$m" data="$d" data.split.train_frac="$FRACS"
  done
done
archive "$OUT/runs"
$PY -m xfvae.report collect "$RUNS" --out "$OUT/results.csv"
$PY -m xfvae.report fig3 "$OUT/results.csv" --experiment figure3 --out "$OUT"
