"""Model selection in the loop: checkpointing and early stopping watch the validation RMSE, and
the test metrics come from the best validation epoch, not the last one.

One overfitting run serves these tests: biased MF without regularisation on a small noisy
synthetic matrix, whose training loss keeps falling while its validation RMSE bottoms out and
rises, so early stopping ends the run ``patience`` epochs after the best validation epoch.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from xfvae.train import train

MAX_EPOCHS, PATIENCE, MIN_DELTA = 40, 3, 1e-4
OVERFIT = [
    "model=mf",
    "data=synthetic",
    "data.options.n_users=60",
    "data.options.n_items=50",
    "data.options.density=0.3",
    "data.options.noise_sd=0.5",
    "model.net.reg=0",
    "model.net.bias_reg=0",
    "model.net.dim=32",
    "model.optimizer.lr=0.01",
    "model.batch_size=64",
    f"model.max_epochs={MAX_EPOCHS}",
    f"model.patience={PATIENCE}",
    f"callbacks.early_stopping.min_delta={MIN_DELTA}",
    "seed=0",
]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    from tests.conftest import make_cfg

    out = tmp_path_factory.mktemp("overfit")
    metrics = train(make_cfg(out, OVERFIT))
    return metrics, pd.read_csv(out / "history.csv"), out


def _callbacks(cfg) -> list[tuple[type, dict]]:
    entries = OmegaConf.to_container(cfg.callbacks, resolve=True)
    return [(get_class(c["_target_"]), c) for c in entries.values() if "_target_" in c]


def test_checkpointing_and_early_stopping_monitor_val_rmse(cfg_factory):
    cfg = cfg_factory("model=mf", "model.patience=7")
    callbacks = _callbacks(cfg)
    stoppers = [c for cls, c in callbacks if issubclass(cls, EarlyStopping)]
    checkpoints = [c for cls, c in callbacks if issubclass(cls, ModelCheckpoint)]
    assert stoppers and checkpoints
    for c in stoppers:
        assert (c["monitor"], c["mode"], c["patience"]) == ("val/rmse", "min", 7)
    # The first ModelCheckpoint is trainer.checkpoint_callback, whose best model the test uses.
    assert (checkpoints[0].get("monitor"), checkpoints[0].get("mode")) == ("val/rmse", "min")
    for c in checkpoints:  # any other one that selects by a metric selects by the same one
        assert c.get("monitor") in (None, "val/rmse")


def test_training_stops_when_validation_stalls_while_training_loss_falls(overfit_run):
    metrics, hist, _ = overfit_run
    best = metrics["best_epoch"]
    assert hist["val_rmse"].iloc[best] == hist["val_rmse"].min()  # the checkpoint's epoch
    # Early stopping counts `patience` epochs from the last improvement by more than min_delta
    # (conf/callbacks/default.yaml); the checkpoint keeps any improvement, so best >= that epoch.
    min_delta, ref, last_gain = MIN_DELTA, float("inf"), 0
    for epoch, v in enumerate(hist["val_rmse"]):
        if v < ref - min_delta:
            ref, last_gain = v, epoch
    assert last_gain <= best <= last_gain + PATIENCE
    # Stopped `patience` epochs after that epoch, well before the epoch cap ...
    assert metrics["epochs"] == len(hist) == last_gain + PATIENCE + 1 < MAX_EPOCHS
    # ... as the validation RMSE did not improve on the best epoch's for `patience` epochs ...
    assert 0 < best < len(hist) - 1
    assert (hist["val_rmse"].iloc[best + 1 :] > hist["val_rmse"].iloc[best]).all()
    # ... although the training loss kept falling (a monitor on it would not have stopped).
    assert hist["train_loss"].diff().iloc[1:].lt(0).all()
    assert hist["train_loss"].iloc[-1] < 0.5 * hist["train_loss"].iloc[best]


def test_test_metrics_come_from_the_best_validation_epoch(overfit_run):
    metrics, hist, out = overfit_run
    best = metrics["best_epoch"]
    assert best < len(hist) - 1  # the best epoch precedes the last
    assert metrics["val/rmse"] == pytest.approx(hist["val_rmse"].iloc[best], abs=1e-6)
    # history.csv test_rmse is the test RMSE of each epoch's weights (traced during validation):
    # the test metrics must be the best epoch's, which differ from the last epoch's here.
    assert metrics["test/rmse"] == pytest.approx(hist["test_rmse"].iloc[best], abs=1e-5)
    assert abs(hist["test_rmse"].iloc[-1] - hist["test_rmse"].iloc[best]) > 1e-3
    assert json.loads((out / "metrics.json").read_text())["test/rmse"] == metrics["test/rmse"]
