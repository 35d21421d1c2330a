"""The tuning protocol's guarantees on tiny studies: the budget is checked before anything is
written; an interrupted, continued study tries the configurations of an uninterrupted one in the
same order; a committed study continues in a fresh clone (a stopped trial whose checkpoint is gone
starts again from epoch 0, and the records say so); a tuned configuration's final run replays its
trial's validation RMSE; anchors and the stopping rule; the allocator and the core guard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tests.test_tune_study import TINY, StopAtEpoch, journal, tiny_args
from xfvae import CONF_DIR
from xfvae.runs.signals import RunInterrupted
from xfvae.train import train
from xfvae.tune import trials as trials_mod
from xfvae.tune.__main__ import main as tune_main
from xfvae.tune.driver import compose_tune, tune
from xfvae.tune.record import write_records
from xfvae.tune.select import candidates
from xfvae.tune.space import SPACE_DIR, load_space
from xfvae.tune.study import TuneError, compose_train, make_context, open_studies
from xfvae.tune.trials import search

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("budget", ["abc", "0", "-1", "2.5", "1", "true"])
def test_a_bad_budget_is_a_clear_error_and_writes_nothing(tmp_path, capsys, budget):
    """Issue 20 case 4: no traceback, exit 2, a message naming the value, no journal.log."""
    rc = tune_main(tiny_args(tmp_path, "model=mf", f"budget={budget}", *TINY))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: budget={budget}: the budget must be a whole number")
    assert ">= 2" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "store").exists()


def test_a_missing_budget_is_named(tmp_path, capsys):
    assert tune_main(tiny_args(tmp_path, "model=mf", *TINY)) == 2
    assert "budget=<n> is required" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def finished_overrides(tmp_path: Path) -> list[list[str]]:
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t.user_attrs["overrides"] for t in journal(tmp_path).get_trials() if t.state in done]


def run_search(args: list[str]) -> None:
    ctx = make_context(compose_tune(args))
    search(ctx, open_studies(ctx)[0])


def test_an_interrupted_study_tries_the_uninterrupted_ones_configurations(tmp_path, monkeypatch):
    """Issue 20 case 5: SIGTERM in trial 2 (the first drawn one), then the study run again: its
    finished trials are the uninterrupted study's configurations, in the same order."""
    common = ["model=mf", "budget=5", "pruner.name=none", *TINY]
    run_search(tiny_args(tmp_path / "straight", *common))
    straight = finished_overrides(tmp_path / "straight")
    assert len(straight) == 5 and len({tuple(o) for o in straight}) == 5

    original, stopped = trials_mod.train, []

    def stop_trial_2_once(cfg, callbacks=()):
        if Path(cfg.paths.output_dir).name == "2" and not stopped:
            stopped.append(True)
            callbacks = [*callbacks, StopAtEpoch(1)]
        return original(cfg, callbacks=callbacks)

    monkeypatch.setattr(trials_mod, "train", stop_trial_2_once)
    args = tiny_args(tmp_path / "stopped", *common)
    with pytest.raises(RunInterrupted):
        run_search(args)
    run_search(args)
    trials = journal(tmp_path / "stopped").get_trials()
    assert trials[2].state == TrialState.FAIL and trials[3].user_attrs["continues"] == 2
    assert finished_overrides(tmp_path / "stopped") == straight


def test_a_committed_study_continues_in_a_fresh_clone(tmp_path, monkeypatch):
    """Only results_dir (records + journal.log) travels: the finished trials are not trained
    again, the study goes on to its new budget, and a stopped trial whose checkpoint stayed behind
    trains again from epoch 0, which trials.csv records."""
    here = tiny_args(tmp_path / "here", "model=mf", *TINY, epochs=6)
    run_search([*here, "budget=2"])  # the anchors

    original, trained = trials_mod.train, []

    def stop_in_epoch_2(cfg, callbacks=()):
        return original(cfg, callbacks=[*callbacks, StopAtEpoch(2)])

    monkeypatch.setattr(trials_mod, "train", stop_in_epoch_2)
    with pytest.raises(RunInterrupted):
        run_search([*here, "budget=3"])  # trial 2 stopped; its checkpoint stays in here/store
    assert (tmp_path / "here/store/runs/2/checkpoints/last.ckpt").is_file()

    shutil.copytree(tmp_path / "here/results", tmp_path / "clone/results")  # what git carries

    def recorded(cfg, callbacks=()):
        out = original(cfg, callbacks=callbacks)
        trained.append((Path(cfg.paths.output_dir), out["resumed_from"], out["epochs"]))
        return out

    monkeypatch.setattr(trials_mod, "train", recorded)
    clone = tiny_args(tmp_path / "clone", "model=mf", *TINY, epochs=6)
    ctx = make_context(compose_tune([*clone, "budget=4"]))
    search_study, reruns = open_studies(ctx)
    search(ctx, search_study)
    trials = search_study.get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2, "kept, not re-run"
    again = trials[3]
    assert again.user_attrs["continues"] == 2 and again.state == TrialState.COMPLETE
    assert "trained again from epoch 0" in again.user_attrs["restarted"]
    assert trained[0] == (tmp_path / "clone/store/runs/2", None, 6), "from epoch 0, in the clone"
    assert len(trained) == 2 and sum(t.state == TrialState.COMPLETE for t in trials) == 4
    write_records(ctx, search_study, reruns)
    table = pd.read_csv(tmp_path / "clone/results/trials.csv").set_index("trial")
    assert "epoch 0" in table.loc[3, "restarted"] and table.restarted.notna().sum() == 1


@pytest.mark.parametrize("model", ["daecf"])
def test_a_tuned_configurations_final_run_replays_its_trial(tmp_path, model):
    """A tiny study, then the final run of its kept configuration the way `make reproduce-table3`
    runs it (tuned=..., seed 0, test evaluated and traced per epoch): the same validation RMSE,
    exactly. DAE-CF's dropout draws from the global RNG, which the test loaders must not touch."""
    out = tune(compose_tune(tiny_args(tmp_path, f"model={model}", "budget=2", *TINY, epochs=4)))
    assert out["status"] == "complete"
    sel = json.loads((tmp_path / "results/selection.json").read_text())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                f"tuned=synthetic/{model}",
                "seed=0",
                "logger=none",
                *TINY,
            ],
        )
    cfg.paths.output_dir = str(tmp_path / "final")
    assert cfg.evaluation.test and cfg.evaluation.test_curve
    metrics = train(cfg)
    assert metrics["val/rmse"] == sel["chosen"]["val_rmse"]["0"]
    trial = journal(tmp_path, model).get_trials()[sel["chosen"]["trial"]]
    curve = pd.read_csv(tmp_path / "final/history.csv")["val_rmse"].tolist()
    assert curve == [trial.intermediate_values[e] for e in range(len(curve))], "every epoch"


def model_value(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if key.endswith(".hidden") and isinstance(value, list):
        return "-".join(str(v) for v in value)  # the spaces' labels for layer lists
    return value


@pytest.mark.parametrize(
    "space", sorted(p.stem for p in SPACE_DIR.glob("*.yaml") if p.stem in MODELS)
)
def test_every_space_starts_from_the_models_default_and_a_second_recipe(space):
    """Each study's anchors: the same number for every model, the first the committed default
    (so it cannot drift from conf/model/), the second a different documented configuration."""
    cfg = compose_tune([f"model={space}", "budget=20"])
    train_cfg = compose_train([f"model={space}"])
    s = load_space(cfg.hparams_search, space, get_class(train_cfg.model.net._target_).batch_kind)
    assert [a.name for a in s.anchors][0] == "default" and len(s.anchors) == 2
    default, other = s.anchors
    assert default.labels != other.labels and other.source
    for key, value in s.values(default.labels).items():
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if key.endswith(".hidden"):
            value = value or ""
        assert model_value(train_cfg, key) == value, key


def test_every_anchor_is_a_candidate_so_the_kept_one_is_never_worse():
    def trial(number, value, anchor=None):
        attrs = {"overrides": [f"x={number}"], **({"anchor": anchor} if anchor else {})}
        return optuna.trial.create_trial(value=value, user_attrs=attrs)

    trials = [trial(0, 0.95, "default"), trial(1, 0.99, "paper"), trial(2, 0.90), trial(3, 0.91)]
    for t, n in zip(trials, range(4), strict=True):
        t.number = n
    assert [t.number for t in candidates(trials, top_k=2)] == [2, 3, 0, 1]


def test_a_still_improving_run_is_not_stopped(tmp_path):
    """The configured early stopping (conf/callbacks/default.yaml) with patience 3 on a curve that
    keeps improving by 1e-6 an epoch: never stopped; once it stops improving, stopped after 3."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["model=mf", "model.patience=3"])
    stopper = instantiate(cfg.callbacks.early_stopping)
    curve = [0.95 - 1e-6 * e for e in range(40)] + [0.9] + [0.9] * 3
    stops = [stopper._evaluate_stopping_criteria(torch.tensor(v))[0] for v in curve]
    assert not any(stops[:41]) and stops[-1]


ALLOC = """
import resource, sys
from xfvae.runs.allocator import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "keep" else None
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    a = bytearray(60_000_000); del a
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_entry_points_allocator_setting_stops_page_fault_churn():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", ALLOC, mode], capture_output=True, text=True, check=True
        )
        ok, n = out.stdout.split()
        return ok, int(n)

    (_, churn), (ok, kept) = faults("default"), faults("keep")
    assert ok == "True" and kept * 5 < churn, (kept, churn)


def test_a_worker_beyond_the_cores_is_refused_unless_asked(tmp_path, monkeypatch):
    """Another live worker of this study on this host, one core, one thread each: refused."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        args = tiny_args(tmp_path, "model=mf", "budget=2", *TINY)
        ctx = make_context(compose_tune(args))
        study, _ = open_studies(ctx)
        running = study.ask()
        import platform

        import psutil

        for k, v in {
            "host": platform.node(),
            "pid": other.pid,
            "pid_started": psutil.Process(other.pid).create_time(),
        }.items():
            running.set_user_attr(k, v)
        with pytest.raises(TuneError, match="one more would need 2 of its 1 cores"):
            search(ctx, study)

        asked = make_context(compose_tune([*args, "oversubscribe=true"]))
        trials_mod.check_cores(asked, study)  # asked for: no error
    finally:
        other.kill()
        other.wait()
