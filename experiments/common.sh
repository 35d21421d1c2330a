# Shared by the experiment scripts (source it after setting EXPERIMENT): where runs go, which
# python, tuned configs, resume, failures, archiving into results/.
#
# Env: DATASETS (default ml-100k), SEEDS (0,1,2), TRAINER (default | gpu), LAUNCHER (e.g. slurm,
# submitit_local: hydra/launcher=$LAUNCHER), FRESH=1 (start over: overwrite=true), JOBS (sweeps
# run side by side on this machine; default: cores / THREADS; JOBS x THREADS above the cores is
# refused unless OVERSUBSCRIBE=1), THREADS (torch threads per run,
# default 1: results are identical for identical seeds and thread counts, so 1 makes them the same
# on any machine), PY (.venv/bin/python).
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
export PYTHONHASHSEED=0  # scikit-posthocs draws CD-diagram bars in set order: same bytes every run
: "${EXPERIMENT:?set EXPERIMENT before sourcing common.sh}"
RUNS=${RUNS:-logs/$EXPERIMENT}
STARTED=$($PY -c 'from xfvae.runs.sweep import now; print(now())')
FAILED_SWEEPS=()
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

# train_sweep NAME SUBDIR OVERRIDES...: one Hydra multirun into $RUNS/NAME/SUBDIR
train_sweep() {
  local name=$1 subdir=$2; shift 2
  local args=(-m trainer="$TRAINER" seed="$SEEDS" "$@"
    hydra.sweep.dir="$RUNS/$name" hydra.sweep.subdir="$subdir")
  mkdir -p "$(dirname "$RUNS/$name")"
  [ -n "$LAUNCHER" ] && args+=(hydra/launcher="$LAUNCHER")
  [ "$FRESH" = 1 ] && args+=(overwrite=true)
  # Sweeps run side by side: up to JOBS at once here, all at once with a launcher (which waits
  # for its own jobs on the cluster).
  local limit=$JOBS
  [ -n "$LAUNCHER" ] && limit=1000000
  while [ "$(jobs -rp | wc -l)" -ge "$limit" ]; do wait -n; done
  $PY -m xfvae.train "${args[@]}" > "$RUNS/$name.out" 2>&1 &
  PIDS+=($!); NAMES+=("$name")
  echo "started $name (log $RUNS/$name.out)"
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
  $PY -m xfvae.runs.sweep $(data_roots) --since "$STARTED"
  local rc=$?
  if [ ${#FAILED_SWEEPS[@]} -gt 0 ]; then
    echo "sweeps with failures: ${FAILED_SWEEPS[*]}" >&2
    rc=1
  fi
  return $rc
}
