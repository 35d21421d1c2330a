"""Callbacks the configs can name besides Lightning's own."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, EMAWeightAveraging

warnings.filterwarnings("ignore", message=r".*WeightAveraging callback, but loading a checkpoint.*")


class EMAWeights(EMAWeightAveraging):
    """Exponential moving average of the parameters (Lightning's ``EMAWeightAveraging``), used for
    validation, checkpoints and the test.

    Two changes to the Lightning callback: buffers are not averaged but copied (``use_buffers``
    defaults to False, so state such as the cross-feedback VAE's U, V samples stays the model's
    own), and the averaged model is dropped when fitting ends, so that ``trainer.test(ckpt_path=
    "best")`` evaluates the averaged weights stored in the best checkpoint rather than restoring the
    raw ones it keeps for resuming.
    """

    def __init__(self, decay: float = 0.999, use_buffers: bool = False, **kwargs) -> None:
        super().__init__(decay=decay, use_buffers=use_buffers, **kwargs)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if stage == "fit":
            self._average_model = None


def warmup_epochs(model: object) -> int:
    """The model's ``warmup_epochs`` (xfvae.models.base): epochs whose validation score says
    nothing about the model yet (BPMF's burn-in), 0 for most models. ``model`` is the net or the
    LightningModule holding it (``.net``)."""
    return int(getattr(getattr(model, "net", model), "warmup_epochs", 0) or 0)


class WarmupEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping``, except that the model's warm-up epochs do not count: neither
    their scores nor their lack of improvement, so patience starts when the warm-up ends. The best
    checkpoint still considers every epoch. Its checkpoint state is Lightning's (same key)."""

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, EarlyStopping.__qualname__, 1)

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        if trainer.current_epoch < warmup_epochs(trainer.lightning_module):
            return
        super()._run_early_stopping_check(trainer)


def with_warmup(callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """The configured early stopping made to skip the model's warm-up epochs (none for most
    models). Done here rather than in ``conf/callbacks`` so that no configuration, hence no run's
    identity, changes: the model's own settings (BPMF's ``burn_in``) decide the warm-up."""
    for cb in callbacks:
        if type(cb) is EarlyStopping:
            cb.__class__ = WarmupEarlyStopping  # same state, one method more
    return callbacks
