"""The one training loop: a LightningModule that trains and evaluates any model implementing
:mod:`xfvae.models.base`. Nothing model-specific lives here."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from xfvae.data.train_data import TrainData
from xfvae.models.base import optimizer_parameters
from xfvae.scoring.cold_start import ColdStart

# Batches are built in-process from tensors already in memory: worker processes would only add cost.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*IterableDataset.*__len__.*")


class NonFiniteLossError(RuntimeError):
    pass


class RatingTask(pl.LightningModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        data: TrainData,
        cold_start: str = "bias",
        eval_batch_size: int = 65536,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.rating_min, self.rating_max = data.rating_min, data.rating_max
        self.cold = ColdStart(data, cold_start)
        self.eval_batch_size = eval_batch_size
        self.automatic_optimization = getattr(net, "automatic_optimization", True)
        self.epoch_losses: list[torch.Tensor] = []
        self.history: list[dict[str, float]] = []
        self._eval: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        self._t0 = 0.0
        self.test_outputs: dict[str, np.ndarray] | None = None
        self._resumed = False
        self._rng_to_restore: dict[str, Any] | None = None
        self._schedulers_pending = False

    # -- hooks the model may implement -------------------------------------------------------
    def _call_net(self, hook: str, *args: Any) -> Any:
        fn = getattr(self.net, hook, None)
        return fn(*args) if callable(fn) else None

    def on_fit_start(self) -> None:
        if not self._resumed:  # a resumed model's state (e.g. Algorithm 1's U, V) is restored
            self._call_net("on_fit_start")

    def on_train_epoch_start(self) -> None:
        if self._rng_to_restore is not None:  # resumed: continue exactly where the run stopped
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
            # An uninterrupted run creates the epoch's DataLoader iterator after this hook, which
            # draws its base seed from the global RNG; a resumed one created it before (Lightning's
            # setup_data). Creating one now repeats those draws, so the random streams match.
            iter(self.trainer.train_dataloader)
            if self._schedulers_pending:
                self._step_epoch_schedulers()
        self.epoch_losses = []
        self._call_net("on_train_epoch_start", self.current_epoch)
        self._t0 = time.perf_counter()

    # -- resuming: what a checkpoint needs beyond weights, optimiser and callbacks --------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Saved during the epoch's end hooks: after Lightning stepped the per-epoch LR schedulers
        # but before it steps ReduceLROnPlateau, a step it does not replay when it resumes.
        progress = self.trainer.fit_loop.epoch_progress.current
        checkpoint["xfvae"] = {
            "history": list(self.history),
            "rng": _get_rng_state(),
            "schedulers_pending": progress.processed > progress.completed,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("xfvae")
        if state is None or not self.trainer.training:  # e.g. test(ckpt_path="best"): weights only
            return
        self.history = list(state["history"])
        self._rng_to_restore = state["rng"]
        self._schedulers_pending = bool(state.get("schedulers_pending"))
        self._resumed = True

    def _step_epoch_schedulers(self) -> None:
        """The ReduceLROnPlateau step that the checkpointed epoch had not taken yet."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "epoch" and isinstance(
                config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
            ):
                config.scheduler.step(self.history[-1]["val_rmse"])

    def on_validation_epoch_start(self) -> None:
        self._eval = {}
        if self.trainer.training:  # end of the training part of the epoch
            self._train_seconds = time.perf_counter() - self._t0

    def on_train_epoch_end(self) -> None:
        self._call_net("on_train_epoch_end", self.current_epoch)
        m = self.trainer.callback_metrics
        losses = (
            torch.stack(self.epoch_losses) if self.epoch_losses else torch.tensor([float("nan")])
        )
        self.history.append(
            {
                "epoch": self.current_epoch,
                "train_loss": float(losses.double().mean()),
                "val_rmse": float(m.get("val/rmse", float("nan"))),
                "test_rmse": float(m.get("test_curve/rmse", float("nan"))),
                "seconds": getattr(self, "_train_seconds", time.perf_counter() - self._t0),
            }
        )

    # -- training ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.net.batch_kind == "none":
            loss = torch.as_tensor(float(self.net.fit_epoch(self.current_epoch)))
            self._record(loss, {})
            # The epoch's update counts as a step: ModelCheckpoint only saves when global_step moved.
            progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            progress.increment_ready()
            progress.increment_completed()
            return None
        out = self.net.loss(batch)
        loss, extra = (out["loss"], out) if isinstance(out, dict) else (out, {})
        self._record(loss, extra)
        if not self.automatic_optimization:
            return None
        return loss

    def _record(self, loss: torch.Tensor, extra: dict[str, torch.Tensor]) -> None:
        """Keep the step's loss (and extra values) on the device. Every ``check_every`` steps and
        at the epoch's last batch, check that they are finite (one read of the device); at the
        last batch, log their epoch means. A per-step check or ``self.log`` would synchronise
        with the device and cost more than a small model's step (benchmarks/bench_xfvae.py)."""
        check_every = 256
        if not self.epoch_losses:  # the epoch's first step (on_train_epoch_start emptied it)
            self._extra_values: dict[str, list[torch.Tensor]] = {}
            self._n_checked = 0
        self.epoch_losses.append(loss.detach())
        for k, v in extra.items():
            if k != "loss":
                self._extra_values.setdefault(k, []).append(v.detach())
        last = self.trainer.is_last_batch
        if not last and len(self.epoch_losses) - self._n_checked < check_every:
            return
        window = torch.stack(self.epoch_losses[self._n_checked :])
        bad = ~torch.isfinite(window)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise NonFiniteLossError(
                f"training loss became {float(window[first])} at epoch {self.current_epoch}, "
                f"step {self.global_step - (window.numel() - 1 - first)}: lower the learning rate "
                "(model.optimizer.lr), raise regularisation, or set trainer.gradient_clip_val"
            )
        self._n_checked = len(self.epoch_losses)
        if last:
            mean = torch.stack(self.epoch_losses).mean()
            self.log("train/loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
            for k, parts in self._extra_values.items():
                mean = torch.stack(parts).mean()
                self.log(f"train/{k}", mean, on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self) -> Any:
        if not self.automatic_optimization or self.optimizer_factory is None:
            return None
        opt = self.optimizer_factory(params=optimizer_parameters(self.net))
        if self.scheduler_factory is None:
            return opt
        # Stepped once per epoch; ReduceLROnPlateau watches the selection metric (val/rmse).
        sched = self.scheduler_factory(optimizer=opt)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": "val/rmse"},
        }

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Clipped predictions with the cold-start policy applied."""
        preds = self.net.predict(users, items).float()
        preds = self.cold(users, items, preds)
        return preds.clamp(self.rating_min, self.rating_max)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        preds = self.predict_pairs(batch["users"], batch["items"])
        err = ((preds - batch["ratings"]) ** 2).double().sum()
        self._eval.setdefault(dataloader_idx, []).append((err, batch["ratings"].numel()))

    def on_validation_epoch_end(self) -> None:
        names = {0: "val/rmse", 1: "test_curve/rmse"}
        for idx, parts in self._eval.items():
            sse = torch.stack([p[0] for p in parts]).sum()
            n = sum(p[1] for p in parts)
            rmse = torch.sqrt(sse / max(n, 1)).float()
            self.log(names[idx], rmse, prog_bar=idx == 0, add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        self._test_parts: list[tuple[torch.Tensor, ...]] = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        preds = self.predict_pairs(batch["users"], batch["items"])
        cold = self.cold.is_cold(batch["users"], batch["items"])
        self._test_parts.append(
            tuple(t.cpu() for t in (batch["users"], batch["items"], batch["ratings"], preds, cold))
        )

    def on_test_epoch_end(self) -> None:
        cols = ("users", "items", "ratings", "preds", "cold")
        self.test_outputs = {
            c: torch.cat([p[k] for p in self._test_parts]).numpy() for k, c in enumerate(cols)
        }

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """Clipped predictions of the given users for every item ([B, n_items]), in eval mode (no
        dropout), for the protocols that rank items beyond the test pairs."""
        n_items = self.cold.item_seen.numel()
        uu = users.to(self.device).repeat_interleave(n_items)
        ii = torch.arange(n_items, device=self.device).repeat(users.numel())
        out = torch.empty(uu.numel(), device=self.device)
        was_training = self.training
        self.eval()
        try:
            for s in range(0, uu.numel(), self.eval_batch_size):
                sl = slice(s, s + self.eval_batch_size)
                out[sl] = self.predict_pairs(uu[sl], ii[sl])
        finally:
            self.train(was_training)
        return out.view(users.numel(), n_items).cpu()


def _get_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {  # tensors and plain types only: loadable with torch.load(weights_only=True)
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
