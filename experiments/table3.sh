#!/usr/bin/env bash
# Paper Table 3 and Figure 2: every model x data set x seed, then collect, statistics, tables.
# Env: MODELS, DATASETS (default ml-100k), SEEDS (0,1,2), TRAINER, LAUNCHER, FRESH (common.sh).
EXPERIMENT=table3
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-xfvae cnncf bpmf irec mf ncf urec vaecf daecf}  # longest first: sweeps run side by side
OUT=${OUT:-results/table3/$(echo "$DATASETS" | tr ' ' '+')}
sweeps() {
  for d in $DATASETS; do
    for m in $MODELS; do
      train_sweep "$d/$m" 'seed${seed}' experiment=table3 "$(model_args "$d" "$m")" data="$d"
    done
  done
}
run_sweeps sweeps
finish; rc=$?
archive "$OUT/runs"
$PY -m xfvae.report collect $(data_roots) --out "$OUT/results.csv"
$PY -m xfvae.report table 3 "$OUT/results.csv" --experiment table3 --out "$OUT"
if [ "$(echo $MODELS | wc -w)" -ge 2 ]; then  # Friedman/Nemenyi need at least two models
  $PY -m xfvae.report stats "$OUT/results.csv" --experiment table3 --blocks auto --out "$OUT/stats"
  $PY -m xfvae.report stats "$OUT/results.csv" --experiment table3 --blocks auto --top 4 \
    --out "$OUT/stats"
fi
$PY experiments/summarize.py $(data_roots) > "$OUT/summary.txt" && cat "$OUT/summary.txt"
echo "Table 3: $OUT/table3.md ($OUT/table3.tex); statistics and CD diagrams: $OUT/stats"
exit $rc
