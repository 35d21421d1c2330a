"""``python -m xfvae.train model=<m> data=<d> seed=<s>``: train, select on validation RMSE, test.

Thin on purpose (lightning-hydra-template style): everything is built from config, nothing here
knows about a particular model.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from xfvae import CONF_DIR
from xfvae.io import atomic_write_csv, atomic_write_json
from xfvae.evaluation import test_metrics
from xfvae.module import NonFiniteLossError, RatingTask
from xfvae.provenance import config_hash, git_commit, machine, peak_rss_mb

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Fit on train, select on val/rmse, evaluate the best checkpoint on test, write the run files.

    ``callbacks`` are added to the configured ones (e.g. the tuner's pruning callback). With
    ``evaluation.test=false`` the test split is never evaluated (tuning); with
    ``evaluation.test_curve=false`` no per-epoch test RMSE is traced.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    dm = instantiate(cfg.data)
    dm.setup()
    dm.test_curve = bool(cfg.evaluation.get("test_curve", True)) and bool(
        cfg.evaluation.get("test", True)
    )
    net = instantiate(cfg.model.net, data=dm.train_data)
    dm.configure_batches(
        net.batch_kind, cfg.model.batch_size, cfg.model.get("shuffle_blocks", True)
    )
    optimizer = instantiate(cfg.model.optimizer) if cfg.model.get("optimizer") else None
    scheduler = instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None
    task = RatingTask(
        net,
        optimizer,
        dm.train_data,
        cfg.evaluation.cold_start,
        cfg.evaluation.eval_batch_size,
        scheduler=scheduler,
    )
    # The callbacks group (checkpointing, early stopping, ...) plus the model's own (model.callbacks,
    # e.g. weight averaging that belongs to its tuned recipe).
    callbacks = (
        _instantiate_group(cfg.get("callbacks"))
        + _instantiate_group(cfg.model.get("callbacks"))
        + list(callbacks or [])
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_group(cfg.get("logger")) or False
    )
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    train_seconds = time.perf_counter() - t0
    has_ckpt = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    if cfg.evaluation.get("test", True):
        trainer.test(task, datamodule=dm, ckpt_path="best" if has_ckpt else None, verbose=False)

    metrics = _metrics(cfg, dm, task, trainer, train_seconds)
    _write_outputs(out_dir, dm, task, metrics)
    for lg in trainer.loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        lg.finalize("success")
    log.info("metrics: %s", {k: metrics[k] for k in metrics if k.startswith(("val/", "test/"))})
    return metrics


def _best(trainer: pl.Trainer, task: RatingTask) -> tuple[float, int]:
    hist = pd.DataFrame(task.history)
    if hist.empty or hist["val_rmse"].isna().all():
        return float("nan"), -1
    row = hist.loc[hist["val_rmse"].idxmin()]
    return float(row["val_rmse"]), int(row["epoch"])


def _metrics(
    cfg: DictConfig, dm, task: RatingTask, trainer: pl.Trainer, train_seconds: float
) -> dict:
    val_rmse, best_epoch = _best(trainer, task)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    seconds = [h["seconds"] for h in task.history]
    metrics: dict[str, Any] = {"val/rmse": val_rmse}
    if task.test_outputs is not None:
        metrics.update(test_metrics(cfg.evaluation, dm, task))
    metrics.update(
        {
            "best_epoch": best_epoch,
            "epochs": len(task.history),
            "train_seconds": round(train_seconds, 3),
            "seconds_per_epoch": round(statistics.median(seconds), 4) if seconds else float("nan"),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "n_params": int(sum(p.numel() for p in task.net.parameters())),
            "data/n_users": dm.train_data.n_users,
            "data/n_items": dm.train_data.n_items,
            "data/n_ratings": sum(len(f) for f in dm.frames.values()),
            "seed": int(cfg.seed),
            "model": cfg.model.name,
            "data": cfg.data.name,
            "experiment": cfg.get("experiment"),
            "setting": cfg.get("setting"),
            "git_commit": git_commit(),
            "config_hash": config_hash(resolved),
            "machine": machine(),
        }
    )
    return metrics


def _write_outputs(out_dir: Path, dm, task: RatingTask, metrics: dict) -> None:
    out = task.test_outputs
    atomic_write_csv(out_dir / "history.csv", pd.DataFrame(task.history))
    if out is None:  # evaluation.test=false: no test predictions
        atomic_write_json(out_dir / "metrics.json", metrics)
        return
    preds = pd.DataFrame(
        {
            "user": dm.user_ids[out["users"]],
            "item": dm.item_ids[out["items"]],
            "rating": out["ratings"].astype(np.float64),
            "prediction": out["preds"].astype(np.float64),
        }
    )
    atomic_write_csv(out_dir / "test_predictions.csv", preds, float_format="%.9g")
    atomic_write_json(out_dir / "metrics.json", metrics)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        metrics = train(cfg)
    except NonFiniteLossError as e:
        log.error("%s", e)
        sys.exit(f"error: {e}")
    return metrics[cfg.get("optimized_metric", "val/rmse")]


if __name__ == "__main__":
    main()
