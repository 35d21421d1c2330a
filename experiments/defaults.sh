#!/usr/bin/env bash
# Every model's default config (conf/model/, not the tuned ones) on synthetic shapes unlike ML-100K:
# does training end by early stopping, well before the cap? Env: MODELS, DATASETS (default
# "synthetic-dense synthetic-tall synthetic-sparse"), SEEDS (default 0), TRAINER, LAUNCHER, FRESH (common.sh).
EXPERIMENT=defaults
DATASETS=${DATASETS:-synthetic-dense synthetic-tall synthetic-sparse}
SEEDS=${SEEDS:-0}
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-xfvae cnncf bpmf irec mf ncf urec vaecf daecf}  # longest first: sweeps run side by side
OUT=${OUT:-results/defaults}
sweeps() {
  for d in $DATASETS; do
    for m in $MODELS; do
      train_sweep "$d/$m" 'seed${seed}' experiment=defaults model="$m" data="$d"
    done
  done
}
run_sweeps sweeps
finish; rc=$?
archive "$OUT/runs"
$PY -m xfvae.report collect $(data_roots) --out "$OUT/results.csv"
$PY experiments/defaults_table.py "$OUT/results.csv" --out "$OUT/defaults.md" && cat "$OUT/defaults.md"
exit $rc
