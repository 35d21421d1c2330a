"""Input validation (xfvae.training.config_checks): each bad value is an error naming its key and the allowed
range, raised by train() before anything is built; a diverged training loss is a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from xfvae.train import train
from xfvae.training.config_checks import (
    LOSS_EXPLOSION_FACTOR,
    ConfigError,
    loss_explosion_warning,
    validate_config,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = [
    "data=synthetic",
    "data.options.n_users=40",
    "data.options.n_items=30",
    "data.options.density=0.3",
    "model.max_epochs=2",
]

# (overrides, the problem's text): key=value as given, then the allowed range.
BAD = {
    "batch 0": (["model.batch_size=0"], "model.batch_size=0 is invalid: model mf needs an integer >= 1"),
    "batch -5": (["model=urec", "model.batch_size=-5"], "model.batch_size=-5 is invalid: model urec needs an integer >= 1"),
    "batch 1.5": (["model.batch_size=1.5"], "model.batch_size=1.5 is invalid: model mf needs an integer >= 1"),
    "blocks 0": (["model=xfvae", "model.batch_size=[0,100]"], "model.batch_size=[0, 100] is invalid: model xfvae trains on (user batch x item batch) blocks and needs [B_U, B_V], two integers >= 1"),
    "blocks int": (["model=xfvae", "model.batch_size=100"], "model.batch_size=100 is invalid: model xfvae trains on (user batch x item batch) blocks and needs [B_U, B_V]"),
    "blocks 3": (["model=xfvae", "model.batch_size=[10,10,10]"], "model.batch_size=[10, 10, 10] is invalid: model xfvae trains on"),
    "triples list": (["model.batch_size=[10,10]"], "model.batch_size=[10, 10] is invalid: model mf needs an integer >= 1"),
    "seed 1.5": (["seed=1.5"], "seed=1.5 is not an integer; a seed must be an integer in [0, 4294967295]"),
    "seed abc": (["seed=abc"], "seed='abc' is not an integer; a seed must be an integer in [0, 4294967295]"),
    "seed -1": (["seed=-1"], "seed=-1 is out of range; a seed must be an integer in [0, 4294967295]"),
    "seed 2^32": (["seed=4294967296"], "seed=4294967296 is out of range"),
    "seed true": (["seed=true"], "seed=True is not an integer"),
    "seed null": (["seed=null"], "seed=None is not an integer; a seed must be an integer in [0, 4294967295]"),
    "data seed": (["data.seed=2.5"], "data.seed=2.5 is not an integer; a seed must be an integer in [0, 4294967295]"),
    "synthetic seed": (["data=synthetic", "data.options.seed=1.5"], "data.options.seed=1.5 is not an integer; a seed must be an integer >= 0"),
    "trainer epochs 0": (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range; the number of training epochs must be an integer >= 1"),
    "model epochs 0": (["model.max_epochs=0"], "model.max_epochs=0 is out of range; the number of training epochs must be an integer >= 1"),
    "epochs 2.5": (["model.max_epochs=2.5"], "model.max_epochs=2.5 is not an integer"),
    "patience -1": (["model.patience=-1"], "model.patience=-1 is out of range; early-stopping patience must be an integer >= 0"),
    "lr 0": (["model.optimizer.lr=0"], "model.optimizer.lr=0 is invalid: the learning rate must be a finite number > 0"),
    "lr -1": (["model.optimizer.lr=-1e-3"], "model.optimizer.lr=-0.001 is invalid: the learning rate must be a finite number > 0"),
    "lr inf": (["model.optimizer.lr=inf"], "model.optimizer.lr=inf is invalid"),
    "lr nan": (["model.optimizer.lr=nan"], "model.optimizer.lr=nan is invalid"),
    "lr text": (["model.optimizer.lr=fast"], "model.optimizer.lr='fast' is invalid"),
    "weight decay": (["model.optimizer.weight_decay=-0.1"], "model.optimizer.weight_decay=-0.1 is invalid: weight decay must be a finite number >= 0"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_validate_config_names_the_key_and_the_allowed_range(cfg_factory, case):
    overrides, problem = BAD[case]
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_factory(*overrides))
    assert len(info.value.problems) == 1, info.value.problems  # one value, one problem
    assert info.value.problems[0].startswith(problem), info.value.problems[0]
    assert isinstance(info.value, ValueError) and problem in str(info.value)


def test_every_problem_is_reported_at_once(cfg_factory):
    cfg = cfg_factory("seed=abc", "model.batch_size=0", "model.optimizer.lr=0", "model.patience=-2")
    with pytest.raises(ConfigError, match=r"4 problem\(s\)") as info:
        validate_config(cfg)
    keys = [p.split("=")[0] for p in info.value.problems]
    assert keys == ["seed", "model.batch_size", "model.patience", "model.optimizer.lr"]


@pytest.mark.parametrize(
    "group", [f"{p.parent.name}={p.stem}" for p in sorted((CONF / "model").glob("*.yaml"))]
    + [f"experiment={p.stem}" for p in sorted((CONF / "experiment").glob("*.yaml"))]
    + [f"data={p.stem}" for p in sorted((CONF / "data").glob("*.yaml"))],
)  # fmt: skip
def test_every_shipped_config_is_valid(cfg_factory, group):
    validate_config(cfg_factory(group))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=xfvae", "model.batch_size=[1,1]"],
        ["model.batch_size=1", "seed=4294967295", "model.patience=0", "model.max_epochs=1"],
        ["model.optimizer.lr=1e30", "model.optimizer.weight_decay=0"],  # big but valid
        ["model=bpmf"],  # no optimiser: no learning rate to check
    ],
)
def test_boundary_values_are_accepted(cfg_factory, overrides):
    validate_config(cfg_factory(*overrides))


# -- train() refuses before building anything ------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["model.batch_size=0"], "model.batch_size=0 is invalid"),  # was a ZeroDivisionError
        (["model=urec", "model.batch_size=-5"], "model.batch_size=-5 is invalid"),  # DataLoader
        (["model=xfvae", "model.batch_size=[100,0]"], "model.batch_size=[100, 0] is invalid"),
        (["seed=1.5"], "seed=1.5 is not an integer"),  # was silently seed 1
        (["seed=abc"], "seed='abc' is not an integer"),  # was a bare int() error
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range"),  # checkpoint error
        (["model.optimizer.lr=-1"], "model.optimizer.lr=-1 is invalid"),
    ],
)
def test_train_refuses_an_invalid_config_with_the_key(cfg_factory, tmp_path, overrides, problem):
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        train(cfg_factory(*TINY, *overrides))
    assert problem in str(info.value)
    assert not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "checkpoints").exists()  # refused before training


# -- a diverged training loss is a warning --------------------------------------------------------
def _history(*losses: float) -> list[dict]:
    return [{"epoch": k, "train_loss": v} for k, v in enumerate(losses)]


def test_loss_explosion_warning_on_the_final_over_first_ratio():
    msg = loss_explosion_warning(_history(0.5, 0.4, 3e2, 1e28))
    assert msg is not None and "training loss exploded: 1e+28 at epoch 3" in msg
    assert "2e+28 times the first epoch's 0.5 (epoch 0)" in msg
    assert "model.optimizer.lr" in msg
    assert loss_explosion_warning(_history(1.0, 500.0, LOSS_EXPLOSION_FACTOR)) is not None
    assert loss_explosion_warning(_history(1.0, 500.0, 0.99 * LOSS_EXPLOSION_FACTOR)) is None


@pytest.mark.parametrize(
    "losses",
    [
        (),
        (1e28,),  # one epoch: nothing to compare
        (2.0, 1.0, 0.5),  # converging
        (1.0, 1e6, 50.0),  # a spike that came back: the final loss decides
        (0.0, 10.0),  # no ratio from a zero first loss
        (-5.0, 100.0),  # nor from a negative one
    ],
)
def test_no_loss_warning_without_a_final_explosion(losses):
    assert loss_explosion_warning(_history(*losses)) is None


def test_loss_warning_skips_epochs_without_a_finite_loss():
    hist = _history(float("nan"), 0.5, 1e3, float("nan"))
    assert "1000 at epoch 2" in loss_explosion_warning(hist)
    assert loss_explosion_warning(_history(float("nan"), 1e3)) is None


def test_train_records_and_logs_a_loss_explosion(cfg_factory, tmp_path, caplog):
    """An lr multiplied by 10 every epoch: the loss grows ~1e5-fold yet stays finite (exit 0)."""
    grow = "{_target_: torch.optim.lr_scheduler.ExponentialLR, _partial_: true, gamma: 10}"
    cfg = cfg_factory(
        *TINY,
        "model.max_epochs=4",
        "model.batch_size=64",
        "model.optimizer.lr=0.01",
        "model.patience=10",
        f"model.scheduler={grow}",
        "evaluation.test_curve=false",
    )
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["train_loss"].iloc[-1] > LOSS_EXPLOSION_FACTOR * hist["train_loss"].iloc[0]
    assert "training loss exploded" in metrics["loss_warning"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["loss_warning"] == metrics["loss_warning"]
    assert any("training loss exploded" in r.getMessage() for r in caplog.records)


def test_a_converging_run_records_no_loss_warning(cfg_factory, tmp_path):
    metrics = train(cfg_factory(*TINY, "evaluation.test_curve=false"))
    assert metrics["loss_warning"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["loss_warning"] is None
