"""``python -m xfvae.train model=<m> data=<d> seed=<s>``: train, select on validation RMSE, test.

Thin on purpose (lightning-hydra-template style): everything is built from config, nothing here
knows about a particular model.
"""

from __future__ import annotations

import logging
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xfvae import CONF_DIR
from xfvae.data.fingerprint import data_fingerprint
from xfvae.runs.allocator import keep_freed_memory
from xfvae.runs.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from xfvae.runs.provenance import CONFIG_HASH_SCHEME, config_hash, git_commit, machine, peak_rss_mb
from xfvae.runs.rundir import RunDir
from xfvae.runs.signals import RunInterrupted, SignalStop
from xfvae.runs.sweep import record_outcome
from xfvae.scoring.evaluation import test_metrics
from xfvae.training.callbacks import with_warmup
from xfvae.training.config_checks import loss_explosion_warning, validate_config
from xfvae.training.task import RatingTask

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Fit on train, select on val/rmse, evaluate the best checkpoint on test, write the run files.

    ``cfg.paths.output_dir`` holds one configuration's results (:mod:`xfvae.runs.rundir`): a complete
    run of the same configuration (and the same data files' contents) is skipped (``resume=true``,
    the default) and returns its metrics, a killed one continues from ``checkpoints/last.ckpt``,
    another configuration's files are an error unless ``overwrite=true``. ``callbacks`` are added
    to the configured ones (e.g. the tuner's pruning callback). With ``evaluation.test=false`` the
    test split is never evaluated (tuning); with ``evaluation.test_curve=false`` no per-epoch test
    RMSE is traced.
    """
    return _train(cfg, callbacks)[1]


def _train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> tuple[str, dict]:
    """(how this invocation started: fresh / resumed / skipped, the run's metrics)."""
    validate_config(cfg)  # before anything is created or built
    out_dir = Path(cfg.paths.output_dir)
    fingerprint = data_fingerprint(cfg.data)
    run = RunDir(out_dir, config_hash(cfg, fingerprint), fingerprint, config_hash(cfg))
    with run.lock():
        plan = run.plan(resume=bool(cfg.get("resume", True)), overwrite=bool(cfg.get("overwrite")))
        if plan.action == "skip":  # the finished run's files stay as they are: nothing written
            log.info(
                "%s: complete for this configuration; skipped (overwrite=true reruns)", out_dir
            )
            return "skipped", plan.metrics
        run.claim(plan)  # from here on this process owns the directory's files
        started = "resumed" if plan.ckpt else "fresh"
        _save_config(out_dir, cfg)
        with _run_log(out_dir / "train.log"):
            run.mark("running", started=started)
            try:
                metrics = _fit_and_test(cfg, out_dir, list(callbacks or []), plan.ckpt, fingerprint)
            except RunInterrupted as e:
                run.mark("interrupted", signal=signal.Signals(e.signum).name)
                raise
            except (SystemExit, KeyboardInterrupt) as e:  # e.g. submitit's requeue on SIGUSR2
                run.mark("interrupted", signal=type(e).__name__)
                raise
            except BaseException as e:
                log.error("run failed: %s", _error_line(e), exc_info=True)
                run.mark("failed", error=_error_line(e))
                raise
            run.mark("complete")  # the last file a finished run writes
        return started, metrics


def _save_config(out_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/``: the configuration (and, under Hydra, its overrides and Hydra's own config),
    written by the run that owns the directory; Hydra's own writer is off (``hydra.output_subdir:
    null``) because it would rewrite them for an invocation that is then refused or skipped."""
    folder = out_dir / ".hydra"
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
        atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))


@contextmanager
def _run_log(path: Path):
    """The run's log file (``train.log``), opened only by the process that owns the directory."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _fit_and_test(
    cfg: DictConfig,
    out_dir: Path,
    extra_callbacks: list[pl.Callback],
    ckpt: Path | None,
    fingerprint: dict[str, Any],
) -> dict[str, Any]:
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
    # e.g. weight averaging that belongs to its recipe), the caller's, and the signal stop.
    stop = SignalStop()
    callbacks = with_warmup(  # a model's warm-up epochs (BPMF's burn-in) do not count for stopping
        _instantiate_group(cfg.get("callbacks"))
        + _instantiate_group(cfg.model.get("callbacks"))
        + extra_callbacks
        + [stop]
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_group(cfg.get("logger")) or False
    )
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    with stop.installed(cfg.get("stop_signals") or []):
        try:
            t0 = time.perf_counter()
            if ckpt is not None and _training_finished(ckpt, trainer):
                task.history = list(_load(ckpt)["xfvae"]["history"])
            else:
                if ckpt is not None:
                    log.info("resuming from %s", ckpt)
                trainer.fit(task, datamodule=dm, ckpt_path=ckpt)
            train_seconds = time.perf_counter() - t0
            # read before the test, which restores the callbacks' state of the best checkpoint
            fit_end = {
                "stopped_by": _stopped_by(trainer, len(task.history)),
                "final_lr": trainer.optimizers[0].param_groups[0]["lr"]
                if trainer.optimizers and trainer.optimizers[0].param_groups
                else None,
            }
            if cfg.evaluation.get("test", True):
                trainer.test(task, datamodule=dm, ckpt_path=_best_ckpt(trainer), verbose=False)
        except SIGTERMException as e:  # Lightning's own SIGTERM exit (code 0): make it ours
            raise RunInterrupted(signal.SIGTERM) from e

    metrics = _metrics(cfg, dm, task, trainer, train_seconds, fingerprint)
    metrics.update(fit_end)
    metrics["resumed_from"] = str(ckpt.relative_to(out_dir)) if ckpt is not None else None
    metrics["loss_warning"] = loss_explosion_warning(task.history)
    if metrics["loss_warning"]:
        log.warning("%s", metrics["loss_warning"])
    _write_outputs(out_dir, dm, task, metrics)
    for lg in trainer.loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        lg.finalize("success")
    log.info("metrics: %s", {k: metrics[k] for k in metrics if k.startswith(("val/", "test/"))})
    return metrics


def _load(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)  # our own checkpoint


def _training_finished(ckpt: Path, trainer: pl.Trainer) -> bool:
    """Did the checkpointed run already stop (early stopping fired, or the epoch cap reached)?"""
    state = _load(ckpt)
    if state["epoch"] + 1 >= (trainer.max_epochs or float("inf")):
        return True
    return any(
        key.startswith("EarlyStopping") and value.get("stopped_epoch", 0) > 0
        for key, value in state.get("callbacks", {}).items()
    )


def _best_ckpt(trainer: pl.Trainer) -> str | None:
    """The best validation checkpoint (test metrics come from it), None without checkpointing."""
    cb = trainer.checkpoint_callback
    if cb is None:
        return None
    if cb.best_model_path:
        return cb.best_model_path
    path = Path(cb.dirpath) / f"{cb.filename}.ckpt"  # training finished in an earlier invocation
    return str(path) if path.is_file() else None


def _best(trainer: pl.Trainer, task: RatingTask) -> tuple[float, int]:
    hist = pd.DataFrame(task.history)
    if hist.empty or hist["val_rmse"].isna().all():
        return float("nan"), -1
    row = hist.loc[hist["val_rmse"].idxmin()]
    return float(row["val_rmse"]), int(row["epoch"])


def _metrics(
    cfg: DictConfig,
    dm,
    task: RatingTask,
    trainer: pl.Trainer,
    train_seconds: float,
    fingerprint: dict[str, Any],
) -> dict:
    val_rmse, best_epoch = _best(trainer, task)
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
            "config_hash": config_hash(cfg, fingerprint),
            "config_hash_scheme": CONFIG_HASH_SCHEME,
            "data_fingerprint": fingerprint,
            "machine": machine(),
        }
    )
    return metrics


def _stopped_by(trainer: pl.Trainer, epochs: int) -> str:
    """What ended training: early stopping on val/rmse, or the epoch cap (a default should not)."""
    es = trainer.early_stopping_callback
    if es is not None and es.stopped_epoch > 0:
        return "early_stopping"
    if trainer.max_epochs is not None and epochs >= trainer.max_epochs:
        return "max_epochs"
    return "other"


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
    """One job. A failure is logged to the run's train.log; inside a sweep (multirun) it is
    recorded and the sweep goes on (its summary lists it and exits non-zero), otherwise the
    process exits non-zero. A stop signal always ends the process with 128 + the signal number.
    The job's outcome goes to ``.outcomes/`` (:mod:`xfvae.runs.sweep`)."""
    keep_freed_memory()  # no page-fault churn from large tensors freed every step
    out_dir = Path(cfg.paths.output_dir)
    try:
        started, metrics = _train(cfg)
    except RunInterrupted as e:
        msg = (
            f"{e}: stopped; {out_dir / 'checkpoints/last.ckpt'} holds the last complete epoch "
            "(if any): re-run the same command to resume"
        )
        log.error("%s", msg)
        record_outcome(out_dir, "interrupted", str(e))
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from e
    except Exception as e:
        log.error("run failed: %s", _error_line(e))
        record_outcome(out_dir, "failed", _error_line(e))
        if _in_sweep():
            return float("nan")
        sys.exit(f"error: {e}")
    record_outcome(out_dir, {"fresh": "ran"}.get(started, started))
    return metrics[cfg.get("optimized_metric", "val/rmse")]


def _error_line(e: BaseException) -> str:
    """One line naming the error and its cause (Hydra wraps constructor errors in another)."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {' '.join(str(cause).split())})"
    return text[:600]


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
