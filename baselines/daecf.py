"""DAE-CF (Mult-DAE): Liang, Krishnan, Hoffman and Jebara (2018), "Variational Autoencoders for
Collaborative Filtering", WWW'18, section 2.4 and the authors' code (github.com/dawenl/vae_cf).

A denoising autoencoder over user rows: the L2-normalised row, corrupted by dropout (keep 0.5),
goes through tanh layers [n_items -> 200 -> n_items] (the paper's best Mult-DAE), trained with
weight decay 0.01 per batch, Xavier-uniform weights.

Deviations from the paper:

* Squared error on the observed entries of the row instead of the multinomial log-likelihood of
  the whole (binarised) row, as Jin et al. 4.3 state; the output layer is linear and predicts
  ratings (its bias starts at the training mean rating) instead of softmax logits.
* Depth follows Jin et al. Table 2: ``hidden`` extra layers (mirrored in the decoder) around the
  ``dim``-unit code layer; the original has none (``hidden: []``).
* Batch objective: (SSE over the batch's observed entries + reg * sum of squared weight matrices)
  / number of those entries. The original divides by the number of users instead; both give the
  penalty the same weight relative to the summed reconstruction error, so ``reg=0.01`` is the
  original ``lam=0.01 / batch_size`` setting.
* Rating (u, i) is read from the reconstruction of u's clean (no dropout) training row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from baselines.autorec import RowModel, layer_sizes, mlp
from xfvae.data.train_data import TrainData


def init_like_liang(module: nn.Module, global_mean: float) -> None:
    """Xavier-uniform weights, N(0, 0.001^2) biases (vae_cf code); the output bias at the mean rating."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for lin in linears:
        nn.init.xavier_uniform_(lin.weight)
        nn.init.normal_(lin.bias, std=0.001)
    nn.init.constant_(linears[-1].bias, global_mean)


class MultDAE(RowModel):
    """Parameters: ``dim`` code units, ``hidden`` extra encoder layer sizes, ``dropout`` input
    dropout probability, ``reg`` L2 weight on the weight matrices, ``normalize`` L2-normalise the
    input row (as the original)."""

    batch_kind = "user_rows"

    def __init__(
        self,
        data: TrainData,
        dim: int = 200,
        hidden: Sequence[int] | str = (),
        dropout: float = 0.5,
        reg: float = 0.01,
        normalize: bool = True,
        chunk_elems: int = 2**22,
    ):
        super().__init__(data, chunk_elems)
        self.reg, self.normalize = float(reg), bool(normalize)
        self.drop = nn.Dropout(dropout)
        sizes = [self.n_cols, *layer_sizes(hidden), dim]
        self.encoder = mlp(sizes, "tanh", "tanh")
        self.decoder = mlp(sizes[::-1], "tanh", None)
        init_like_liang(self, self.global_mean)

    def reconstruct(self, dense_rows: torch.Tensor) -> torch.Tensor:
        x = F.normalize(dense_rows, dim=1) if self.normalize else dense_rows
        return self.decoder(self.encoder(self.drop(x)))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = batch["rows"]
        sse, n = self.masked_sse(self.reconstruct(self.dense(rows)), rows)
        n = max(n, 1)
        return {"loss": (sse + self.reg * self.weight_norm()) / n, "mse": sse.detach() / n}
