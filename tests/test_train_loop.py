"""The one training loop, end to end on synthetic data with known structure."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xfvae.report.names import SCORE_KEYS
from xfvae.train import train
from xfvae.training.task import NonFiniteLossError

REQUIRED = {
    *SCORE_KEYS,
    "best_epoch",
    "epochs",
    "train_seconds",
    "seconds_per_epoch",
    "peak_rss_mb",
    "n_params",
    "seed",
    "model",
    "data",
    "git_commit",
}
SYNTH = [
    "data=synthetic",
    "data.options.n_users=200",
    "data.options.n_items=150",
    "data.options.density=0.2",
    "data.options.noise_sd=0.3",
]


def brute_force_metrics(pred: pd.DataFrame, k: int) -> tuple[float, float]:
    """Paper protocol straight from its text, one user at a time (independent of xfvae.scoring.metrics)."""
    recalls, ndcgs = [], []
    for _, g in pred.groupby("user"):
        if len(g) < 2:
            continue
        g = g.sort_values(["prediction", "item"], ascending=[False, True])
        rel = (g["rating"].to_numpy() > 3).astype(float)
        if rel.sum() == 0:
            continue
        top = rel[:k]
        recalls.append(top.sum() / min(k, rel.sum()))
        dcg = sum(r / math.log2(p + 2) for p, r in enumerate(top))
        idcg = sum(1 / math.log2(p + 2) for p in range(int(min(k, rel.sum()))))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


@pytest.fixture(scope="module")
def mf_run(tmp_path_factory):
    from tests.conftest import make_cfg

    out = tmp_path_factory.mktemp("mf_run")
    cfg = make_cfg(
        out, ["model=mf", *SYNTH, "model.max_epochs=25", "model.batch_size=128", "seed=0"]
    )
    return out, train(cfg)


def test_run_writes_the_four_outputs(mf_run):
    out, metrics = mf_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert REQUIRED <= set(on_disk)
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_rmse", "test_rmse", "seconds"]
    assert len(hist) == on_disk["epochs"]
    assert on_disk["val/rmse"] == pytest.approx(hist["val_rmse"].min())
    pred = pd.read_csv(out / "test_predictions.csv")
    assert list(pred.columns) == ["user", "item", "rating", "prediction"]
    assert pred["prediction"].between(1, 5).all()


def test_metrics_recomputed_from_predictions_file(mf_run):
    out, _ = mf_run
    m = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "test_predictions.csv")
    rmse = math.sqrt(((pred["prediction"] - pred["rating"]) ** 2).mean())
    assert m["test/rmse"] == pytest.approx(rmse, abs=1e-6)
    for k in (20, 50):
        recall, ndcg = brute_force_metrics(pred, k)
        assert m[f"test/paper/recall@{k}"] == pytest.approx(recall, abs=1e-6)
        assert m[f"test/paper/ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)


def test_mf_learns_low_rank_structure(mf_run):
    out, m = mf_run
    pred = pd.read_csv(out / "test_predictions.csv")
    baseline = math.sqrt(((pred["rating"] - pred["rating"].mean()) ** 2).mean())
    assert m["test/rmse"] < 0.75 * baseline


def test_same_seed_gives_identical_metrics(tmp_path, cfg_factory):
    runs = [
        train(
            cfg_factory("model=mf", *SYNTH, "model.max_epochs=3", "seed=5", out=tmp_path / str(k))
        )
        for k in range(2)
    ]
    for key in ("val/rmse", "test/rmse", "test/ndcg@20", "test/recall@50", "best_epoch"):
        assert runs[0][key] == runs[1][key]
    other = train(
        cfg_factory("model=mf", *SYNTH, "model.max_epochs=3", "seed=6", out=tmp_path / "o")
    )
    assert other["test/rmse"] != runs[0]["test/rmse"]


def test_non_finite_loss_stops_with_clear_error(cfg_factory):
    cfg = cfg_factory(
        "model=mf",
        *SYNTH,
        "model.max_epochs=3",
        "model.optimizer.lr=1e30",
        "model.net.init_std=1e10",
    )
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        train(cfg)


def test_cli_exits_non_zero_on_nan(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "xfvae.train",
        "model=mf",
        *SYNTH,
        "model.max_epochs=2",
        "logger=none",
        "model.optimizer.lr=1e30",
        "model.net.init_std=1e10",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "training loss became" in res.stderr + res.stdout
    assert not (tmp_path / "metrics.json").exists()


def test_cli_run_dir_holds_config_and_outputs(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "xfvae.train",
        "model=mf",
        *SYNTH,
        "model.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in (".hydra/config.yaml", "metrics.json", "history.csv", "test_predictions.csv"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "csv" / "metrics.csv").exists()  # the default CSV logger


def test_lr_scheduler_from_config_steps_each_epoch(tmp_path, cfg_factory):
    """model.scheduler is built and stepped once per epoch: gamma = 0 freezes the model after
    epoch 0 (every later validation RMSE equals epoch 0's), while without it the model moves on."""
    sched = "model.scheduler={_target_: torch.optim.lr_scheduler.ExponentialLR, _partial_: true, gamma: 0.0}"
    base = ("model=mf", *SYNTH, "model.max_epochs=3", "model.patience=5", "seed=1")
    frozen = cfg_factory(*base, sched, out=tmp_path / "frozen")
    train(frozen)
    hist = pd.read_csv(tmp_path / "frozen" / "history.csv")
    assert len(hist) == 3
    assert hist["val_rmse"].nunique() == 1
    train(cfg_factory(*base, out=tmp_path / "free"))
    assert pd.read_csv(tmp_path / "free" / "history.csv")["val_rmse"].nunique() == 3


def test_ema_weights_are_what_is_validated_and_tested(tmp_path, cfg_factory):
    """With model.callbacks.ema the test metrics come from the averaged weights of the best
    checkpoint: the test RMSE equals the per-epoch test trace (computed during validation, with the
    averaged weights swapped in) at the best epoch, and differs from the run without averaging."""
    ema = "+model.callbacks.ema={_target_: xfvae.training.callbacks.EMAWeights, decay: 0.9}"
    base = ("model=mf", *SYNTH, "model.max_epochs=4", "model.patience=5", "seed=2")
    m = train(cfg_factory(*base, ema, out=tmp_path / "ema"))
    hist = pd.read_csv(tmp_path / "ema" / "history.csv")
    best = hist.loc[hist["val_rmse"].idxmin()]
    assert m["val/rmse"] == pytest.approx(best["val_rmse"], abs=1e-6)
    assert m["test/rmse"] == pytest.approx(best["test_rmse"], abs=1e-5)
    plain = train(cfg_factory(*base, out=tmp_path / "plain"))
    assert abs(plain["test/rmse"] - m["test/rmse"]) > 1e-4
