"""Biased matrix factorisation: r_ui = mu + b_u + b_i + p_u . q_i.

Koren, Bell and Volinsky (2009), "Matrix factorization techniques for recommender systems",
IEEE Computer 42(8), Eq. 5 (prediction) with the regularised squared error of their Eq. 5 objective.
The classical reference every neural model must beat (Rendle et al. 2019, 2020).

Deviations from the paper: trained with mini-batch Adam instead of per-rating SGD / ALS; the L2
penalty is applied to the embeddings and biases of the ratings in each batch (as per-rating SGD
does), scaled by ``reg`` per rating; ``mu`` is fixed to the training mean instead of learned.
"""

from __future__ import annotations

import torch
from torch import nn

from xfvae.data.train_data import TrainData


class BiasedMF(nn.Module):
    """Parameters: ``dim`` latent factors, ``reg`` L2 weight on p_u and q_i, ``bias_reg`` L2 weight
    on b_u and b_i, ``init_std`` standard deviation of the factor initialisation."""

    batch_kind = "triples"

    def __init__(
        self,
        data: TrainData,
        dim: int = 64,
        reg: float = 0.05,
        bias_reg: float = 0.01,
        init_std: float = 0.05,
    ):
        super().__init__()
        self.reg, self.bias_reg = reg, bias_reg
        self.p = nn.Embedding(data.n_users, dim)
        self.q = nn.Embedding(data.n_items, dim)
        self.b_u = nn.Embedding(data.n_users, 1)
        self.b_i = nn.Embedding(data.n_items, 1)
        for emb in (self.p, self.q):
            nn.init.normal_(emb.weight, std=init_std)
        for emb in (self.b_u, self.b_i):
            nn.init.zeros_(emb.weight)
        self.register_buffer("mu", torch.tensor(data.global_mean, dtype=torch.float32))

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.p(users) * self.q(items)).sum(-1)
        return self.mu + self.b_u(users).squeeze(-1) + self.b_i(items).squeeze(-1) + dot

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u, i, r = batch["users"], batch["items"], batch["ratings"]
        mse = ((self.predict(u, i) - r) ** 2).mean()
        l2 = self.reg * (self.p(u).pow(2).sum(-1) + self.q(i).pow(2).sum(-1)).mean()
        l2 = l2 + self.bias_reg * (self.b_u(u).pow(2) + self.b_i(i).pow(2)).mean()
        return {"loss": mse + l2, "mse": mse}
