#!/usr/bin/env bash
# Paper Table 3 and Figure 2: every model x data set x seed, then collect, statistics, tables.
# Env: MODELS, DATASETS (default ml-100k), SEEDS (0,1,2), TRAINER (default|gpu).
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-mf ncf cnncf urec irec vaecf daecf bpmf xfvae}
RUNS=${RUNS:-logs/table3/$STAMP}  # reuse a RUNS dir to add models to one table
OUT=${OUT:-results/table3/$(echo "$DATASETS" | tr ' ' '+')}
for d in $DATASETS; do
  for m in $MODELS; do
    train_sweep "$d/$m" experiment=table3 model="$m" data="$d"
  done
done
archive "$OUT/runs"
$PY -m xfvae.report collect "$RUNS" --out "$OUT/results.csv"
$PY -m xfvae.report table 3 "$OUT/results.csv" --experiment table3 --out "$OUT"
if [ "$(echo $MODELS | wc -w)" -ge 2 ]; then  # Friedman/Nemenyi need at least two models
  $PY -m xfvae.report stats "$OUT/results.csv" --experiment table3 --out "$OUT/stats"
fi
$PY experiments/summarize.py "$RUNS"
echo "Table 3: $OUT/table3.md ($OUT/table3.tex); statistics and CD diagrams: $OUT/stats"
