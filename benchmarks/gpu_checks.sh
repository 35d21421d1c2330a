#!/usr/bin/env bash
# GPU checks of issue 11 (not part of the test suite), about 5 minutes on one H100, 8 with SMOKE=1:
#   1. the CUDA tests: no host-device synchronisation inside a training step (sync debug mode);
#   2. ML-100K, default config, through the loop: s/epoch, without and with the EMA callback;
#   3. ML-20M shape (B = 1000): s/block and projected s/epoch, global / local / no attention;
#   4. ML-1M shape under the paper's batch rule (B = 100): s/epoch next to VAE-CF's;
#   5. (SMOKE=1) every model trains one epoch with trainer=gpu.
# Each step has its own time limit (90 / 120 / 120 / 150 s, 40 s per smoke model; on the H200 at
# 75725de a smoke model took 14-20 s, step 3 24 s of data, 14 s of setup and 3 s of blocks) and
# the script goes on after a failure; summary.txt lists them (rc 124 or 137: the step hit its
# limit). BUDGET_S caps the whole script (worst case without it: 480 s, 840 s with SMOKE=1): a
# step's limit is cut to what is left, and a step with under 15 s left is skipped (rc=skip).
# Results: benchmarks/results/bench_xfvae_*_cuda.json and OUT_DIR.
#   [SMOKE=1] [BUDGET_S=500] bash benchmarks/gpu_checks.sh [OUT_DIR]
#   (needs CUDA, the package importable, data/ml-100k)
set -uo pipefail
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
t0=$(date +%s)
deadline=$((t0 + ${BUDGET_S:-100000}))
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record rc and wall time
  local name=$1 limit=$2 start left rc
  shift 2
  start=$(date +%s)
  left=$((deadline - start))
  if [ "$left" -lt 15 ]; then
    echo "$name rc=skip wall_s=0 (budget)" | tee -a "$out/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc wall_s=$(($(date +%s) - start)) limit_s=$limit" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
step sync_tests 90 $py -m pytest -q -p no:cacheprovider tests/test_xfvae_sync.py
step ml100k 120 $py benchmarks/bench_xfvae.py ml100k --device cuda --threads 4 --epochs 4
step ml20m 120 $py benchmarks/bench_xfvae.py ml20m --device cuda --threads 4 --max-blocks 60
step paperrule_ml1m 150 $py benchmarks/bench_xfvae.py paperrule --device cuda --threads 4 \
  --shapes ml-1m
if [ "${SMOKE:-0}" = 1 ]; then
  for m in ${MODELS:-mf bpmf ncf cnncf urec irec vaecf daecf xfvae}; do
    step "smoke_$m" 40 $py -m xfvae.train model="$m" data=ml-100k trainer=gpu seed=0 \
      model.max_epochs=1 logger=none trainer.enable_progress_bar=false \
      hydra.run.dir="$out/runs/smoke_$m"
  done
fi
echo "total wall_s=$(($(date +%s) - t0))" | tee -a "$out/summary.txt"
