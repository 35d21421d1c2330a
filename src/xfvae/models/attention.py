"""User-side / item-side attention of the cross-feedback VAE (paper 3.4, Eq. 9-10).

A posterior parameter vector (mean mu_i, or variance sigma_i^2) of one side attends to the
cross-fed embeddings of the other side: scores ``s_ij = x_i Theta v_j^T`` (Eq. 9, numerator),
weights ``a_ij`` from the scores, attention vector ``c_i = sum_j a_ij v_j`` (Eq. 10), then a
merge back to K dimensions. ``local`` attends to the entries the row rated (sparse, only the
observed pairs are scored); ``global`` to every entry (a dense B x N score matrix per batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

ATTENTION_KINDS = ("none", "local", "global", "auto")
ATTENTION_NORMS = ("ratio", "softmax")
MERGES = ("concat", "add")


@dataclass(frozen=True)
class RowSlice:
    """The observed entries of a batch of rows, flattened (CSR order): what the sparse paths need."""

    n_rows: int
    cols: Tensor  # int64 [nnz], column of each entry
    vals: Tensor  # float32 [nnz], rating of each entry
    offsets: Tensor  # int64 [n_rows], start of each row in cols (EmbeddingBag offsets)
    seg: Tensor  # int64 [nnz], row (0..n_rows-1) of each entry


def segment_softmax(scores: Tensor, seg: Tensor, n_rows: int) -> Tensor:
    """Softmax of ``scores`` ([nnz, Q]) within each row segment (rows without entries: none)."""
    shape = (n_rows, scores.shape[1])
    idx = seg.unsqueeze(1).expand_as(scores)
    peak = torch.full(shape, -torch.inf, dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, idx, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - peak[seg])
    den = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add(0, seg, e)
    return e / den[seg]


def segment_ratio(scores: Tensor, seg: Tensor, n_rows: int) -> Tensor:
    """Eq. 9 as printed: each score over the sum of its row's scores (may be negative or ~0)."""
    shape = (n_rows, scores.shape[1])
    den = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add(0, seg, scores)
    return scores / den[seg]


def local_context(queries: Tensor, keys: Tensor, rows: RowSlice, norm: str) -> Tensor:
    """Eq. 9-10 with the indicator: c_i = sum over the row's rated entries j of a_ij v_j.

    ``queries`` are x_i Theta for Q parameter vectors at once ([B, Q, K]); ``keys`` the cross-fed
    embeddings ([N, K]). Only the ``nnz`` observed pairs are scored: O(nnz Q K).
    """
    kc = keys[rows.cols]  # [nnz, K], the rated entries' embeddings
    scores = (queries[rows.seg] * kc.unsqueeze(1)).sum(-1)  # Eq. 9 numerator, [nnz, Q]
    if norm == "softmax":
        weights = segment_softmax(scores / math.sqrt(keys.shape[1]), rows.seg, rows.n_rows)
    else:
        weights = segment_ratio(scores, rows.seg, rows.n_rows)
    out = torch.zeros(rows.n_rows, *queries.shape[1:], dtype=keys.dtype, device=keys.device)
    return out.index_add(0, rows.seg, weights.unsqueeze(2) * kc.unsqueeze(1))  # Eq. 10


#: Score-matrix elements per chunk of global attention; larger B x Q x N score matrices are
#: processed in row chunks whose weights are recomputed in the backward pass (bounded memory).
GLOBAL_CHUNK_ELEMENTS = 1 << 24


def _global_context_dense(queries: Tensor, keys: Tensor, norm: str) -> Tensor:
    if norm == "softmax":  # the 1/sqrt(K) scale goes on the queries, not on the B x Q x N scores
        weights = torch.softmax((queries / math.sqrt(keys.shape[1])) @ keys.T, dim=-1)
    else:
        scores = queries @ keys.T  # Eq. 9 numerators for all N entries, [B, Q, N]
        weights = scores / scores.sum(dim=-1, keepdim=True)
    return weights @ keys  # Eq. 10


def global_context(queries: Tensor, keys: Tensor, norm: str) -> Tensor:
    """Eq. 9-10 without the indicator (the paper's choice for sparse data): attend to all N keys.

    Memory is bounded by ``GLOBAL_CHUNK_ELEMENTS``: bigger batches go through in row chunks with
    activation checkpointing (ML-20M's item side would otherwise hold 1000 x 2 x 138k scores).
    """
    per_row = queries.shape[1] * keys.shape[0]
    rows = max(1, GLOBAL_CHUNK_ELEMENTS // per_row)
    if queries.shape[0] <= rows:
        return _global_context_dense(queries, keys, norm)
    if not torch.is_grad_enabled():
        return torch.cat([_global_context_dense(q, keys, norm) for q in queries.split(rows)])
    return torch.cat(
        [
            checkpoint(_global_context_dense, q, keys, norm, use_reentrant=False)
            for q in queries.split(rows)
        ]
    )


class PosteriorAttention(nn.Module):
    """Attention of the posterior mean (matrix Theta) and variance (matrix Lambda) of one side.

    Merge ``concat`` (the paper's choice): mu := Linear([mu; c]); the variance is merged in logit
    space, sigma^2 := sigmoid(Linear([logit; c'])), so it stays in (0, 1) like the un-attended
    sigmoid output. ``add``: mu := mu + c, sigma^2 := sigmoid(logit + c').
    """

    def __init__(self, dim: int, scope: str, norm: str, merge: str):
        super().__init__()
        if scope not in ("local", "global"):
            raise ValueError(f"attention scope must be 'local' or 'global', got {scope!r}")
        if norm not in ATTENTION_NORMS:
            raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {norm!r}")
        if merge not in MERGES:
            raise ValueError(f"attention_merge must be one of {MERGES}, got {merge!r}")
        self.scope, self.norm, self.merge = scope, norm, merge
        self.theta = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))  # Eq. 9, mean side
        self.lam = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))  # Lambda, variance side
        if merge == "concat":
            self.merge_mu = nn.Linear(2 * dim, dim)
            self.merge_var = nn.Linear(2 * dim, dim)

    def forward(
        self, mu: Tensor, var_logit: Tensor, keys: Tensor, rows: RowSlice
    ) -> tuple[Tensor, Tensor]:
        # Eq. 9 queries: mu_i Theta for the mean, sigma_i^2 Lambda for the variance (scored together)
        queries = torch.stack([mu @ self.theta, torch.sigmoid(var_logit) @ self.lam], dim=1)
        if self.scope == "local":
            ctx = local_context(queries, keys, rows, self.norm)
        else:
            ctx = global_context(queries, keys, self.norm)
        c_mu, c_var = ctx[:, 0], ctx[:, 1]  # Eq. 10
        if self.merge == "concat":
            mu = self.merge_mu(torch.cat([mu, c_mu], dim=1))
            var_logit = self.merge_var(torch.cat([var_logit, c_var], dim=1))
        else:
            mu, var_logit = mu + c_mu, var_logit + c_var
        return mu, torch.sigmoid(var_logit)
