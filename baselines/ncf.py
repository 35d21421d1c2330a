"""NCF: He, Liao, Zhang, Nie, Hu and Chua (2017), "Neural Collaborative Filtering", WWW'17,
section 3.3 (MLP, Eq. 5), 3.2 (GMF, Eq. 2) and 3.4 (NeuMF, Eq. 11-12).

``variant: mlp`` (Jin et al. 4.3's choice): user and item ID embeddings, concatenated, through a
ReLU tower; ``gmf``: element-wise product of the embeddings; ``neumf``: both, their last layers
concatenated. Defaults are the original's (MLP embeddings 32 + 32, tower 32-16-8; GMF factors 8).

Deviations from the paper:

* Explicit ratings with squared error and a linear output (its bias starts at the training mean
  rating) instead of implicit feedback with negative sampling, log loss and a sigmoid output
  (Jin et al. 4.3).
* L2 (Jin et al. Table 2) applies to every parameter with one weight ``reg``: the batch objective
  is (SSE + reg * (sum over the batch's ratings of |p_u|^2 + |q_i|^2 + sum of squared dense
  weights)) / batch size, i.e. embeddings are penalised per rating as SGD does and dense weights
  once per batch. The original uses separate, per-layer Keras regularisers (default 0).
* No pre-training of NeuMF from GMF and MLP (the original's optional ``--mf_pretrain``).
* Embeddings start at N(0, 0.01^2) as the original; dense layers use PyTorch's default init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from baselines.autorec import layer_sizes, mlp
from xfvae.data.train_data import TrainData

VARIANTS = ("mlp", "gmf", "neumf")


def embedding(n: int, dim: int, std: float = 0.01) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, std=std)
    return emb


def predict_in_chunks(model: nn.Module, users: torch.Tensor, items: torch.Tensor, step: int):
    """``model(users, items)`` over ``step`` pairs at a time, so memory stays bounded."""
    if users.numel() == 0:
        return torch.zeros(0, device=users.device)
    return torch.cat(
        [model(users[s : s + step], items[s : s + step]) for s in range(0, users.numel(), step)]
    )


def penalised_squared_error(model: nn.Module, batch: dict[str, torch.Tensor]):
    """NCF's and ConvNCF's batch objective: (SSE + ``model.reg`` * ``model.penalty``) / batch
    size, and the batch's mean squared error."""
    u, i, r = batch["users"], batch["items"], batch["ratings"]
    sse = ((model(u, i) - r) ** 2).sum()
    n = max(r.numel(), 1)
    total = sse + model.reg * model.penalty(u, i) if model.reg else sse
    return {"loss": total / n, "mse": sse.detach() / n}


class NCF(nn.Module):
    """Parameters: ``variant`` (mlp | gmf | neumf), ``dim`` MLP embedding size (per side),
    ``hidden`` MLP tower sizes (ReLU), ``gmf_dim`` GMF embedding size, ``reg`` L2 weight,
    ``predict_chunk`` pairs per forward pass in :meth:`predict`."""

    batch_kind = "triples"

    def __init__(
        self,
        data: TrainData,
        variant: str = "mlp",
        dim: int = 32,
        hidden: Sequence[int] | str = (32, 16, 8),
        gmf_dim: int = 8,
        reg: float = 0.0,
        predict_chunk: int = 65536,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"NCF variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.reg, self.predict_chunk = variant, float(reg), int(predict_chunk)
        width = 0
        if variant in ("mlp", "neumf"):
            self.p_mlp, self.q_mlp = embedding(data.n_users, dim), embedding(data.n_items, dim)
            sizes = [2 * dim, *layer_sizes(hidden)]
            self.tower = mlp(sizes, "relu", "relu") if len(sizes) > 1 else nn.Identity()
            width += sizes[-1]
        if variant in ("gmf", "neumf"):
            self.p_gmf, self.q_gmf = (
                embedding(data.n_users, gmf_dim),
                embedding(data.n_items, gmf_dim),
            )
            width += gmf_dim
        self.out = nn.Linear(width, 1)
        nn.init.constant_(self.out.bias, data.global_mean)

    def _embeddings(self) -> list[tuple[nn.Embedding, nn.Embedding]]:
        pairs = []
        if self.variant in ("mlp", "neumf"):
            pairs.append((self.p_mlp, self.q_mlp))
        if self.variant in ("gmf", "neumf"):
            pairs.append((self.p_gmf, self.q_gmf))
        return pairs

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.variant in ("mlp", "neumf"):
            parts.append(self.tower(torch.cat([self.p_mlp(users), self.q_mlp(items)], dim=-1)))
        if self.variant in ("gmf", "neumf"):
            parts.append(self.p_gmf(users) * self.q_gmf(items))
        return self.out(torch.cat(parts, dim=-1)).squeeze(-1)

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return predict_in_chunks(self, users, items, self.predict_chunk)

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of |p_u|^2 + |q_i|^2 (every embedding table) + squared dense weights."""
        pen = sum(p(users).pow(2).sum() + q(items).pow(2).sum() for p, q in self._embeddings())
        dense = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        return pen + sum(w.pow(2).sum() for w in dense)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return penalised_squared_error(self, batch)
