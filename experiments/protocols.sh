#!/usr/bin/env bash
# Ranking protocols (issue 13): every model once per seed, each run recording every protocol of
# evaluation.report_protocols; then the per-protocol tables under results/protocols/<data sets>.
# Env: MODELS, DATASETS (default ml-100k), SEEDS (default 0), PY (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODELS=${MODELS:-mf ncf urec irec vaecf daecf bpmf xfvae cnncf}
DATASETS=${DATASETS:-ml-100k}
SEEDS=${SEEDS:-0}
RUNS=${RUNS:-logs/protocols}
OUT=${OUT:-results/protocols/$(echo "$DATASETS" | tr ' ' '+')}
for d in $DATASETS; do
  for m in $MODELS; do
    for s in ${SEEDS//,/ }; do
      OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m xfvae.train experiment=protocols model="$m" \
        data="$d" seed="$s" hydra.run.dir="$RUNS/$d/$m/$s"
    done
  done
done
$PY experiments/archive.py "$RUNS" "$OUT/runs"
$PY -m xfvae.report collect "$RUNS" --out "$OUT/results.csv"
$PY -m xfvae.report protocols "$OUT/results.csv" --experiment protocols --out "$OUT"
