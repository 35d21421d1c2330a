# xfvae: `make reproduce-table3` runs the main job on ML-100K; `make test` runs the test suite.
# Both set everything up from a fresh clone (virtualenv in .venv, editable install, data cache).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 (a plain `torch` pulls several GB of CUDA wheels). Elsewhere use e.g.
# make install TORCH_SPEC=torch==2.13.0 PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
# Optional extras besides dev, e.g. EXTRAS=tensorboard (dev already holds the SLURM launcher).
EXTRAS ?=
comma := ,
STAMP := $(VENV)/.installed$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))
SEEDS ?= 0,1,2

.PHONY: install test test-slow lint format data report clean-logs help reproduce-all check-defaults \
	reproduce-table1 reproduce-table3 reproduce-figure2 reproduce-table4 reproduce-figure3 reproduce-figure4

help: ## list every target with what it does
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install xfvae + dev tools (idempotent)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev$(if $(EXTRAS),$(comma)$(EXTRAS))]"
	touch $(STAMP)

data: install ## fetch and verify the default data set (ML-100K)
	$(BIN)/python -m xfvae.data.describe data=ml-100k

test: install data ## run the default test suite (not the `slow` ones) and print its duration
	@start=$$(date +%s); $(BIN)/python -m pytest; rc=$$?; \
	echo "test suite: $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

test-slow: install data ## the long checks only
	$(BIN)/python -m pytest -m slow

lint: install ## ruff check + format check (changes nothing)
	$(BIN)/ruff check src baselines tests benchmarks experiments
	$(BIN)/ruff format --check src baselines tests benchmarks experiments

format: install ## ruff format + ruff check --fix (rewrites files)
	$(BIN)/ruff format src baselines tests benchmarks experiments
	$(BIN)/ruff check --fix src baselines tests benchmarks experiments

# The reproduce-* targets take MODELS, DATASETS (default ml-100k; the paper's: "ml-1m ml-10m
# ml-20m amazon-pet amazon-kindle"), SEEDS (0,1,2), TRAINER (default | gpu), LAUNCHER (slurm |
# submitit_local) and FRESH=1 (start over). Re-running a target skips complete runs and resumes
# killed ones (logs/<experiment>/<data>/...); a failed run does not stop it (non-zero exit at the end).
reproduce-table3: install data ## Table 3 + Figure 2 (stats, CD diagrams): every model x seed on ML-100K
	SEEDS=$(SEEDS) bash experiments/table3.sh

reproduce-figure2: reproduce-table3 ## Figure 2 comes out of the Table 3 runs (results/table3/*/stats)

reproduce-table4: install data ## Table 4: ablation of the cross-feedback VAE
	SEEDS=$(SEEDS) bash experiments/table4.sh

reproduce-figure3: install data ## Figure 3: sub-sampled training sets (1-10%)
	SEEDS=$(SEEDS) bash experiments/figure3.sh

reproduce-figure4: install data ## Figure 4: convergence of variants A-E (paper: DATASETS=ml-1m)
	SEEDS=$(SEEDS) bash experiments/figure4.sh

reproduce-all: install data ## every artifact: Tables 1, 3, 4 and Figures 2, 3, 4 (resumable)
	rc=0; for t in reproduce-table1 reproduce-table3 reproduce-table4 reproduce-figure3 \
	  reproduce-figure4; do $(MAKE) --no-print-directory $$t || rc=1; done; exit $$rc

check-defaults: install ## every model's default on three synthetic shapes unlike ML-100K: ends by early stopping?
	SEEDS=$${SEEDS:-0} bash experiments/defaults.sh

reproduce-table1: install ## Table 1: data set statistics beside the paper's
	for d in $${DATASETS:-ml-100k}; do $(BIN)/python -m xfvae.data.describe data=$$d; done

# Equal-budget tuning (README "Tuning (equal budget)", docs/tuning_protocol.md): one study, or
# every Table 3 model and the Table 4 rows with the same budget. Resumable: re-run the same command
# after an interruption; the study's state (journal.log) lives with its records under
# results/tuning/, so it also continues on another machine. WORKERS processes share one study, each
# trial on THREADS torch threads (default 1, the thread count of the experiment targets, so that a
# tuned configuration's final run replays its trial); WORKERS x THREADS above the cores is refused
# (by the tuner too) unless TUNE_ARGS holds oversubscribe=true.
# TUNE_ARGS: more key=value settings (conf/tune.yaml) or trial overrides (e.g. trainer=gpu).
.PHONY: tune tune-all
# $(call with_progress,WATCHER ARGS,COMMAND): COMMAND with experiments/progress.py beside it (a line
# at least once a minute), unless TUNE_ARGS moves the study (study=, results_dir=).
with_progress = mkdir -p logs/tune/$(DATA); \
	if [[ "$(TUNE_ARGS)" != *study=* && "$(TUNE_ARGS)" != *results_dir=* ]]; then \
	  $(BIN)/python experiments/progress.py $(1) & watcher=$$!; fi; \
	$(2); rc=$$?; [ -n "$$watcher" ] && kill $$watcher 2>/dev/null && wait $$watcher; exit $$rc
DATA ?= ml-100k
BUDGET ?= 20
WORKERS ?= 1
THREADS ?= 1
TUNE_MODELS ?= mf ncf cnncf urec irec vaecf daecf bpmf xfvae \
	xfvae_no_data_input xfvae_no_cross_feedback xfvae_no_attention
# $(call tune_cmd,MODEL): WORKERS processes on one study, each trial on THREADS torch threads.
tune_cmd = pids=; for i in $$(seq $(WORKERS)); do \
	  OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(BIN)/python -m xfvae.tune model=$(1) \
	  data=$(DATA) budget=$(BUDGET) $(TUNE_ARGS) & pids="$$pids $$!"; sleep 2; done; \
	rc=0; for p in $$pids; do wait $$p || rc=$$?; done; (exit $$rc)
# Refuse WORKERS x THREADS above the cores (the tuner refuses it too) unless asked.
check_cores = @cores=$$(nproc); if [ $$(( $(WORKERS) * $(THREADS) )) -gt $$cores ] && \
	  ! echo "$(TUNE_ARGS)" | grep -q "oversubscribe=true"; then \
	  echo "error: WORKERS=$(WORKERS) x THREADS=$(THREADS) exceeds the $$cores cores; lower them or pass TUNE_ARGS=oversubscribe=true" >&2; exit 2; fi
tune: install data ## tune one model: make tune MODEL=mf DATA=ml-100k BUDGET=20 [WORKERS=2]
	@test -n "$(MODEL)" || { echo "make tune needs MODEL=<name> (one of: $(TUNE_MODELS))"; exit 2; }
	$(check_cores)
	@$(call with_progress,--study results/tuning/$(DATA)/$(MODEL)/journal.log:$(MODEL) --total $(BUDGET) \
	  --log logs/tune/$(DATA)/progress.log,$(call tune_cmd,$(MODEL)))

tune-all: install data ## tune every model and Table 4 row with the same BUDGET (default 20)
	@for m in $(TUNE_MODELS); do $(MAKE) --no-print-directory tune MODEL=$$m || exit $$?; done

report: install ## collect runs under logs/ and write stats (all models, top 4), CD diagrams, Table 3 to results/latest
	$(BIN)/python -m xfvae.report collect logs --out results/latest/results.csv
	$(BIN)/python -m xfvae.report stats results/latest/results.csv --blocks auto --out results/latest/stats
	$(BIN)/python -m xfvae.report stats results/latest/results.csv --blocks auto --top 4 --out results/latest/stats
	$(BIN)/python -m xfvae.report table 3 results/latest/results.csv --out results/latest

.PHONY: figures
figures: install ## every table and figure again from the committed results/, no training (seconds)
	$(BIN)/python experiments/figures.py

clean-logs: ## delete logs/ (run directories and checkpoints; tuning journals live in results/tuning)
	rm -rf logs
