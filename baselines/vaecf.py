"""VAE-CF (Mult-VAE): Liang, Krishnan, Hoffman and Jebara (2018), "Variational Autoencoders for
Collaborative Filtering", WWW'18, Eq. 6 (beta-ELBO), section 2.2.2 (KL annealing) and the authors'
code (github.com/dawenl/vae_cf).

Architecture as the original: L2-normalised user row -> dropout (keep 0.5) -> tanh 600 -> (mu,
log sigma^2) of a 200-d Gaussian -> z (reparameterised) -> tanh 600 -> n_items; Xavier-uniform
weights. beta is annealed linearly from 0 over ``anneal_steps`` updates up to ``beta_cap``
(original: 200,000 steps, cap 0.2); Jin et al. tune the cap in {1e-5, ..., 1}.

Deviations from the paper:

* Squared error on the observed entries of the row replaces the multinomial log-likelihood of the
  whole (binarised) row (Jin et al. 4.3); the output layer is linear and predicts ratings (its
  bias starts at the training mean rating) instead of softmax logits.
* Depth and width follow Jin et al. Table 2 (``dim``, ``hidden``); defaults are the original's.
* Batch objective: (SSE over the batch's observed entries + beta * summed KL of the batch's users)
  / number of observed entries. The original averages both terms over users instead; the relative
  weight of the KL term, which is what beta controls, is the same. No L2 (Table 2: N/A; the
  original's VAE uses lam = 0).
* Prediction uses the posterior mean (z = mu, no dropout), as the original does at test time.
* The tuned ML-100K config (conf/model/vaecf.yaml) keeps beta constant (``anneal_steps: 0``): with
  ~7 updates per epoch an anneal over thousands of updates never approaches its cap before early
  stopping, so the cap searched over Table 2's range would have had no effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from baselines.autorec import RowModel, layer_sizes, mlp
from baselines.daecf import init_like_liang
from xfvae.data.train_data import TrainData


class MultVAE(RowModel):
    """Parameters: ``dim`` latent size, ``hidden`` encoder layer sizes (decoder mirrored),
    ``dropout`` input dropout probability, ``beta_cap`` final KL weight, ``anneal_steps`` number of
    updates over which beta grows linearly from 0 (0: constant ``beta_cap``), ``normalize``
    L2-normalise the input row."""

    batch_kind = "user_rows"

    def __init__(
        self,
        data: TrainData,
        dim: int = 200,
        hidden: Sequence[int] | str = (600,),
        dropout: float = 0.5,
        beta_cap: float = 0.2,
        anneal_steps: int = 200_000,
        normalize: bool = True,
        chunk_elems: int = 2**22,
    ):
        super().__init__(data, chunk_elems)
        self.dim, self.beta_cap, self.anneal_steps = int(dim), float(beta_cap), int(anneal_steps)
        self.normalize = bool(normalize)
        self.drop = nn.Dropout(dropout)
        hidden = layer_sizes(hidden)
        self.encoder = mlp([self.n_cols, *hidden, 2 * self.dim], "tanh", None)
        self.decoder = mlp([self.dim, *hidden[::-1], self.n_cols], "tanh", None)
        init_like_liang(self.encoder, 0.0)
        init_like_liang(self.decoder, self.global_mean)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        if self.anneal_steps <= 0:
            return self.beta_cap
        return min(self.beta_cap, float(self.updates) / self.anneal_steps)

    def encode(self, dense_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.normalize(dense_rows, dim=1) if self.normalize else dense_rows
        mu, logvar = self.encoder(self.drop(x)).split(self.dim, dim=1)
        return mu, logvar

    def reconstruct(self, dense_rows: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(dense_rows)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = batch["rows"]
        mu, logvar = self.encode(self.dense(rows))
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        sse, n = self.masked_sse(self.decoder(z), rows)
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum()  # Eq. 6, summed over users
        beta = self.beta
        if self.training:
            self.updates += 1
        n = max(n, 1)
        return {
            "loss": (sse + beta * kl) / n,
            "mse": sse.detach() / n,
            "kl": kl.detach() / rows.shape[0],
            "beta": torch.tensor(beta),
        }
