"""``python -m xfvae.tune`` as separate processes on one study: a study killed (SIGKILL) during its
second trial and run again ends with exactly its budget and no configuration run twice; two
workers started at once both contribute, and no trial or re-run is lost or duplicated.

Marked slow: each test starts two or three Python processes (about 12 s of imports each) and
takes 40-60 s on an idle two-core machine. The default suite covers the same mechanisms in one
process (tests/test_tune_study.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.test_tune_study import TINY, journal, tiny_args
from xfvae import REPO_ROOT

# Trials long enough (30 epochs of a tiny model, 1-3 s) to be caught running.
EPOCHS = 30
pytestmark = pytest.mark.slow


def launch(tmp_path: Path, args: list[str], log_name: str) -> subprocess.Popen:
    log = open(tmp_path / log_name, "w")  # noqa: SIM115 (closed with the process)
    cmd = [sys.executable, "-m", "xfvae.tune", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers x 1 thread: within 2 cores
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen, tmp_path: Path, log_name: str, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, (tmp_path / log_name).read_text()[-4000:]


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, f"the tuner exited before {what}"
        try:
            if predicate():
                return
        except (KeyError, ValueError, OSError):  # no study (or journal) yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(trials) -> list:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_killed_study_resumes_to_its_budget_without_repeating_a_trial(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = tiny_args(tmp_path, "model=mf", "budget=3", "selection.top_k=1", *TINY, epochs=EPOCHS)
    proc = launch(tmp_path, args, "first.log")

    def second_trial_training() -> bool:
        trials = journal(tmp_path).get_trials()
        return len(finished(trials)) == 1 and any(
            t.state == TrialState.RUNNING and t.intermediate_values for t in trials
        )

    wait_for(second_trial_training, proc, "the second trial to train")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = next(t for t in journal(tmp_path).get_trials() if t.state == TrialState.RUNNING)

    finish(launch(tmp_path, args, "again.log"), tmp_path, "again.log")
    trials = journal(tmp_path).get_trials()
    assert len(finished(trials)) == 3, "exactly the budget"
    assert (
        trials[killed.number].state == TrialState.FAIL
        and "reaped" in trials[killed.number].user_attrs
    )
    configs = [tuple(t.user_attrs["overrides"]) for t in finished(trials)]
    assert len(set(configs)) == 3, "no configuration run twice"
    assert (tmp_path / "results/trials.csv").is_file() and (
        tmp_path / "conf/tuned/synthetic/mf.yaml"
    ).is_file()


def test_two_workers_started_at_once_share_one_study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = tiny_args(tmp_path, "model=mf", "budget=4", *TINY, epochs=EPOCHS)
    procs = [launch(tmp_path, args, f"worker{k}.log") for k in (0, 1)]
    for k, proc in enumerate(procs):
        finish(proc, tmp_path, f"worker{k}.log")
    trials = journal(tmp_path).get_trials()
    assert len(finished(trials)) == len(trials) == 4, "none lost, none beyond budget"
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in procs}, "both contributed"
    assert len({tuple(t.user_attrs["overrides"]) for t in trials}) == 4, "no duplicate"
    reruns = journal(tmp_path, "mf.reruns").get_trials()
    jobs = [t.user_attrs["job"] for t in reruns if t.state == TrialState.COMPLETE]
    assert len(jobs) == len(set(jobs)) >= 2, "each selection job ran exactly once"
    assert all(t.state == TrialState.COMPLETE for t in reruns)
