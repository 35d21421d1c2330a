"""One side's encoder of the cross-feedback VAE (paper 3.2): q(u_i | X_i, V_i) for users,
q(v_j | X_j, U_j) for items.

Observed-input MLP over the rating row (Eq. 8), latent-input MLP of the same shape over the
cross-fed embeddings of the row's rated entries, concatenation S = [H; G], then final MLPs for the
posterior mean (linear output) and variance (sigmoid output), optionally followed by attention
(Eq. 9-10). With ``separate_variance`` the variance has its own observed, latent and final MLPs
("different sets of weights and biases", paper 3.2); otherwise (the default) it shares the input
MLPs with the mean and only the final MLPs differ.

The latent input Z (one row = the K-dim embeddings of the rated entries, zeros elsewhere, length
N*K) is never built: its first layer Phi_0 (N*K x M) applied to row i equals
``sum_{j rated} v_j^T Phi_0[j]``, i.e. a bag sum over P = (v_j^T Phi_0[j])_j (N x M), which costs
O(N K M + nnz M) per batch instead of O(B N K M). With separate variance networks the first
layers of both networks are one table with 2M columns ([mean | variance]), so one bag sum serves
both. Rows with transposes (the training blocks) get gathers as backward passes instead of
scatters, and tables computed only on the batch's distinct columns when those are few.

Training blocks in the configurations most runs use (``SideEncoder.fusable``) go through
:mod:`xfvae.models.fused` instead: the same mathematics as one autograd node per side, with a
hand-written backward and index tensors built once per batch (issue 21: a block step is bound by
the number of operator calls, not by arithmetic).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xfvae.models.attention import PosteriorAttention, RowSlice, bounded_variance
from xfvae.models.flat_params import FlatParams
from xfvae.models.fused import _table_indices, fused_encode


def mlp(dims: list[int], last_activation: bool) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU between (and after, if asked)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or k < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def slice_rows(indptr: Tensor, indices: Tensor, values: Tensor, rows: Tensor) -> RowSlice:
    """The CSR entries of any ``rows`` (vectorised; reads the entry count from the device)."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    seg = torch.repeat_interleave(
        torch.arange(rows.numel(), device=rows.device), lengths, output_size=total
    )
    pos = (starts - offsets)[seg] + torch.arange(total, device=rows.device)
    return RowSlice(rows.numel(), indices[pos], values[pos], offsets, seg)


def range_rows(
    indptr: Tensor, indptr_host: np.ndarray, indices: Tensor, values: Tensor, a: int, b: int
) -> RowSlice:
    """The CSR entries of rows a..b-1 (contiguous): sizes come from the host copy of indptr."""
    e0, e1 = int(indptr_host[a]), int(indptr_host[b])
    lengths = indptr[a + 1 : b + 1] - indptr[a:b]
    seg = torch.repeat_interleave(
        torch.arange(b - a, device=indptr.device), lengths, output_size=e1 - e0
    )
    return RowSlice(b - a, indices[e0:e1], values[e0:e1], indptr[a:b] - e0, seg)


class BagSum(torch.autograd.Function):
    """Row sums ``out[b] = sum_{e in row b} w_e table[cols_e]`` (an EmbeddingBag with mode="sum").

    Same forward as ``F.embedding_bag``; the backward is one ``index_add_`` into the table
    gradient (for rows without transposes; see :class:`RowBag` for the training path).
    """

    @staticmethod
    def forward(ctx, table: Tensor, rows: RowSlice, weights: Tensor | None) -> Tensor:
        ctx.rows, ctx.n_table = rows, table.shape[0]
        ctx.save_for_backward(weights) if weights is not None else ctx.save_for_backward()
        out = F.embedding_bag(
            rows.cols, table, rows.offsets, mode="sum", per_sample_weights=weights
        )
        return out.reshape(rows.n_rows, table.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows = ctx.rows
        per_entry = grad[rows.seg]
        if ctx.saved_tensors:
            per_entry = per_entry * ctx.saved_tensors[0].unsqueeze(1)
        table_grad = grad.new_zeros(ctx.n_table, grad.shape[1]).index_add_(0, rows.cols, per_entry)
        return table_grad, None, None


def bag_sum(table: Tensor, rows: RowSlice, weights: Tensor | None = None) -> Tensor:
    """Sum of the table rows of each row's entries (weighted by ``weights``, e.g. the ratings)."""
    return BagSum.apply(table, rows, weights)


def scatter_rows(rows_grad: Tensor, ucols: Tensor, shape: torch.Size, sparse: bool) -> Tensor:
    """Gradient rows of the distinct columns as a table gradient: dense (zeros elsewhere), or a
    row-sparse COO tensor (``sparse``: only the rows the batch touched, for a lazy optimiser)."""
    if sparse:
        return torch.sparse_coo_tensor(
            ucols.unsqueeze(0), rows_grad, shape, is_coalesced=True, check_invariants=False
        )
    return rows_grad.new_zeros(shape).index_copy_(0, ucols, rows_grad)


class RowBag(torch.autograd.Function):
    """:class:`BagSum` for rows with transposes: the backward is itself a bag sum (a gather over
    the entries ordered by column), one output row per distinct column.

    ``local``: the table holds only the distinct columns (``rows.ucols``) and is indexed by
    ``rows.inv``; otherwise it is the full N-row table, whose gradient is ``scatter_rows``'s.
    ``weighted``: the entries are weighted by their ratings (X W_0), else by 1 (Z Phi_0).
    """

    @staticmethod
    def forward(ctx, table: Tensor, rows: RowSlice, weighted: bool, local: bool, sparse: bool):
        ctx.rows, ctx.weighted, ctx.local, ctx.sparse = rows, weighted, local, sparse
        ctx.shape = table.shape
        w = rows.vals.to(table.dtype) if weighted else None
        idx = rows.inv if local else rows.cols
        return F.embedding_bag(idx, table, rows.offsets, mode="sum", per_sample_weights=w)

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows = ctx.rows
        w = rows.t_vals.to(grad.dtype) if ctx.weighted else None
        per_col = F.embedding_bag(
            rows.t_seg, grad, rows.t_offsets, mode="sum", per_sample_weights=w
        )
        if not ctx.local:
            per_col = scatter_rows(per_col, rows.ucols, ctx.shape, ctx.sparse)
        return per_col, None, None, None, None


class LatentRows(torch.autograd.Function):
    """P_j = v_j^T Phi_0[j] ([n, M]) for every entry j (``ucols`` None) or for the batch's
    distinct columns ``ucols``, as one weighted bag sum over the N*K rows of Phi_0 (an
    EmbeddingBag: several times faster on CPU than a broadcast multiply and sum, or ``bmm``).
    Backward: dPhi_0[j, k] = v_jk dP_j, again one bag, scattered into a dense or row-sparse
    gradient (``sparse``) when only the distinct columns were used."""

    @staticmethod
    def forward(ctx, phi0: Tensor, keys: Tensor, ucols: Tensor | None, sparse: bool) -> Tensor:
        n_all, k, m = phi0.shape
        n = n_all if ucols is None else ucols.numel()
        flat, offsets, _ = _table_indices(n_all, k, phi0.device)
        offsets = offsets[:n]
        if ucols is None:
            idx, weights = flat, keys.reshape(-1)
        else:
            idx = (ucols.unsqueeze(1) * k + flat[:k]).reshape(-1)
            weights = keys.index_select(0, ucols).reshape(-1)
        out = F.embedding_bag(
            idx, phi0.reshape(n_all * k, m), offsets, mode="sum", per_sample_weights=weights
        )
        ctx.save_for_backward(phi0, keys, ucols, weights)
        ctx.sparse = sparse
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        phi0, keys, ucols, weights = ctx.saved_tensors
        n_all, k, m = phi0.shape
        n = grad.shape[0]
        d_phi = d_keys = None
        if ctx.needs_input_grad[0]:  # row (j, k) = v_jk dP_j: bags of one row each
            flat, _, entry = _table_indices(n_all, k, grad.device)
            flat, entry = flat[: n * k], entry[: n * k]
            rows = F.embedding_bag(entry, grad, flat, mode="sum", per_sample_weights=weights)
            rows = rows.view(n, k, m)
            d_phi = rows if ucols is None else scatter_rows(rows, ucols, phi0.shape, ctx.sparse)
        if ctx.needs_input_grad[1]:  # dv_jk = Phi_0[j, k] . dP_j
            phi = phi0 if ucols is None else phi0.index_select(0, ucols)
            d_keys = (phi * grad.unsqueeze(1)).sum(-1)
            if ucols is not None:
                d_keys = scatter_rows(d_keys, ucols, keys.shape, False)
        return d_phi, d_keys, None, None


class SideEncoder(nn.Module):
    """Encoder of one side: rows of X (n_rows x n_cols) and the other side's embeddings (n_cols x K).

    ``input_layers`` is L' (hidden layers of the observed and latent MLPs, width ``input_width``,
    output ``inter_dim`` = K'); ``output_layers`` is L (hidden layers of the final MLPs, width
    ``output_width``). Parameter names follow the paper: ``w0``/``alpha0`` (Eq. 8, first layer),
    ``phi0``/``beta0`` (latent first layer), ``obs_rest``/``lat_rest`` (layers 1..L'),
    ``head_mu``/``head_var`` (Psi, gamma). With ``separate_variance`` the first layers have 2M
    columns (mean network, then variance network) and ``obs_rest_var``/``lat_rest_var`` are the
    variance network's layers 1..L'. ``sparse_grad``: the first-layer tables (``w0``, ``phi0``)
    get row-sparse gradients in training (for a lazy optimiser; see the model's ``sparse_update``).
    ``var_floor``: the posterior variance is ``var_floor + (1 - var_floor) sigmoid(.)``
    (:func:`~xfvae.models.attention.bounded_variance`; 0 = the paper's sigmoid).
    """

    def __init__(
        self,
        n_cols: int,
        dim: int,
        inter_dim: int,
        input_layers: int,
        input_width: int,
        output_layers: int,
        output_width: int,
        use_data_input: bool,
        use_cross_feedback: bool,
        attention: str,
        attention_norm: str,
        attention_merge: str,
        separate_variance: bool = False,
        sparse_grad: bool = False,
        var_floor: float = 0.0,
    ):
        super().__init__()
        self.var_floor = float(var_floor)
        if not (use_data_input or use_cross_feedback):
            raise ValueError("xfvae needs use_data_input or use_cross_feedback (both are false)")
        self.n_cols, self.dim = n_cols, dim
        self.separate_variance, self.sparse_grad = bool(separate_variance), bool(sparse_grad)
        nets = 2 if separate_variance else 1
        widths = [input_width] * input_layers + [inter_dim]  # M^(1) .. M^(L'+1) = K'
        self.first = first = widths[0]
        bound = 1.0 / math.sqrt(n_cols)  # nn.Linear's default init for fan-in n_cols
        self.use_data_input, self.use_cross_feedback = use_data_input, use_cross_feedback
        if use_data_input:
            self.w0 = nn.Parameter(torch.empty(n_cols, nets * first).uniform_(-bound, bound))
            self.alpha0 = nn.Parameter(torch.empty(nets * first).uniform_(-bound, bound))
            self.obs_rest = mlp(widths, last_activation=True)
            if separate_variance:
                self.obs_rest_var = mlp(widths, last_activation=True)
        if use_cross_feedback:
            bound = 1.0 / math.sqrt(n_cols * dim)  # fan-in N*K of the latent input layer
            self.phi0 = nn.Parameter(torch.empty(n_cols, dim, nets * first).uniform_(-bound, bound))
            self.beta0 = nn.Parameter(torch.empty(nets * first).uniform_(-bound, bound))
            self.lat_rest = mlp(widths, last_activation=True)
            if separate_variance:
                self.lat_rest_var = mlp(widths, last_activation=True)
        s_dim = inter_dim * (int(use_data_input) + int(use_cross_feedback))
        head_dims = [s_dim] + [output_width] * output_layers + [dim]
        self.head_mu = mlp(head_dims, last_activation=False)  # linear output: posterior mean
        self.head_var = mlp(head_dims, last_activation=False)  # sigmoid applied below: variance
        self.fused_heads = output_layers == 0 and not separate_variance
        # the training path of models/fused.py covers these configurations
        self.fusable = (
            self.fused_heads
            and input_layers == 0
            and not self.sparse_grad
            and attention in ("none", "local")
        )
        # the model's flat tensor holding this encoder's parameters once its optimiser was given
        # that tensor (CrossFeedbackVAE.optimizer_parameters); None: parameters one by one
        self.flat_params: FlatParams | None = None
        self.attention = None
        if attention != "none":
            if not use_cross_feedback:
                raise ValueError(
                    "attention needs the cross-fed embeddings: set attention=none when "
                    "use_cross_feedback=false"
                )
            self.attention = PosteriorAttention(
                dim, attention, attention_norm, attention_merge, var_floor
            )

    def latent_table(self, keys: Tensor) -> Tensor:
        """P_j = v_j^T Phi_0[j] for all N entries ([N, M])."""
        return LatentRows.apply(self.phi0, keys, None, False)

    def first_layers(
        self, rows: RowSlice, keys: Tensor, table: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Pre-activations of the first observed (X W_0 + alpha_0) and latent (Z Phi_0 + beta_0)
        layers. ``table``: P for all N entries, if already computed (prediction)."""
        if rows.has_transpose and table is None and torch.is_grad_enabled():
            return self._first_layers_transposed(rows, keys)
        h = g = None
        if self.use_data_input:  # Eq. 8, first layer: X W_0 as a rating-weighted bag sum
            h = bag_sum(self.w0, rows, rows.vals.to(self.w0.dtype)) + self.alpha0
        if self.use_cross_feedback:  # latent first layer: Z Phi_0 = sum of P_j over the rated j
            table = self.latent_table(keys) if table is None else table
            g = bag_sum(table, rows) + self.beta0
        return h, g

    def _first_layers_transposed(self, rows: RowSlice, keys: Tensor):
        """The same values as the general path; backward by gathers, work per distinct column."""
        h = g = None
        sparse = self.sparse_grad
        if self.use_data_input:  # Eq. 8: X W_0
            h = RowBag.apply(self.w0, rows, True, False, sparse) + self.alpha0
        if self.use_cross_feedback:  # Z Phi_0: P on the batch's distinct columns, or on all
            if sparse or 2 * rows.ucols.numel() <= self.n_cols:
                table = LatentRows.apply(self.phi0, keys, rows.ucols, sparse)
                g = RowBag.apply(table, rows, False, True, False)
            else:  # most columns touched: all of P, whose gradient is dense anyway
                g = RowBag.apply(self.latent_table(keys), rows, False, False, False)
            g = g + self.beta0
        return h, g

    def posterior(
        self, h: Tensor | None, g: Tensor | None, keys: Tensor, rows: RowSlice
    ) -> tuple[Tensor, Tensor]:
        """From first-layer pre-activations to the posterior (mean, variance) of each row."""
        m = self.first
        s_mu, s_var = [], []
        if h is not None:
            h = F.relu(h)
            s_mu.append(self.obs_rest(h[:, :m]))  # Eq. 8: H_{L'+1}
            if self.separate_variance:
                s_var.append(self.obs_rest_var(h[:, m:]))
        if g is not None:
            g = F.relu(g)
            s_mu.append(self.lat_rest(g[:, :m]))  # G_{L'+1}
            if self.separate_variance:
                s_var.append(self.lat_rest_var(g[:, m:]))
        s = torch.cat(s_mu, dim=1) if len(s_mu) > 1 else s_mu[0]  # S = [H; G]
        if self.fused_heads:  # one product for both heads (L = 0)
            lin_mu, lin_var = self.head_mu[0], self.head_var[0]
            both = F.linear(
                s,
                torch.cat([lin_mu.weight, lin_var.weight]),
                torch.cat([lin_mu.bias, lin_var.bias]),
            )
            mu, var_logit = both[:, : self.dim], both[:, self.dim :]
        else:
            s_v = s if not self.separate_variance else torch.cat(s_var, dim=1)
            mu, var_logit = self.head_mu(s), self.head_var(s_v)
        if self.attention is not None:  # Eq. 9-10
            return self.attention(mu, var_logit, keys, rows)
        return mu, bounded_variance(var_logit, self.var_floor)

    def forward(
        self, rows: RowSlice, keys: Tensor, table: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.flat_params is not None and torch.is_grad_enabled():
            raise RuntimeError(
                "this encoder's parameters are trained as one flat tensor "
                "(CrossFeedbackVAE.optimizer_parameters), whose gradient only the model's loss "
                "makes: encode under torch.no_grad(), or build the optimiser from "
                "net.parameters() instead of net.optimizer_parameters()"
            )
        if self.fusable and rows.has_transpose and table is None and torch.is_grad_enabled():
            if not keys.requires_grad:  # training blocks: one autograd node (models/fused.py)
                return fused_encode(self, rows, keys)
        h, g = self.first_layers(rows, keys, table)
        return self.posterior(h, g, keys, rows)
