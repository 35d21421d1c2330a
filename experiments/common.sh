# Shared by the experiment scripts (source it after setting EXPERIMENT): where runs go, which
# python, tuned configs, resume, failures, archiving into results/.
#
# Env: DATASETS (default ml-100k), SEEDS (0,1,2), TRAINER (default | gpu), LAUNCHER (e.g. slurm,
# submitit_local: hydra/launcher=$LAUNCHER), FRESH=1 (start over: overwrite=true), JOBS (sweeps
# run side by side on this machine; default: cores / THREADS; JOBS x THREADS above the cores is
# refused unless OVERSUBSCRIBE=1), THREADS (torch threads per run, default 1: results are identical
# for identical seeds and thread counts on one kind of machine; across machines they can differ,
# docs/training.md "Seeds"), CPU_ISA (avx2 | avx512 | default: the instruction set the math kernels
# may use, see below; unset: each machine's best), PY (.venv/bin/python).
#
# Runs go to a stable folder per experiment, logs/<experiment>/<data>/<name>/<job>, so running the
# same target again skips complete jobs, resumes killed ones from their last.ckpt and runs the
# rest (xfvae.runs.rundir). Failed jobs do not stop the target: it finishes the others, then prints
# one summary and exits non-zero.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
DATASETS=${DATASETS:-ml-100k}
TRAINER=${TRAINER:-default}
LAUNCHER=${LAUNCHER:-}
FRESH=${FRESH:-0}
THREADS=${THREADS:-1}
JOBS=${JOBS:-$(( $(nproc) / THREADS > 0 ? $(nproc) / THREADS : 1 ))}
if [ -z "${LAUNCHER:-}" ] && [ $(( JOBS * THREADS )) -gt "$(nproc)" ] && [ "${OVERSUBSCRIBE:-0}" != 1 ]; then
  echo "error: JOBS=$JOBS sweeps x THREADS=$THREADS threads exceed this machine's $(nproc) cores;" \
    "lower JOBS or THREADS, or set OVERSUBSCRIBE=1 to share the cores anyway" >&2
  exit 2
fi
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
# CPU_ISA pins the vector instruction set of torch's own kernels (ATEN_CPU_CAPABILITY), MKL's BLAS
# (MKL_CBWR) and oneDNN (ONEDNN_MAX_CPU_ISA): machines whose CPUs differ (AVX2 vs AVX-512) then run
# the same kernels. Each run records what torch used (metrics.json machine.cpu_capability).
case "${CPU_ISA:-}" in
  "") ;;
  avx2) export ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ;;
  avx512) export ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AVX512 ONEDNN_MAX_CPU_ISA=AVX512_CORE ;;
  default) export ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41 ;;
  *) echo "error: CPU_ISA=$CPU_ISA; use avx2, avx512 or default (or leave it unset)" >&2; exit 2 ;;
esac
export PYTHONHASHSEED=0  # scikit-posthocs draws CD-diagram bars in set order: same bytes every run
: "${EXPERIMENT:?set EXPERIMENT before sourcing common.sh}"
RUNS=${RUNS:-logs/$EXPERIMENT}
STARTED=$($PY -c 'from xfvae.runs.sweep import now; print(now())')
FAILED_SWEEPS=()
PLAN_ONLY=0
PLANNED=0
WATCHER=
PIDS=()
NAMES=()

mkdir -p "$RUNS"
exec 9>"$RUNS/.lock"
if ! flock -n 9; then
  echo "error: another $EXPERIMENT target is running in $RUNS (lock $RUNS/.lock); wait for it" >&2
  exit 1
fi

# model_args DATA MODEL: the tuned config (conf/tuned/DATA/MODEL.yaml, from `make tune`) when
# there is one, else the model's default config.
model_args() {
  if [ -f "conf/tuned/$1/$2.yaml" ]; then echo "tuned=$1/$2"; else echo "model=$2"; fi
}

# train_sweep NAME SUBDIR OVERRIDES...: one Hydra multirun into $RUNS/NAME/SUBDIR (while
# run_sweeps plans, it only counts the jobs)
train_sweep() {
  local name=$1 subdir=$2; shift 2
  local args=(-m trainer="$TRAINER" seed="$SEEDS" "$@"
    hydra.sweep.dir="$RUNS/$name" hydra.sweep.subdir="$subdir")
  if [ "$PLAN_ONLY" = 1 ]; then PLANNED=$(( PLANNED + $(sweep_size "${args[@]}") )); return; fi
  mkdir -p "$(dirname "$RUNS/$name")"
  [ -n "$LAUNCHER" ] && args+=(hydra/launcher="$LAUNCHER")
  [ "$FRESH" = 1 ] && args+=(overwrite=true)
  # Sweeps run side by side: up to JOBS at once here, all at once with a launcher (which waits
  # for its own jobs on the cluster).
  local limit=$JOBS
  [ -n "$LAUNCHER" ] && limit=1000000
  # (wait -n on the running ones only: a sweep reaped earlier is "no such job" to it; its status
  # stays for wait_sweeps)
  while [ "$(running_sweeps)" -ge "$limit" ]; do wait -n $(running_pids) 2>/dev/null; done
  $PY -m xfvae.train "${args[@]}" > "$RUNS/$name.out" 2>&1 &
  PIDS+=($!); NAMES+=("$name")
  echo "started $name (log $RUNS/$name.out)"
}

# running_sweeps: how many of the sweeps started here have not been waited for (the progress
# watcher, also a background job, is not one of them)
running_sweeps() {
  running_pids | wc -w
}

# running_pids: the sweeps started here that are still running
running_pids() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && echo "$p"; done
}

# sweep_size OVERRIDES...: the jobs of one multirun, the product of its comma-separated values
sweep_size() {
  local n=1 a commas
  for a in "$@"; do
    case "$a" in
      *'['*|*'{'*) ;;  # a list or dict value is one value
      *=*,*) commas=${a#*=}; commas=${commas//[^,]/}; n=$(( n * (${#commas} + 1) )) ;;
    esac
  done
  echo "$n"
}

# run_sweeps FUNCTION: count the jobs FUNCTION starts (it calls train_sweep), start the progress
# watcher (experiments/progress.py: runs finished / total, failures, elapsed, time left, at least
# once a minute here and in $RUNS/progress.log), then run FUNCTION
run_sweeps() {
  PLAN_ONLY=1; PLANNED=0; "$1"; PLAN_ONLY=0
  local roots=() d
  for d in $DATASETS; do roots+=("$RUNS/$d"); done
  echo "$EXPERIMENT: $PLANNED runs planned; progress below and in $RUNS/progress.log"
  $PY experiments/progress.py "${roots[@]}" --total "$PLANNED" --since "$STARTED" \
    --log "$RUNS/progress.log" --tick "${PROGRESS_TICK:-5}" &
  WATCHER=$!
  "$1"
}

# wait_sweeps: wait for the sweeps started in the background
wait_sweeps() {
  local i
  for i in "${!PIDS[@]}"; do
    if wait "${PIDS[$i]}"; then echo "done ${NAMES[$i]}"; else FAILED_SWEEPS+=("${NAMES[$i]}"); fi
  done
  PIDS=(); NAMES=()
}

# data_roots: this invocation's data set folders under $RUNS (other data sets' runs stay out)
data_roots() {
  local d
  for d in $DATASETS; do [ -d "$RUNS/$d" ] && echo "$RUNS/$d"; done
}

# archive DEST: copy each run's provenance (config, metrics, history, state) into DEST/<data>/...
archive() {
  local d
  for d in $DATASETS; do
    [ -d "$RUNS/$d" ] && $PY experiments/archive.py "$RUNS/$d" "$1/$d"
  done
}

# finish: one summary of every job this invocation ran, skipped, resumed or lost; exit status
finish() {
  wait_sweeps
  if [ -n "$WATCHER" ]; then kill "$WATCHER" 2>/dev/null; wait "$WATCHER" 2>/dev/null; WATCHER=; fi
  $PY -m xfvae.runs.sweep $(data_roots) --since "$STARTED"
  local rc=$?
  if [ ${#FAILED_SWEEPS[@]} -gt 0 ]; then
    echo "sweeps with failures: ${FAILED_SWEEPS[*]}" >&2
    rc=1
  fi
  return $rc
}
