#!/usr/bin/env bash
# GPU checks (not part of the test suite): every model trains one epoch with trainer=gpu, the
# cross-feedback VAE trains fully on ML-100K on the GPU, and the ML-20M-shaped benchmark runs on CUDA.
#   bash benchmarks/gpu_checks.sh OUT_DIR        (needs CUDA, the package importable, data/ml-100k)
set -uo pipefail
out=${1:-benchmarks/results/gpu}
mkdir -p "$out/runs"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for m in ${MODELS:-mf bpmf ncf cnncf urec irec vaecf daecf xfvae}; do
  start=$(date +%s)
  $py -m xfvae.train model="$m" data=ml-100k trainer=gpu seed=0 model.max_epochs=1 logger=none \
    trainer.enable_progress_bar=false hydra.run.dir="$out/runs/smoke_$m" >"$out/runs/smoke_$m.log" 2>&1
  echo "smoke $m rc=$? wall_s=$(($(date +%s) - start))" | tee -a "$out/summary.txt"
done
start=$(date +%s)
$py -m xfvae.train model=xfvae data=ml-100k trainer=gpu seed=0 logger=none \
  trainer.enable_progress_bar=false hydra.run.dir="$out/runs/xfvae_s0" >"$out/runs/xfvae_s0.log" 2>&1
echo "xfvae seed 0 full rc=$? wall_s=$(($(date +%s) - start))" | tee -a "$out/summary.txt"
$py benchmarks/bench_xfvae.py ml20m --device cuda --max-blocks "${MAX_BLOCKS:-60}" >"$out/bench_ml20m.log" 2>&1
echo "bench ml20m rc=$?" | tee -a "$out/summary.txt"
