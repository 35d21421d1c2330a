#!/usr/bin/env bash
# Paper Figure 4 (convergence of variants A-E, test RMSE per iteration). Env: DATASETS (paper:
# ml-1m), SEEDS, TRAINER, LAUNCHER, FRESH (common.sh).
EXPERIMENT=figure4
source "$(dirname "$0")/common.sh"
VARIANTS=${VARIANTS:-A B C D E}
OUT=${OUT:-results/figure4/$(echo "$DATASETS" | tr ' ' '+')}
sweeps() {
  for d in $DATASETS; do
    for v in $VARIANTS; do
      train_sweep "$d/$v" 'seed${seed}' experiment=figure4 model="xfvae_variant_${v,,}" data="$d" \
        "setting='variant=$v'"
    done
  done
}
run_sweeps sweeps
finish; rc=$?
archive "$OUT/runs"
$PY -m xfvae.report collect $(data_roots) --out "$OUT/results.csv"
$PY -m xfvae.report fig4 "$OUT/results.csv" --experiment figure4 --out "$OUT"
$PY experiments/summarize.py $(data_roots) > "$OUT/summary.txt" && cat "$OUT/summary.txt"
exit $rc
