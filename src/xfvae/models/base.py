"""The model interface: what the one training loop (:class:`xfvae.training.task.RatingTask`) needs.

A model is a small ``nn.Module`` built by Hydra from ``conf/model/<name>.yaml`` (key ``net``,
with ``_target_``) and called with ``data=`` a :class:`xfvae.data.train_data.TrainData`:

``__init__(self, data: TrainData, **hyperparameters)``
    ``data`` gives the shape (n_users, n_items), the rating scale, the global mean and the
    training triples / matrix; keep only what you need.

``batch_kind: str`` (class attribute)
    Which batches the shared datamodule feeds to :meth:`loss`:

    * ``"triples"``: ``{"users": int64[B], "items": int64[B], "ratings": float32[B]}``,
      shuffled training ratings (``model.batch_size`` per batch).
    * ``"user_rows"`` / ``"item_rows"``: ``{"index": int64[B], "rows": sparse CSR float32
      [B, n_items]}`` (item rows: ``[B, n_users]``), shuffled; zeros are unobserved.
    * ``"blocks"``: Algorithm 1's nested (user batch x item batch) blocks:
      ``{"users": int64[B_U], "items": int64[B_V], "obs_u": int64[n], "obs_i": int64[n],
      "ratings": float32[n]}`` where ``obs_u``/``obs_i`` are positions *inside* the block's
      ``users``/``items`` of its observed training ratings. ``model.batch_size`` is
      ``[B_U, B_V]``; the batches are drawn once per run and the blocks come in nested order
      (every item batch of user batch 1, then of user batch 2, ...), with user batches (and item
      batches inside them) in a fresh random order every epoch when ``model.shuffle_blocks``.
    * ``"none"``: one empty batch per epoch; the model trains itself in :meth:`fit_epoch`
      (e.g. a Gibbs sweep of BPMF).

``loss(self, batch) -> Tensor``
    Scalar training loss of the batch (what the optimiser minimises). May return a dict with a
    ``"loss"`` key plus other scalar tensors to log (``train/<key>``).

``predict(self, users: Tensor, items: Tensor) -> Tensor``
    Predicted ratings (float32, unclipped; the loop clips to the rating scale) for encoded pairs.
    Called under ``torch.no_grad()`` in eval mode, possibly with large chunks.

Optional hooks, called by the loop when present:

``on_fit_start(self)``, ``on_train_epoch_start(self, epoch)``, ``on_train_epoch_end(self, epoch)``
    e.g. Algorithm 1 builds the latent inputs at epoch start and resamples U, V at epoch end.
``fit_epoch(self, epoch) -> float``
    For ``batch_kind == "none"``: do one epoch of non-gradient training, return its loss.
``warmup_epochs: int`` (attribute, default 0)
    Epochs at the start whose validation score early stopping and the tuner's pruner ignore
    (BPMF: its burn-in, whose predictions are single Gibbs samples, not the posterior mean).
``automatic_optimization: bool`` (class attribute, default True)
    False for models with no optimiser (the loop then skips ``configure_optimizers``).
``optimizer_parameters(self) -> list[Tensor]``
    The tensors the optimiser updates; default: the parameters that require gradients. The
    cross-feedback VAE hands over flat tensors holding its parameters (fewer tensors per step,
    the same arithmetic; ``xfvae.models.flat_params``).

Everything a model needs to predict after training must be a parameter or registered buffer, so a
checkpoint restores it completely.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

BATCH_KINDS = ("triples", "user_rows", "item_rows", "blocks", "none")


@runtime_checkable
class RatingModel(Protocol):
    batch_kind: str

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


def optimizer_parameters(net: torch.nn.Module) -> list[torch.Tensor]:
    """What the loop's optimiser updates: the model's ``optimizer_parameters()`` where it has
    one, else its parameters that require gradients."""
    own = getattr(net, "optimizer_parameters", None)
    if callable(own):
        return list(own())
    return [p for p in net.parameters() if p.requires_grad]
