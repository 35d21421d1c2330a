#!/usr/bin/env bash
# Paper Table 3 on ML-100K: every model x seeds, one Hydra multirun each, then collect + tables.
# Usage: bash experiments/table3.sh [SEEDS] ; env MODELS="mf xfvae" restricts the models.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0,1,2}
MODELS=${MODELS:-mf}
DATA=${DATA:-ml-100k}
OUT=${OUT:-logs/table3/$(date +%Y-%m-%d_%H-%M-%S)}
PY=${PY:-.venv/bin/python}
for m in $MODELS; do
  $PY -m xfvae.train -m model="$m" data="$DATA" seed="$SEEDS" experiment=table3 \
    trainer.enable_progress_bar=false hydra.sweep.dir="$OUT/$m"
done
$PY experiments/summarize.py "$OUT"
