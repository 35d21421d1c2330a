#!/usr/bin/env bash
# Paper Table 4 (ablation of the cross-feedback VAE), each row with its own tuned config when
# `make tune` wrote one (paper 4.5 re-tunes the rows). Env: DATASETS, SEEDS, TRAINER, LAUNCHER, FRESH.
EXPERIMENT=table4
source "$(dirname "$0")/common.sh"
ABLATIONS=${ABLATIONS:-no_data_input no_cross_feedback no_attention full}
OUT=${OUT:-results/table4/$(echo "$DATASETS" | tr ' ' '+')}
sweeps() {
  for d in $DATASETS; do
    for a in $ABLATIONS; do
      model=xfvae; [ "$a" = full ] || model="xfvae_$a"
      train_sweep "$d/$a" 'seed${seed}' experiment=table4 "$(model_args "$d" "$model")" data="$d" \
        "setting='ablation=$a'"
    done
  done
}
run_sweeps sweeps
finish; rc=$?
archive "$OUT/runs"
$PY -m xfvae.report collect $(data_roots) --out "$OUT/results.csv"
$PY -m xfvae.report table 4 "$OUT/results.csv" --experiment table4 --out "$OUT"
$PY experiments/summarize.py $(data_roots) > "$OUT/summary.txt" && cat "$OUT/summary.txt"
exit $rc
