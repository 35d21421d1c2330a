"""Predictions for pairs whose user or item has no training rating (kept in val/test, paper 4.2)."""

from __future__ import annotations

import torch

from xfvae.data.train_data import TrainData

POLICIES = ("bias", "global_mean", "model")


def damped_biases(data: TrainData, damping: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """b_i = sum(r - mu) / (n_i + d), then b_u = sum(r - mu - b_i) / (n_u + d); 0 for the unseen."""
    mu = data.global_mean
    r = data.ratings.double() - mu
    n_i = torch.bincount(data.items, minlength=data.n_items).double()
    b_i = torch.zeros(data.n_items, dtype=torch.float64).index_add_(0, data.items, r) / (
        n_i + damping
    )
    r_u = r - b_i[data.items]
    n_u = torch.bincount(data.users, minlength=data.n_users).double()
    b_u = torch.zeros(data.n_users, dtype=torch.float64).index_add_(0, data.users, r_u) / (
        n_u + damping
    )
    return b_u.float(), b_i.float()


class ColdStart(torch.nn.Module):
    """Replaces the model's prediction on cold pairs according to ``policy`` (see conf/train.yaml)."""

    def __init__(self, data: TrainData, policy: str = "bias"):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"evaluation.cold_start must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        b_u, b_i = damped_biases(data)
        self.register_buffer(
            "mu", torch.tensor(data.global_mean, dtype=torch.float32), persistent=False
        )
        self.register_buffer("b_u", b_u, persistent=False)
        self.register_buffer("b_i", b_i, persistent=False)
        self.register_buffer("user_seen", data.user_seen, persistent=False)
        self.register_buffer("item_seen", data.item_seen, persistent=False)

    def is_cold(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return ~(self.user_seen[users] & self.item_seen[items])

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, preds: torch.Tensor
    ) -> torch.Tensor:
        if self.policy == "model":
            return preds
        fallback = self.mu.expand_as(preds)
        if self.policy == "bias":
            fallback = self.mu + self.b_u[users] + self.b_i[items]
        return torch.where(self.is_cold(users, items), fallback, preds)
