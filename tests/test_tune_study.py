"""The tuner in one process on tiny synthetic data: records, selection protocol and tuned config;
the test split is never read; dead trials are failed and replaced; running trials count toward the
budget; per-trial seeds; pruning; a repeated configuration is not trained twice."""

from __future__ import annotations

import json
import math
import platform
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.trial import TrialState

from xfvae import CONF_DIR
from xfvae.data.datamodule import RatingsDataModule
from xfvae.runs.signals import RunInterrupted
from xfvae.tune import study as study_mod
from xfvae.tune import trials as trials_mod
from xfvae.tune.driver import compose_tune, tune
from xfvae.tune.space import Space
from xfvae.tune.study import TuneError, is_dead, make_context, open_studies
from xfvae.tune.trials import TrialReporter, search

TINY = ["data=synthetic", "data.options.n_users=60", "data.options.n_items=40"]
RECORDS = ["trials.csv", "selection.json", "provenance.json", "summary.md", "history.png"]


def tiny_args(tmp_path: Path, *args: str, epochs: int = 3) -> list[str]:
    """A quick study whose files all live under tmp_path (tuned configs in tmp_path/conf/tuned)."""
    return [
        f"storage_dir={tmp_path / 'store'}",
        f"results_dir={tmp_path / 'results'}",
        f"tuned_dir={tmp_path / 'conf' / 'tuned'}",
        f"equal.max_epochs={epochs}",
        f"equal.patience={epochs}",
        "selection.top_k=2",
        "selection.seeds=[1]",
        "poll_s=0.2",
        *args,
    ]


def journal(tmp_path: Path, name: str = "mf") -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "journal.log"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_study_writes_records_selects_by_mean_and_its_tuned_config_loads(tmp_path, monkeypatch):
    args = tiny_args(tmp_path, "model=mf", "budget=3", *TINY)
    out = tune(compose_tune(args))
    assert out["status"] == "complete"
    res = tmp_path / "results"
    table = pd.read_csv(res / "trials.csv")
    assert list(table.trial) == [0, 1, 2] and set(table.state) <= {"COMPLETE", "PRUNED"}
    assert {"val_rmse_seed0", "val_rmse_seed1", "seconds", "best_epoch", "epochs"} <= set(table)
    assert "model.net.dim" in table and "model.optimizer.lr" in table

    # Protocol: the 2 best seed-0 trials and every anchor (trials 0 and 1: mf's default and
    # second recipe) re-run on seed 1; the lowest mean over seeds 0-1 kept.
    assert list(table.anchor[:2]) == ["default", "table2_middle"] and table.anchor[2:].isna().all()
    sel = json.loads((res / "selection.json").read_text())
    best = table[table.state == "COMPLETE"].sort_values(["val_rmse_seed0", "trial"])
    top = list(best.trial[:2])
    assert [c["trial"] for c in sel["candidates"]] == top + [t for t in (0, 1) if t not in top]
    for c in sel["candidates"]:
        seed1 = json.loads(
            (tmp_path / f"store/reruns/t{c['trial']}-seed1/metrics.json").read_text()
        )
        assert c["val_rmse"]["1"] == pytest.approx(seed1["val/rmse"])
        assert c["mean"] == pytest.approx((c["val_rmse"]["0"] + c["val_rmse"]["1"]) / 2)
    means = {c["trial"]: c["mean"] for c in sel["candidates"]}
    chosen = sel["chosen"]["trial"]
    assert chosen == min(means, key=means.get)
    assert sel["extras_off"] is not None and len(sel["extras_off"]["val_rmse"]) == 2

    prov = json.loads((res / "provenance.json").read_text())
    assert prov["budget"] == 3 and prov["trials"]["COMPLETE"] + prov["trials"]["PRUNED"] == 3
    assert prov["equal"] == {"max_epochs": 3, "patience": 3, "min_delta": 0.0}
    assert prov["sampler"]["seed"] == 0
    assert prov["git_commits"] and prov["wall_seconds"] > 0
    assert (res / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert f"| {chosen} (kept) |" in (res / "summary.md").read_text()

    # The tuned config loads with tuned=<data>/<study> and holds what the chosen trial ran with.
    ran = OmegaConf.load(tmp_path / f"store/runs/{chosen}/.hydra/config.yaml")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "tuned=synthetic/mf"]
        )
    assert cfg.model.name == "mf" and cfg.model.max_epochs == 3 and cfg.model.patience == 3
    assert cfg.callbacks.early_stopping.min_delta == ran.callbacks.early_stopping.min_delta == 0.0
    for o in sel["chosen"]["overrides"]:
        key = o.lstrip("+").split("=", 1)[0]
        assert OmegaConf.select(cfg, key) == OmegaConf.select(ran, key), key

    # Re-running the finished study trains nothing and re-writes the same records.
    before = {f: (res / f).read_bytes() for f in RECORDS}
    tuned = (tmp_path / "conf/tuned/synthetic/mf.yaml").read_text()
    monkeypatch.setattr(trials_mod, "train", lambda *a, **k: pytest.fail("trained again"))
    tune(compose_tune(args))
    assert {f: (res / f).read_bytes() for f in RECORDS} == before
    assert (tmp_path / "conf/tuned/synthetic/mf.yaml").read_text() == tuned


def write_split(folder: Path, poison: bool) -> list[str]:
    """A fixed csv split; ``poison`` turns every test rating r into 6 - r."""
    g = np.random.default_rng(0)
    u, i = np.nonzero(g.random((50, 30)) < 0.3)
    r = np.clip(np.round(3 + g.normal(size=u.size)), 1, 5)
    part = g.permutation(u.size) % 10  # 70 / 15 / 15
    folder.mkdir(parents=True)
    paths = []
    for name, rows in (("train", part < 7), ("val", (part >= 7) & (part < 8)), ("test", part >= 8)):
        ratings = 6 - r[rows] if poison and name == "test" else r[rows]
        df = pd.DataFrame({"user": u[rows], "item": i[rows], "rating": ratings})
        df.to_csv(folder / f"{name}.csv", index=False)
        paths.append(f"data.{name}={folder / f'{name}.csv'}")
    return paths


def test_tuning_never_reads_the_test_split(tmp_path, monkeypatch):
    """The test split is trapped (reading it fails the run), and a study on a split whose test
    ratings are poisoned gives the same trials, choice and tuned config as on the clean split."""
    original = RatingsDataModule.pairs

    def guarded(self, part):
        assert part != "test", "the tuner read the test split"
        return original(self, part)

    monkeypatch.setattr(RatingsDataModule, "pairs", guarded)
    monkeypatch.setattr(RatingsDataModule, "test_dataloader", lambda self: pytest.fail("test"))
    records = {}
    for poison in (False, True):
        root = tmp_path / ("poisoned" if poison else "clean")
        split = write_split(root / "split", poison)
        args = tiny_args(root, "model=mf", "budget=2", "data=csv", *split, "selection.top_k=1")
        tune(compose_tune(args))
        table = pd.read_csv(root / "results/trials.csv").drop(columns=["seconds", "config_hash"])
        sel = json.loads((root / "results/selection.json").read_text())
        tuned = (root / "conf/tuned/csv/mf.yaml").read_text()
        records[poison] = (table, sel, tuned[tuned.index("defaults:") :])
    pd.testing.assert_frame_equal(records[False][0], records[True][0])
    assert records[False][1] == records[True][1]
    assert records[False][2] == records[True][2]


def test_a_study_whose_worker_died_mid_trial_resumes_to_its_budget(tmp_path):
    """Two trials (the anchors) done, the third one's process dead (its trial still RUNNING in the
    journal): running the study again fails that trial and ends with exactly 4 finished, none
    repeated. (tests/test_tune_processes.py does it with a real SIGKILL.)"""
    args = tiny_args(tmp_path, "model=mf", "budget=4", "selection.top_k=1", *TINY)
    ctx = make_context(compose_tune([*args, "budget=2"]))
    search_study, _ = open_studies(ctx)
    search(ctx, search_study)  # trials 0 and 1, the anchors
    killed = search_study.ask()  # trial 2, whose process then died
    gone = subprocess.Popen(["true"])
    gone.wait()
    for k, v in {"host": platform.node(), "pid": gone.pid, "pid_started": 0.0}.items():
        killed.set_user_attr(k, v)
    ctx.space.sample(killed)

    tune(compose_tune(args))
    trials = journal(tmp_path).get_trials()
    states = [t.state for t in trials]
    assert states[2] == TrialState.FAIL and "is gone" in trials[2].user_attrs["reaped"]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and len(trials) == 5
    assert len({tuple(t.user_attrs["overrides"]) for t in done}) == 4


class StopAtEpoch(pl.Callback):
    """A stop signal noticed at the end of epoch ``epoch`` (as SignalStop raises it)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RunInterrupted(signal.SIGTERM)


def test_a_stopped_trial_resumes_from_its_checkpoint_with_its_curve(tmp_path, monkeypatch):
    """SIGTERM in trial 0's fifth epoch: the trial is failed (it does not count) and queued again
    (after the second anchor, queued before it); the study run again trains it on from
    checkpoints/last.ckpt in the same run folder with the same values and its whole curve, and
    the study ends with its budget."""
    args = tiny_args(tmp_path, "model=mf", "budget=2", "selection.top_k=1", *TINY, epochs=8)
    train = trials_mod.train
    runs = []

    def stopped(cfg, callbacks=()):
        return train(cfg, callbacks=[*callbacks, StopAtEpoch(4)])

    def recorded(cfg, callbacks=()):
        out = train(cfg, callbacks=callbacks)
        runs.append((Path(cfg.paths.output_dir).name, out["resumed_from"]))
        return out

    monkeypatch.setattr(trials_mod, "train", stopped)
    with pytest.raises(RunInterrupted):
        tune(compose_tune(args))
    first = journal(tmp_path).get_trials()[0]
    assert first.state == TrialState.FAIL and "SIGTERM" in first.user_attrs["interrupted"]
    assert (tmp_path / "store/runs/0/checkpoints/last.ckpt").is_file()

    monkeypatch.setattr(trials_mod, "train", recorded)
    tune(compose_tune(args))
    trials = journal(tmp_path).get_trials()
    again = trials[2]
    assert again.user_attrs["continues"] == 0 and again.state == TrialState.COMPLETE
    assert again.params == first.params and again.user_attrs["run_dir"] == "runs/0"
    assert runs[:2] == [("1", None), ("0", "checkpoints/last.ckpt")], "trained on from last.ckpt"
    assert sorted(again.intermediate_values)[: len(first.intermediate_values)] == sorted(
        first.intermediate_values
    ) and len(again.intermediate_values) > len(first.intermediate_values)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2 and len(trials) == 3
    table = pd.read_csv(tmp_path / "results/trials.csv").set_index("trial")
    assert table.loc[2, "continues"] == 0 and "SIGTERM" in table.loc[0, "failed"]
    assert table.loc[2, "anchor"] == "default" and table.restarted.isna().all()
    summary = (tmp_path / "results/summary.md").read_text()
    assert "0 failed, 1 stopped by a signal and continued as a new trial" in summary


def test_a_trial_that_raised_is_not_queued_again(tmp_path):
    ctx = make_context(compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", *TINY)))
    search_study, _ = open_studies(ctx)
    for attrs in ({"error": "ValueError()"}, {"diverged": "nan loss"}, {}):
        t = search_study.ask()
        ctx.space.sample(t)
        for k, v in {"overrides": ["x=1"], **attrs}.items():
            t.set_user_attr(k, v)
        search_study.tell(t, state=TrialState.FAIL)
    trials_mod.queue_stopped(ctx, search_study)
    queued = search_study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["continues"] for t in queued] == [2], "only the stopped one"
    trials_mod.queue_stopped(ctx, search_study)
    assert len(search_study.get_trials(states=(TrialState.WAITING,))) == 1, "queued once"


def test_another_hosts_trial_is_dead_only_after_its_heartbeat_goes_stale():
    now = time.time()
    attrs = {"host": "elsewhere", "pid": 1, "pid_started": 0.0}
    fresh = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={**attrs, "heartbeat": now}
    )
    stale = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={**attrs, "heartbeat": now - 99}
    )
    assert is_dead(fresh, 60) is None
    assert "no heartbeat from elsewhere" in is_dead(stale, 60)
    assert is_dead(stale, 0) is None  # stale_after_s=0: never presumed dead


def test_running_trials_count_toward_the_budget(tmp_path, monkeypatch):
    """A live worker's running trial plus a finished one fill budget 2: no third trial starts."""
    ctx = make_context(compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", *TINY)))
    search_study, _ = open_studies(ctx)
    running = search_study.ask()
    for k, v in study_mod.owner().items():  # this process: alive
        running.set_user_attr(k, v)
    search_study.tell(search_study.ask(), 1.0)

    class Waited(Exception):
        pass

    monkeypatch.setattr(trials_mod.time, "sleep", lambda s: (_ for _ in ()).throw(Waited))
    with pytest.raises(Waited):
        search(ctx, search_study)
    assert len(search_study.get_trials(states=(TrialState.RUNNING, TrialState.COMPLETE))) == 2


def test_workers_with_the_same_sampler_seed_propose_different_trials(tmp_path):
    """Trial n's draws are seeded from (seed, n): two workers differ, a fresh study repeats."""
    ctx = make_context(compose_tune(tiny_args(tmp_path / "a", "model=mf", "budget=2")))
    first, _ = open_studies(ctx)
    second, _ = open_studies(ctx)  # another worker on the same storage
    t0, t1 = first.ask(), second.ask()
    labels0, labels1 = ctx.space.sample(t0), ctx.space.sample(t1)
    assert (t0.number, t1.number) == (0, 1) and labels0 != labels1
    again = make_context(compose_tune(tiny_args(tmp_path / "b", "model=mf", "budget=2")))
    assert again.space.sample(open_studies(again)[0].ask()) == labels0


def test_changed_settings_are_refused_on_resume(tmp_path):
    open_studies(make_context(compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", *TINY))))
    other = make_context(
        compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", "equal.patience=9", *TINY))
    )
    with pytest.raises(TuneError, match=r"other settings \(equal differ\)"):
        open_studies(other)


def test_reporter_prunes_a_trial_worse_than_the_median():
    study = optuna.create_study(
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    done = study.ask()
    for step in range(3):
        done.report(0.5, step)
    study.tell(done, 0.5)
    for value, pruned in ((2.0, True), (0.1, False)):
        reporter = TrialReporter(study.ask(), prune=True)
        trainer = SimpleNamespace(
            sanity_checking=False,
            current_epoch=0,
            should_stop=False,
            callback_metrics={"val/rmse": torch.tensor(value)},
        )
        reporter.on_validation_end(trainer, None)
        assert trainer.should_stop is pruned and (reporter.pruned_at == 0) is pruned


def test_a_configuration_proposed_twice_is_trained_once(tmp_path, monkeypatch):
    labels, sample, train = {}, Space.sample, trials_mod.train

    def same_every_time(self, trial):  # a TPE that keeps proposing one configuration
        if not labels:
            labels.update(sample(self, trial))
        return dict(labels)

    runs = []
    monkeypatch.setattr(Space, "sample", same_every_time)
    monkeypatch.setattr(
        trials_mod, "train", lambda cfg, **k: runs.append(cfg.paths.output_dir) or train(cfg, **k)
    )
    tune(compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", "selection.top_k=1", *TINY)))
    trials = journal(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[1].user_attrs["duplicate_of"] == 0 and trials[1].value == trials[0].value
    assert math.isfinite(trials[0].value)
    assert [Path(r).name for r in runs if Path(r).parent.name == "runs"] == ["0"]


def test_a_failing_trial_is_failed_and_three_in_a_row_stop_the_worker(tmp_path, monkeypatch):
    def broken(cfg, **kwargs):
        raise ValueError("broken model")

    monkeypatch.setattr(trials_mod, "train", broken)
    with pytest.raises(TuneError, match="3 search trials in a row failed.*broken model"):
        tune(compose_tune(tiny_args(tmp_path, "model=mf", "budget=2", *TINY)))
    assert [t.state for t in journal(tmp_path).get_trials()] == [TrialState.FAIL] * 3
