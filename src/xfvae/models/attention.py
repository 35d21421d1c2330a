"""User-side / item-side attention of the cross-feedback VAE (paper 3.4, Eq. 9-10).

A posterior parameter vector (mean mu_i, or variance sigma_i^2) of one side attends to the
cross-fed embeddings of the other side: scores ``s_ij = x_i Theta v_j^T`` (Eq. 9, numerator),
weights ``a_ij`` from the scores, attention vector ``c_i = sum_j a_ij v_j`` (Eq. 10), then a
merge back to K dimensions. ``local`` attends to the entries the row rated (sparse, only the
observed pairs are scored); ``global`` to every entry, computed blockwise with an online softmax
(flash attention through ``scaled_dot_product_attention``): no B x N score matrix is stored.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xfvae.data.batches import RowSlice

__all__ = [
    "ATTENTION_KINDS",
    "PosteriorAttention",
    "RowSlice",
    "global_context",
    "global_rows",
    "local_context",
    "local_rows",
]

warnings.filterwarnings("ignore", message=r".*Sparse CSR tensor support is in beta.*")

ATTENTION_KINDS = ("none", "local", "global", "auto")
ATTENTION_NORMS = ("ratio", "softmax")
MERGES = ("concat", "add")


def segment_sum(x: Tensor, rows: RowSlice, mode: str = "sum") -> Tensor:
    """Sum (or max) of ``x`` ([nnz, D]) over each row's entries ([n_rows, D]; empty rows: 0)."""
    idx = torch.arange(x.shape[0], device=x.device, dtype=rows.offsets.dtype)
    return F.embedding_bag(idx, x, rows.offsets, mode=mode)


def _empty_rows(rows: RowSlice) -> Tensor:
    nnz = torch.full((1,), rows.cols.numel(), dtype=rows.offsets.dtype, device=rows.cols.device)
    return torch.diff(rows.offsets, append=nnz) == 0


class _Pattern:
    """The sparsity pattern of Q stacked copies of a batch's rows: a (Q B) x N CSR matrix whose
    rows are (query q, row b), q-major. Scores are sampled products on it (SDDMM), weighted sums
    of keys are products with it (SpMM): one kernel each, no per-entry broadcasting. Built once
    per batch (kept in ``rows.cache``)."""

    def __init__(self, rows: RowSlice, q: int, n_cols: int):
        nnz, dev = rows.cols.numel(), rows.cols.device
        end = torch.full((1,), q * nnz, dtype=rows.offsets.dtype, device=dev)
        self.crow = torch.cat([rows.offsets + k * nnz for k in range(q)] + [end])
        self.col = rows.cols.repeat(q)
        self.seg = torch.cat([rows.seg + k * rows.n_rows for k in range(q)])
        self.lengths = torch.diff(self.crow)
        self.empty = self.lengths == 0
        self.shape = (q * rows.n_rows, n_cols)

    @staticmethod
    def of(rows: RowSlice, q: int, n_cols: int) -> _Pattern:
        key = ("pattern", q, n_cols)
        if key not in rows.cache:
            rows.cache[key] = _Pattern(rows, q, n_cols)
        return rows.cache[key]

    def matrix(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(
            self.crow, self.col, values, self.shape, check_invariants=False
        )

    def sample(self, left: Tensor, keys: Tensor) -> Tensor:
        """(left @ keys^T) at the pattern's entries ([Q nnz]): the SDDMM."""
        zeros = left.new_zeros(self.col.shape)
        return torch.sparse.sampled_addmm(self.matrix(zeros), left, keys.T, beta=0.0).values()


class _LocalAttention(torch.autograd.Function):
    """Eq. 9-10 over the rated entries, with a hand-written backward (sparse kernels only).

    Forward: e = exp(scale * s - row max) (softmax) or e = s (ratio); c = sum e v / sum e.
    Backward (as flash attention): with delta_i = dc_i . c_i, ds_e = e_e (dc_i . v_e - delta_i) /
    den_i (times ``scale`` for the softmax), dq_i = sum_e ds_e v_e. Keys get no gradient here.
    """

    @staticmethod
    def forward(ctx, q2: Tensor, keys: Tensor, rows: RowSlice, q: int, softmax: bool) -> Tensor:
        k = q2.shape[1]  # q2: the Q queries of each row, q-major ([Q B, K])
        pat = _Pattern.of(rows, q, keys.shape[0])
        scores = pat.sample(q2, keys)  # Eq. 9 numerators of the rated entries, [Q nnz]
        if softmax:
            scores = scores * (1.0 / math.sqrt(k))
            peak = torch.segment_reduce(scores, "max", lengths=pat.lengths, unsafe=True)
            e = torch.exp(scores - peak.index_select(0, pat.seg))  # the max: stability only
        else:
            e = scores
        keys1 = torch.cat([keys, keys.new_ones(keys.shape[0], 1)], dim=1)
        num_den = pat.matrix(e) @ keys1  # [Q B, K + 1]: sum_e e v_e and sum_e e
        den = num_den[:, k]
        den = torch.where(pat.empty, torch.ones_like(den), den)  # rows without entries
        out = num_den[:, :k] / den.unsqueeze(1)  # Eq. 10
        ctx.save_for_backward(keys, e, den, out)
        ctx.pat, ctx.softmax = pat, softmax
        return out

    @staticmethod
    def backward(ctx, g2: Tensor):
        keys, e, den, out = ctx.saved_tensors
        pat, k = ctx.pat, keys.shape[1]
        delta = (g2 * out).sum(1)  # [Q B]
        dw = pat.sample(g2, keys)  # dc_i . v_e, [Q nnz]
        ds = (dw - delta.index_select(0, pat.seg)) / den.index_select(0, pat.seg)
        if ctx.softmax:
            ds = ds * e * (1.0 / math.sqrt(k))
        return pat.matrix(ds) @ keys, None, None, None, None  # dq, [Q B, K]


def _local_context_autograd(queries: Tensor, keys: Tensor, rows: RowSlice, softmax: bool):
    """The same as :class:`_LocalAttention` through autograd (used when the keys need gradients)."""
    kc = keys[rows.cols]
    scores = (queries[rows.seg] * kc.unsqueeze(1)).sum(-1)
    if softmax:
        scores = scores / math.sqrt(keys.shape[1])
        peak = segment_sum(scores.detach(), rows, mode="max")
        e = torch.exp(scores - peak[rows.seg])
    else:
        e = scores
    den = segment_sum(e, rows)
    den = torch.where(_empty_rows(rows).unsqueeze(1), torch.ones_like(den), den)
    w = e / den[rows.seg]
    out = torch.zeros(rows.n_rows, *queries.shape[1:], dtype=keys.dtype, device=keys.device)
    return out.index_add(0, rows.seg, w.unsqueeze(2) * kc.unsqueeze(1))


def local_rows(q2: Tensor, keys: Tensor, rows: RowSlice, q: int, norm: str) -> Tensor:
    """:func:`local_context` for q-major queries ([Q B, K]: query 0 of every row, then query 1)."""
    if keys.requires_grad:
        queries = q2.view(q, rows.n_rows, -1).transpose(0, 1)
        out = _local_context_autograd(queries, keys, rows, norm == "softmax")
        return out.transpose(0, 1).reshape(q2.shape)
    return _LocalAttention.apply(q2, keys, rows, q, norm == "softmax")


def local_context(queries: Tensor, keys: Tensor, rows: RowSlice, norm: str) -> Tensor:
    """Eq. 9-10 with the indicator: c_i = sum over the row's rated entries j of a_ij v_j.

    ``queries`` are x_i Theta for Q parameter vectors at once ([B, Q, K]); ``keys`` the cross-fed
    embeddings ([N, K]). Only the ``nnz`` observed pairs are scored: O(nnz Q K). Rows without
    entries get c_i = 0.
    """
    b, q, k = queries.shape
    out = local_rows(queries.transpose(0, 1).reshape(q * b, k), keys, rows, q, norm)
    return out.view(q, b, k).transpose(0, 1)


def global_rows(x: Tensor, keys: Tensor, norm: str) -> Tensor:
    """:func:`global_context` for queries as rows ([R, K])."""
    k = x.shape[1]
    if norm == "ratio":
        num = x @ (keys.T @ keys)  # [R, K]
        den = x @ keys.sum(0)  # [R]
        return num / den.unsqueeze(1)
    xs, ks = x.reshape(1, 1, -1, k), keys.reshape(1, 1, -1, k)
    pad = -k % 8 if x.is_cuda else 0  # CUDA's memory-efficient kernel wants aligned rows
    if pad:
        xs, ks = F.pad(xs, (0, pad)), F.pad(ks, (0, pad))  # zero columns: same scores, zero output
    out = F.scaled_dot_product_attention(xs, ks, ks, scale=1.0 / math.sqrt(k))
    return out[..., :k].reshape(x.shape)


def global_context(queries: Tensor, keys: Tensor, norm: str) -> Tensor:
    """Eq. 9-10 without the indicator (the paper's choice for sparse data): attend to all N keys.

    ``softmax``: scaled dot-product attention, whose kernels (flash attention on CPU, flash /
    memory-efficient on CUDA) go through the keys in blocks with an online, numerically stable
    softmax and recompute the weights in the backward pass: memory O((B Q + N) K), never B x Q x N.
    ``ratio`` (Eq. 9 as printed) is linear in the scores: sum_j s_ij v_j = x_i (V^T V) and
    sum_j s_ij = x_i V^T 1, so c_i = x_i (V^T V) / (x_i V^T 1), exactly, in O(N K^2 + B Q K^2).
    """
    return global_rows(queries.reshape(-1, queries.shape[2]), keys, norm).view(queries.shape)


def bounded_variance(logit: Tensor, floor: float) -> Tensor:
    """sigma^2 = floor + (1 - floor) sigmoid(logit): Eq. 8's sigmoid output kept above ``floor``.

    In float32 the sigmoid of a logit below about -88 is exactly 0, and then log sigma^2 in the KL
    (Eq. 7) and the gradient of sqrt(sigma^2) in the reparametrisation are infinite: searched
    configurations of the model diverged that way within an epoch. ``floor`` = 0 is the paper's
    plain sigmoid (a deviation otherwise; README "Deviations").
    """
    if floor <= 0:
        return torch.sigmoid(logit)
    return torch.sigmoid(logit).mul(1.0 - floor).add(floor)


class PosteriorAttention(nn.Module):
    """Attention of the posterior mean (matrix Theta) and variance (matrix Lambda) of one side.

    Merge ``concat`` (the paper's choice): mu := Linear([mu; c]); the variance is merged in logit
    space, sigma^2 := sigmoid(Linear([logit; c'])), so it stays in (0, 1) like the un-attended
    sigmoid output. ``add``: mu := mu + c, sigma^2 := sigmoid(logit + c').
    """

    def __init__(self, dim: int, scope: str, norm: str, merge: str, var_floor: float = 0.0):
        super().__init__()
        self.var_floor = float(var_floor)
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
        # Eq. 9 queries: mu_i Theta for the mean, sigma_i^2 Lambda for the variance, scored
        # together as 2B rows (all means, then all variances)
        q2 = torch.cat([mu @ self.theta, bounded_variance(var_logit, self.var_floor) @ self.lam])
        if self.scope == "local":
            ctx = local_rows(q2, keys, rows, 2, self.norm)
        else:
            ctx = global_rows(q2, keys, self.norm)
        b = mu.shape[0]
        c_mu, c_var = ctx[:b], ctx[b:]  # Eq. 10
        if self.merge == "concat":
            mu = self.merge_mu(torch.cat([mu, c_mu], dim=1))
            var_logit = self.merge_var(torch.cat([var_logit, c_var], dim=1))
        else:
            mu, var_logit = mu + c_mu, var_logit + c_var
        return mu, bounded_variance(var_logit, self.var_floor)
