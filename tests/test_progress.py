"""Long make targets show progress: experiments/progress.py counts each job's outcome file, and
experiments/common.sh plans a target's jobs, starts the watcher beside its sweeps and stops it.
A fake sweep (a stand-in for `python -m xfvae.train` that writes outcomes) keeps it fast."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xfvae.runs.sweep import now, read_outcomes, record_outcome

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import progress  # noqa: E402


def test_progress_line_counts_failures_and_estimates_from_trained_runs(tmp_path):
    since = now()
    for job, outcome in enumerate(["ran", "skipped", "failed", "ran"]):
        (tmp_path / "d" / str(job) / ".hydra").mkdir(parents=True)
        record_outcome(tmp_path / "d" / str(job), outcome, "boom" if outcome == "failed" else None)
    state = progress.measure([tmp_path / "d", tmp_path / "missing"], 10, since, started=0.0)
    assert (state.finished, state.failed, state.skipped) == (4, 1, 1)
    # 3 runs trained (the skipped one cost nothing): 6 left at elapsed / 3 each
    fixed = progress.Progress(10, 4, 1, 1, elapsed_s=90.0)
    assert fixed.remaining_s == pytest.approx(180.0)
    assert fixed.line() == (
        "progress: 4/10 runs finished (1 skipped as complete), 1 failed, elapsed 1:30, "
        "left about 3:00"
    )
    assert "unknown" in progress.Progress(10, 1, 0, 1, 5.0).line()


def test_watch_writes_plain_lines_to_the_stream_and_the_log(tmp_path):
    stream, log = io.StringIO(), tmp_path / "progress.log"
    since = now()
    (tmp_path / "d" / "0" / ".hydra").mkdir(parents=True)
    record_outcome(tmp_path / "d" / "0", "ran")
    state = progress.watch([str(tmp_path / "d")], 1, since, log, every=60, tick=0.01, stream=stream)
    assert state.finished == 1
    assert "progress: 1/1 runs finished" in stream.getvalue()
    assert "\r" not in stream.getvalue()  # not a terminal: plain lines only
    assert "progress: 1/1 runs finished" in log.read_text()


FAKE_TRAIN = """#!/usr/bin/env bash
# Stands in for `python -m xfvae.train -m ...`: one outcome per seed, a little apart.
if [ "$1" = -m ] && [ "$2" = xfvae.train ]; then
  for a in "$@"; do case "$a" in hydra.sweep.dir=*) dir=${a#*=} ;; esac; done
  for s in 0 1 2; do
    sleep 0.2
    mkdir -p "$dir/seed$s/.hydra"
    "{python}" -c "from xfvae.runs.sweep import record_outcome as r; r('$dir/seed$s', 'ran')"
  done
  exit 0
fi
exec "{python}" "$@"
"""


def test_an_experiment_script_plans_its_jobs_and_reports_progress(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_TRAIN.replace("{python}", sys.executable))
    fake.chmod(0o755)
    runs = tmp_path / "logs"
    script = f"""
        EXPERIMENT=fake RUNS={runs} PY={fake} SEEDS=0,1,2 DATASETS=d1 JOBS=1 PROGRESS_TICK=0.05
        source experiments/common.sh
        sweeps() {{
          train_sweep d1/a 'seed${{seed}}' model=mf
          train_sweep d1/b 'seed${{seed}}' model=mf data.split.train_frac=0.01,0.1
          train_sweep d1/c 'seed${{seed}}' model=mf
        }}
        run_sweeps sweeps
        finish
    """
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "fake: 12 runs planned" in text, text  # 3 seeds + 3 seeds x 2 fractions + 3 seeds
    assert "no such job" not in text, text  # the third sweep waits on running sweeps only
    # JOBS=1 counts sweeps only (the watcher is a background job too): one after the other
    a, b, c = (read_outcomes(runs / "d1" / name) for name in ("a", "b", "c"))
    assert max(r["at"] for r in a) < min(r["at"] for r in b)
    assert max(r["at"] for r in b) < min(r["at"] for r in c)
    assert "progress: 0/12 runs finished" in text
    # the fake writes 3 outcomes per sweep; the second sweep is counted as 3 of its 6
    assert "progress: 6/12 runs finished" in text, text
    log = (runs / "progress.log").read_text()
    assert "progress: 6/12 runs finished" in log and "0 failed" in log


def test_a_tuning_study_is_followed_in_its_journal(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "journal.log"
    assert progress.measure_study(journal, "mf", 20, started=0.0).finished == 0  # not started yet
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="mf", storage=storage)
    optuna.create_study(study_name="mf.reruns", storage=storage)  # not counted
    for state in ("COMPLETE", "PRUNED", "FAIL", "COMPLETE"):
        trial = study.ask()
        if state == "COMPLETE":
            study.tell(trial, 0.9)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    stopped = study.ask()  # a stop signal ended it; the tuner continues it as a new trial
    stopped.set_user_attr("interrupted", "RunInterrupted('received SIGTERM')")
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    study.ask()  # running: not finished
    state = progress.measure_study(journal, "mf", 20, started=0.0)
    assert (state.total, state.finished, state.failed, state.stopped) == (20, 3, 1, 1)
    assert "1 failed, 1 stopped and continued" in state.line()
