"""Optional loggers and the user-supplied csv split, through the real configs."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.loggers import WandbLogger

from xfvae.runs.atomic import atomic_write_csv
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


class _WandbRunSpy(pl.Callback):
    """Notes the W&B run of the trainer's logger (its group, tags, job type, folder)."""

    run = None

    def on_fit_start(self, trainer, pl_module):
        (lg,) = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        self.run = lg.experiment


def test_wandb_logger_runs_offline_without_account(tmp_path, cfg_factory, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = cfg_factory("model=mf", *SYNTH, "model.max_epochs=1", "logger=wandb", "seed=3")
    assert cfg.logger.wandb.mode == "offline"
    spy = _WandbRunSpy()
    try:
        train(cfg, callbacks=[spy])
        run = spy.run
        # The run written offline under the run directory, labelled for grouping on a cluster:
        # no experiment or setting here, so the group falls back to model-data and no tag is None.
        (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
        assert run_dir.name.endswith(run.id) and run.settings.mode == "offline"
        assert run.group == "mf-synthetic"
        assert list(run.tags) == ["mf", "synthetic", "seed=3"]
        assert run.job_type in (None, "")
    finally:
        wandb.finish()


def test_wandb_group_tags_and_job_type_follow_experiment_and_setting(cfg_factory):
    """An experiment's runs share its group and job type; tags carry the setting (Figure 3's
    training fraction), and nothing unset becomes a "None" tag."""
    cfg = cfg_factory(
        "model=mf", *SYNTH, "logger=wandb", "experiment=figure3", "data.split.train_frac=0.05"
    )
    wb = cfg.logger.wandb
    assert instantiate(wb.group) == "figure3" and wb.job_type == "figure3"
    assert instantiate(wb.tags) == ["mf", "synthetic", "seed=0", "frac=0.05", "figure3"]
    cfg = cfg_factory("model=mf", *SYNTH, "logger=wandb")
    assert cfg.setting is None and cfg.experiment is None
    assert instantiate(cfg.logger.wandb.group) == "mf-synthetic"
    assert cfg.logger.wandb.job_type is None
    tags = instantiate(cfg.logger.wandb.tags)
    assert tags == ["mf", "synthetic", "seed=0"]
    assert not any(t.lower() in ("none", "null", "") for t in tags)
