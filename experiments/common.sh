# Shared by the experiment scripts: where runs go, which python, and archiving into results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
DATASETS=${DATASETS:-ml-100k}
TRAINER=${TRAINER:-default}
STAMP=$(date +%Y-%m-%d_%H-%M-%S)

# train_sweep NAME OVERRIDES...: one Hydra multirun into logs/<experiment>/<stamp>/NAME
train_sweep() {
  local name=$1; shift
  $PY -m xfvae.train -m trainer="$TRAINER" seed="$SEEDS" "$@" \
    hydra.sweep.dir="$RUNS/$name" hydra.sweep.subdir='${hydra.job.num}'
}

# archive DEST: copy each run's provenance (config, metrics, history) into results/, small enough for git
archive() {
  $PY experiments/archive.py "$RUNS" "$1"
}
