"""The committed baseline configs (conf/model/<name>.yaml) build what they promise and train through
the shared loop, single runs and a Hydra multirun. Their search spaces (conf/hparams_search/) are
checked in tests/test_tune_space.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from baselines.autorec import IAutoRec, UAutoRec
from baselines.bpmf import BPMF
from baselines.cnncf import ConvNCF
from baselines.daecf import MultDAE
from baselines.ncf import NCF
from baselines.vaecf import MultVAE
from tests.test_baselines_contract import Synthetic
from xfvae import CONF_DIR, REPO_ROOT
from xfvae.train import train

MODELS = {
    "ncf": (NCF, "triples"),
    "cnncf": (ConvNCF, "triples"),
    "urec": (UAutoRec, "user_rows"),
    "irec": (IAutoRec, "item_rows"),
    "vaecf": (MultVAE, "user_rows"),
    "daecf": (MultDAE, "user_rows"),
    "bpmf": (BPMF, "none"),
}
SYNTH = [
    "data=synthetic",
    "data.options.n_users=120",
    "data.options.n_items=80",
    "data.options.density=0.2",
    "data.options.noise_sd=0.3",
]


@pytest.fixture(scope="module")
def data():
    return Synthetic(n_users=30, n_items=20).train


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_config_builds_its_baseline(name, cfg_factory, data):
    cfg = cfg_factory(f"model={name}")
    cls, kind = MODELS[name]
    assert cfg.model.name == name
    net = instantiate(cfg.model.net, data=data)
    assert type(net) is cls and net.batch_kind == kind
    assert (net.automatic_optimization if hasattr(net, "automatic_optimization") else True) == (
        kind != "none"
    )
    assert (cfg.model.optimizer is None) == (kind == "none")
    header = (CONF_DIR / "model" / f"{name}.yaml").read_text().splitlines()[0]
    assert header.startswith("#"), (
        "each model config starts with a comment saying where its values come from"
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_trains_one_epoch_through_the_loop(name, cfg_factory, tmp_path):
    cfg = cfg_factory(f"model={name}", *SYNTH, "trainer.max_epochs=1", "seed=0")
    metrics = train(cfg)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["model"] == name and on_disk["epochs"] == 1
    assert math.isfinite(on_disk["test/rmse"]) and on_disk["test/rmse"] == pytest.approx(
        metrics["test/rmse"]
    )
    assert on_disk["n_params"] > 0


def test_two_point_multirun_sweep_trains_both_points(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "xfvae.train",
        "-m",
        "model=ncf",
        "model.net.dim=8,16",
        "trainer.max_epochs=1",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *SYNTH,
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / str(k) / "metrics.json").read_text()) for k in (0, 1)]
    dims = [
        OmegaConf.load(tmp_path / str(k) / ".hydra" / "config.yaml").model.net.dim for k in (0, 1)
    ]
    assert dims == [8, 16]
    # 120 users + 80 items: the embedding tables grow by 200 x 8 rows x columns, plus the first layer
    assert runs[1]["n_params"] - runs[0]["n_params"] >= 200 * 8
    assert all(math.isfinite(r["test/rmse"]) for r in runs)
