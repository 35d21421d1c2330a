"""Optional loggers and the user-supplied csv split, through the real configs."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from xfvae.io import atomic_write_csv
from xfvae.train import train

SYNTH = [
    "data=synthetic",
    "data.options.n_users=80",
    "data.options.n_items=60",
    "data.options.density=0.3",
]


def test_csv_split_reproduces_the_builtin_split(tmp_path, cfg_factory):
    """Exporting a split and training on it with data=csv gives the very same run."""
    direct_cfg = cfg_factory("model=mf", *SYNTH, "model.max_epochs=3", out=tmp_path / "direct")
    dm = instantiate(direct_cfg.data)
    dm.setup()
    paths = {}
    for part, frame in dm.split_frames().items():
        paths[part] = atomic_write_csv(tmp_path / f"{part}.csv", frame)
    direct = train(direct_cfg)
    via_csv = train(
        cfg_factory(
            "model=mf",
            "data=csv",
            "model.max_epochs=3",
            f"data.train={paths['train']}",
            f"data.val={paths['val']}",
            f"data.test={paths['test']}",
            out=tmp_path / "csv",
        )
    )
    for key in ("val/rmse", "test/rmse", "test/ndcg@20", "data/n_ratings"):
        assert via_csv[key] == pytest.approx(direct[key], abs=1e-9)


def test_wandb_logger_runs_offline_without_account(tmp_path, cfg_factory, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = cfg_factory("model=mf", *SYNTH, "model.max_epochs=1", "logger=wandb")
    assert cfg.logger.wandb.mode == "offline"
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run directory written"
