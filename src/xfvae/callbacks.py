"""Callbacks the configs can name besides Lightning's own."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging

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
