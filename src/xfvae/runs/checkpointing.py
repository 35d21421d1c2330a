"""Checkpoints written atomically: Lightning's own writer stages the file in the system temp folder
and moves it across file systems, which can leave a truncated ``best.ckpt`` when a disk fills up.
This one serialises to memory, writes a temp file in the checkpoint's own folder, fsyncs and renames.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from xfvae.runs.atomic import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``trainer.plugins`` entry (conf/trainer/default.yaml); loading is Lightning's own."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} does not take storage_options (got {storage_options!r})"
            )
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
