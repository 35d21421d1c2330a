#!/usr/bin/env bash
# Paper Table 4 (ablation of the cross-feedback VAE). Env: DATASETS, SEEDS, TRAINER.
source "$(dirname "$0")/common.sh"
ABLATIONS=${ABLATIONS:-no_data_input no_cross_feedback no_attention full}
RUNS=logs/table4/$STAMP
OUT=${OUT:-results/table4/$(echo "$DATASETS" | tr ' ' '+')}
for d in $DATASETS; do
  for a in $ABLATIONS; do
    model=xfvae; [ "$a" = full ] || model="xfvae_$a"
    train_sweep "$d/$a" experiment=table4 model="$model" data="$d" "setting='ablation=$a'"
  done
done
archive "$OUT/runs"
$PY -m xfvae.report collect "$RUNS" --out "$OUT/results.csv"
$PY -m xfvae.report table 4 "$OUT/results.csv" --experiment table4 --out "$OUT"
