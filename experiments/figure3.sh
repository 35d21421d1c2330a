#!/usr/bin/env bash
# Paper Figure 3 (sparsity): models x training fractions x seeds, tuned configs where they exist.
# Env: MODELS, FRACS, DATASETS, SEEDS, TRAINER, LAUNCHER, FRESH (common.sh).
EXPERIMENT=figure3
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-xfvae cnncf bpmf irec mf ncf urec vaecf daecf}  # longest first: sweeps run side by side
FRACS=${FRACS:-0.01,0.02,0.03,0.05,0.10}
OUT=${OUT:-results/figure3/$(echo "$DATASETS" | tr ' ' '+')}
sweeps() {
  for d in $DATASETS; do
    for m in $MODELS; do
      train_sweep "$d/$m" 'frac${data.split.train_frac}-seed${seed}' experiment=figure3 \
        "$(model_args "$d" "$m")" data="$d" data.split.train_frac="$FRACS"
    done
  done
}
run_sweeps sweeps
finish; rc=$?
archive "$OUT/runs"
$PY -m xfvae.report collect $(data_roots) --out "$OUT/results.csv"
$PY -m xfvae.report fig3 "$OUT/results.csv" --experiment figure3 --out "$OUT"
$PY experiments/summarize.py $(data_roots) > "$OUT/summary.txt" && cat "$OUT/summary.txt"
exit $rc
