#!/usr/bin/env bash
# GPU checks of issue 11 (not part of the test suite), about 8 minutes on one H200 (2026-11-28:
# sync_tests 18 s, ml100k 64 s, profile_* 16 / 16 / 60 / 52 / 47 s, paperrule_ml1m ~110 s,
# full_eager 81 s):
#   sync_tests      the CUDA tests: no host-device synchronisation inside a training step (sync
#                   debug mode)
#   ml100k          ML-100K, default config, through the loop: s/epoch, without and with EMA
#   profile_*       the block step outside the loop (benchmarks/profile_xfvae.py), one process per
#                   case: ML-100K and ML-1M shapes (B = 100), ML-20M shape (B = 1000) with global
#                   (also with TF32), local and no attention: ms per block eager, operator calls and
#                   kernel launches per block, device busy time, top operators and kernels, and the
#                   step replayed from one CUDA graph (the cost without host overhead)
#   paperrule_ml1m  ML-1M shape under the paper's batch rule through the loop, next to VAE-CF
#   full_eager      ML-100K seed 0 trained to early stopping (test RMSE, s/epoch)
#   smoke_<model>   (SMOKE=1) every model in MODELS trains one epoch with trainer=gpu
# ONLY="name ..." runs a subset. Each step has its own time limit and the script goes on after a
# failure; summary.txt lists them (rc 124 or 137: the step hit its limit). BUDGET_S caps the
# whole script: a step's limit is cut to what is left, and a step with under 15 s left is
# skipped (rc=skip). Results: benchmarks/results/{bench,profile}_xfvae_*cuda*.json, OUT_DIR (logs,
# runs) and OUT_DIR/results.tgz holding all of them (one file to bring back from a lent machine).
#   [ONLY="..."] [SMOKE=1] [BUDGET_S=500] bash benchmarks/gpu_checks.sh [OUT_DIR]
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
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
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
prof() {  # prof NAME SECONDS CASE...: profile_xfvae.py on CUDA, results tagged NAME
  local name=$1 limit=$2
  shift 2
  step "profile_$name" "$limit" $py benchmarks/profile_xfvae.py --device cuda --threads 4 \
    --tag "$name" --cases "$@"
}
full() {  # full NAME OVERRIDES...: ML-100K seed 0 to early stopping, trainer=gpu
  local name=$1
  shift
  step "$name" 150 $py -m xfvae.train model=xfvae data=ml-100k trainer=gpu seed=0 logger=none \
    trainer.enable_progress_bar=false hydra.run.dir="$out/runs/$name" "$@"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee "$out/commit.txt"
step sync_tests 90 $py -m pytest -q -p no:cacheprovider tests/test_xfvae_sync.py
step ml100k 120 $py benchmarks/bench_xfvae.py ml100k --device cuda --threads 4 --epochs 4
prof ml100k 60 ml100k
prof ml1m 60 ml1m-paperrule
prof ml20m_global 110 ml20m-global+tf32 ml20m-global
prof ml20m_local 80 ml20m-local
prof ml20m_none 80 ml20m-none
step paperrule_ml1m 150 $py benchmarks/bench_xfvae.py paperrule --device cuda --threads 4 \
  --shapes ml-1m
full full_eager
if [ "${SMOKE:-0}" = 1 ]; then
  for m in ${MODELS:-mf bpmf ncf cnncf urec irec vaecf daecf xfvae}; do
    step "smoke_$m" "${SMOKE_LIMIT:-40}" $py -m xfvae.train model="$m" data=ml-100k \
      trainer=gpu seed=0 model.max_epochs=1 logger=none trainer.enable_progress_bar=false \
      hydra.run.dir="$out/runs/smoke_$m"
  done
fi
echo "total wall_s=$(($(date +%s) - t0))" | tee -a "$out/summary.txt"
tar czf "$out/results.tgz" --exclude=results.tgz --exclude='*.ckpt' "$out" \
  benchmarks/results/*_cuda*.json 2>/dev/null
