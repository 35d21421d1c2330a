"""One side's encoder in training as a single autograd node (issue 21): the same mathematics as
:class:`~xfvae.models.encoder.SideEncoder`'s general path (Eq. 8-10), with a hand-written backward.

Why: at the paper's block sizes (100 x 100) a step is bound by the number of operator calls, not by
arithmetic. Through autograd every small operation of the encoder (slices, concatenations, bias
adds, the attention's sparse products) is a node with its own backward operators; here the whole
encoder is a few dozen calls forward and backward, and what does not depend on the parameters is
built once: the bag indices once per batch (kept in ``RowSlice.cache``, i.e. once per run, since
the block plan hands out the same slice every epoch), the other side's embeddings at each rated
entry once per epoch (the latent inputs are fixed during an epoch, Algorithm 1 step 6).

Covers the configurations most runs use: L' = L = 0 (one-layer input MLPs, linear heads), the
variance sharing the input MLPs, dense gradients, attention ``none`` or ``local`` (softmax or ratio,
concat or add merge), rows with transposes (training blocks), keys without gradient. Everything else
takes the general path (``SideEncoder.fusable``); ``tests/test_xfvae_equivalence.py`` checks both
against the dense reference that builds Z.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xfvae.data.batches import RowSlice


class _Layout:
    """The index tensors of one batch of rows for the fused encoder, built once (int64).

    Forward: one bag per (row, part), parts = observed input (X W_0, weighted by the ratings) and
    latent input (Z Phi_0 = the sum of P_j over the rated j), over the table
    ``[W_0; P; alpha_0; beta_0]``; each bag ends with its part's bias row, so the bag sum is the
    first layer's pre-activation. Bag b * parts + p is row b's part p: the output viewed as
    [B, parts * M] is S = [H; G] before the ReLU. Backward: one bag per table row, over the rows'
    gradients (a gather over the entries ordered by column), giving the whole table's gradient.
    """

    def __init__(self, rows: RowSlice, n_cols: int, obs: bool, lat: bool, pairs: bool):
        i64, dev = torch.int64, rows.cols.device
        cols, seg = rows.cols.to(i64), rows.seg.to(i64)
        offsets, t_seg = rows.offsets.to(i64), rows.t_seg.to(i64)
        b, nnz = rows.n_rows, cols.numel()
        nnz_t = torch.full((1,), nnz, dtype=i64, device=dev)
        self.lengths = torch.diff(offsets, append=nnz_t)
        self.kinds = [k for k, on in (("obs", obs), ("lat", lat)) if on]
        n_p = len(self.kinds)
        arange_b = torch.arange(b, device=dev)
        within = torch.arange(nnz, device=dev) - offsets.index_select(0, seg)
        row_start = n_p * (offsets + arange_b)  # row b's bags: n_p * (entries before + bias rows)
        self.idx = torch.empty(n_p * (nnz + b), dtype=i64, device=dev)
        self.obs_pos = None
        starts = []
        for p in range(n_p):
            start = row_start + p * (self.lengths + 1)
            pos = start.index_select(0, seg) + within
            self.idx[pos] = cols + p * n_cols
            self.idx[start + self.lengths] = n_p * n_cols + p  # the bias row
            if self.kinds[p] == "obs":
                self.obs_pos = pos
            starts.append(start)
        self.offsets = torch.stack(starts, 1).reshape(-1)
        # backward bags: table row (part p, column j) <- entries of column j; bias rows <- all rows
        counts = torch.diff(rows.t_offsets.to(i64), append=nnz_t)
        sorted_cols = rows.ucols.repeat_interleave(counts, output_size=nnz)
        col_start = torch.searchsorted(sorted_cols, torch.arange(n_cols, device=dev))
        self.idx_t = torch.cat(
            [t_seg * n_p + p for p in range(n_p)] + [arange_b * n_p + p for p in range(n_p)]
        )
        self.offsets_t = torch.cat(
            [col_start + p * nnz for p in range(n_p)]
            + [n_p * nnz + b * torch.arange(n_p, device=dev)]
        )
        self.cols, self.n_rows, self.nnz = cols, b, nnz
        self.pair_lengths = torch.cat([self.lengths, self.lengths])
        if pairs:  # local attention: two queries per row (mean, variance), query-major pairs
            self.query_row = torch.cat([seg, seg + b])  # the row of Q ([2B, K]) of each pair
            self.pair_entry = torch.arange(nnz, device=dev).repeat(2)
            self.pair_offsets = torch.cat([offsets, offsets + nnz])  # bags (query, row)
        self._vals, self._t_vals = rows.vals, rows.t_vals
        self._typed: dict[torch.dtype, tuple[Tensor, Tensor, Tensor]] = {}
        self._keys: tuple | None = None

    def weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(forward bag weights, backward bag weights, empty-row mask) in ``dtype``."""
        if dtype not in self._typed:
            w = torch.ones(self.idx.numel(), dtype=dtype, device=self.idx.device)
            w_t = torch.ones(self.idx_t.numel(), dtype=dtype, device=self.idx.device)
            if self.obs_pos is not None:  # X W_0: the entries weighted by their ratings
                w[self.obs_pos] = self._vals.to(dtype)
                w_t[: self.nnz] = self._t_vals.to(dtype)
            empty = (self.pair_lengths == 0).to(dtype).view(-1, 1)
            self._typed[dtype] = (w, w_t, empty)
        return self._typed[dtype]

    def keys_at_entries(self, keys: Tensor) -> Tensor:
        """The other side's embedding of each entry with a 1 appended ([nnz, K + 1]; the 1 sums
        the attention weights): recomputed when the keys change (once per epoch in training).
        Memory: (K + 1) floats per rating of the side."""
        hit = self._keys
        if hit is None or hit[0] is not keys or hit[1] != keys._version:
            vk = keys.index_select(0, self.cols)
            self._keys = hit = (keys, keys._version, torch.cat([vk, vk.new_ones(self.nnz, 1)], 1))
        return hit[2]

    @staticmethod
    def of(rows: RowSlice, n_cols: int, obs: bool, lat: bool, pairs: bool) -> _Layout:
        key = ("fused", n_cols, obs, lat, pairs)
        if key not in rows.cache:
            rows.cache[key] = _Layout(rows, n_cols, obs, lat, pairs)
        return rows.cache[key]


@functools.lru_cache(maxsize=64)
def const(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-dim constant: arithmetic with it is one operator call (a Python float is converted to
    a tensor at every call)."""
    return torch.tensor(value, dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def const_ones(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A vector of n ones (row sums of [R, n] products as one matrix-vector product)."""
    return torch.ones(n, dtype=dtype, device=device)


def _variance(sig: Tensor, floor: float) -> Tensor:
    """``bounded_variance`` from the sigmoid: floor + (1 - floor) sigmoid = lerp(sigmoid, 1, floor)."""
    return torch.lerp(sig, const(1.0, sig.dtype, sig.device), floor) if floor > 0 else sig


def _sigmoid_grad(grad: Tensor, sig: Tensor, floor: float) -> Tensor:
    """The gradient of a logit from that of ``_variance(sigmoid(logit), floor)``."""
    out = torch.ops.aten.sigmoid_backward(grad, sig)
    return out.mul_(const(1.0 - floor, out.dtype, out.device)) if floor > 0 else out


def fused_params(enc) -> list[Tensor]:
    """The encoder's parameters in the order :class:`FusedEncoder` takes them."""
    out = []
    if enc.use_data_input:
        out += [enc.w0, enc.alpha0]
    if enc.use_cross_feedback:
        out += [enc.phi0, enc.beta0]
    heads = (enc.head_mu[0], enc.head_var[0])
    out += [heads[0].weight, heads[0].bias, heads[1].weight, heads[1].bias]
    att = enc.attention
    if att is not None:
        out += [att.theta, att.lam]
        if att.merge == "concat":
            out += [att.merge_mu.weight, att.merge_mu.bias]
            out += [att.merge_var.weight, att.merge_var.bias]
    return out


def fused_encode(enc, rows: RowSlice, keys: Tensor) -> tuple[Tensor, Tensor]:
    return FusedEncoder.apply(enc, rows, keys, *fused_params(enc))


class FusedEncoder(torch.autograd.Function):
    """(mean, variance) of a batch of rows with transposes; see the module docstring.
    ``params``: the encoder's parameters in :func:`fused_params` order."""

    @staticmethod
    def forward(ctx, enc, rows: RowSlice, keys: Tensor, *params: Tensor):
        n, k = keys.shape
        m = enc.first
        att = enc.attention
        lay = _Layout.of(rows, n, enc.use_data_input, enc.use_cross_feedback, att is not None)
        w, _, empty = lay.weights(params[0].dtype)
        it = iter(params)
        tables, biases = [], []
        if enc.use_data_input:  # Eq. 8, first layer: X W_0 + alpha_0
            w0, alpha0 = next(it), next(it)
            tables.append(w0)
            biases.append(alpha0.view(1, m))
        if enc.use_cross_feedback:  # latent first layer: Z Phi_0 + beta_0 = sum of P_j + beta_0
            phi0, beta0 = next(it), next(it)
            flat, offs = _flat_indices(n, k, keys.device)
            p_all = F.embedding_bag(  # P_j = v_j^T Phi_0[j] for all N entries
                flat, phi0.view(n * k, m), offs, mode="sum", per_sample_weights=keys.reshape(-1)
            )
            tables.append(p_all)
            biases.append(beta0.view(1, m))
        b, n_p = lay.n_rows, len(lay.kinds)
        table = torch.cat(tables + biases)
        pre = F.embedding_bag(lay.idx, table, lay.offsets, mode="sum", per_sample_weights=w)
        s = pre.view(b, n_p * m).clamp_min(0)  # S = [H; G] (ReLU)
        w_mu, b_mu, w_var, b_var = next(it), next(it), next(it), next(it)
        w_h, b_h = torch.cat([w_mu, w_var]), torch.cat([b_mu, b_var])
        both = torch.addmm(b_h, s, w_h.t())  # the heads: [mean | variance logit], [B, 2K]
        floor = enc.var_floor
        ctx.enc, ctx.lay, ctx.k, ctx.n_p = enc, lay, k, n_p
        if att is None:
            sig = torch.sigmoid(both[:, k:])
            ctx.save_for_backward(keys, s, w_h, sig)
            return both[:, :k], _variance(sig, floor)
        # Eq. 9-10, local: each row's mean and variance attend to the entries it rated
        theta, lam = next(it), next(it)
        sig0 = torch.sigmoid(both[:, k:])
        x2 = torch.stack([both[:, :k], _variance(sig0, floor)])  # [2, B, K]: mu_i, sigma_i^2
        th = torch.stack([theta, lam])
        if att.norm == "softmax":
            th.mul_(const(1.0 / math.sqrt(k), th.dtype, th.device))
        q = torch.bmm(x2, th).view(2 * b, k)  # Eq. 9 queries mu_i Theta, sigma_i^2 Lambda
        vk1 = lay.keys_at_entries(keys)
        ones = const_ones(k, q.dtype, q.device)
        # Eq. 9 numerators at the rated entries, [2 nnz] (query-major)
        qv = q.index_select(0, lay.query_row).view(2, lay.nnz, k).mul_(vk1[:, :k])
        e = torch.mv(qv.view(2 * lay.nnz, k), ones)
        if att.norm == "softmax":  # minus the row max: stability only
            peak = torch.segment_reduce(e, "max", lengths=lay.pair_lengths, unsafe=True)
            e = e.sub_(peak.index_select(0, lay.query_row)).exp_()
        num_den = F.embedding_bag(  # [2B, K + 1]: sum_j e_ij v_j and sum_j e_ij
            lay.pair_entry, vk1, lay.pair_offsets, mode="sum", per_sample_weights=e
        )
        den = num_den[:, k:] + empty  # rows without entries: c_i = 0
        c = num_den[:, :k] / den  # Eq. 10, [2B, K]
        direct = both.view(b, 2, k).transpose(0, 1)  # [2, B, K]: mu, logit
        if att.merge == "concat":  # mu := Linear([mu; c]), logit := Linear([logit; c'])
            y2 = torch.cat([direct, c.view(2, b, k)], 2)  # [2, B, 2K]
            w_mu_m, b_mu_m, w_var_m, b_var_m = next(it), next(it), next(it), next(it)
            w_m = torch.stack([w_mu_m, w_var_m])
            b_m = torch.stack([b_mu_m, b_var_m]).unsqueeze(1)
            out = torch.baddbmm(b_m, y2, w_m.transpose(1, 2))  # [2, B, K]
        else:  # add: mu + c, logit + c'
            y2 = w_m = None
            out = direct + c.view(2, b, k)
        mu, sig = out[0], torch.sigmoid(out[1])
        ctx.save_for_backward(keys, s, w_h, sig, sig0, x2, th, e, den, c, y2, w_m)
        return mu, _variance(sig, floor)

    @staticmethod
    def backward(ctx, d_mu: Tensor | None, d_var: Tensor | None):
        enc, lay, k, n_p = ctx.enc, ctx.lay, ctx.k, ctx.n_p
        keys, s, w_h, sig, *att_saved = ctx.saved_tensors
        floor, att = enc.var_floor, enc.attention
        d_mu = torch.zeros_like(sig) if d_mu is None else d_mu
        d_var = torch.zeros_like(sig) if d_var is None else d_var
        d_logit = _sigmoid_grad(d_var, sig, floor)
        b = lay.n_rows
        grads = []
        if att is None:
            d_both = torch.cat([d_mu, d_logit], 1)
        else:
            sig0, x2, th, e, den, c, y2, w_m = att_saved
            if att.merge == "concat":
                d_out = torch.stack([d_mu, d_logit])  # [2, B, K]
                d_y2 = torch.bmm(d_out, w_m)  # [2, B, 2K]
                d_wm = torch.bmm(d_out.transpose(1, 2), y2)
                d_bm = d_out.sum(1)
                d_direct, d_c = d_y2[:, :, :k], d_y2[:, :, k:].reshape(2 * b, k)
                grads_merge = [d_wm[0], d_bm[0], d_wm[1], d_bm[1]]
            else:
                d_direct = torch.stack([d_mu, d_logit])
                d_c, grads_merge = d_direct.view(2 * b, k), []
            # Eq. 10 backward (as flash attention): ds_ij = a_ij (dc_i . v_j - dc_i . c_i)
            vk1 = lay.keys_at_entries(keys)
            ones = const_ones(k, c.dtype, c.device)
            delta = torch.mv(d_c * c, ones)  # [2B]
            dv = d_c.index_select(0, lay.query_row).view(2, lay.nnz, k).mul_(vk1[:, :k])
            ds = torch.mv(dv.view(2 * lay.nnz, k), ones)  # [2 nnz]
            ds = ds.sub_(delta.index_select(0, lay.query_row)).div_(
                den.view(-1).index_select(0, lay.query_row)
            )
            if att.norm == "softmax":
                ds = ds.mul_(e)
            d_q = F.embedding_bag(  # [2B, K]: sum_j ds_ij v_j
                lay.pair_entry, vk1, lay.pair_offsets, mode="sum", per_sample_weights=ds
            )[:, :k].reshape(2, b, k)
            d_th = torch.bmm(x2.transpose(1, 2), d_q)
            if att.norm == "softmax":
                d_th.mul_(const(1.0 / math.sqrt(k), d_th.dtype, d_th.device))
            d_x2 = torch.bmm(d_q, th.transpose(1, 2))
            d_x2 = torch.stack([d_x2[0], _sigmoid_grad(d_x2[1], sig0, floor)])
            d_both = (d_direct + d_x2).transpose(0, 1).reshape(b, 2 * k)
            grads_att = [d_th[0], d_th[1], *grads_merge]
        d_wh = d_both.t().mm(s)
        d_bh = d_both.sum(0)
        d_s = torch.ops.aten.threshold_backward(d_both.mm(w_h), s, 0)
        _, w_t, _ = lay.weights(d_s.dtype)
        m = s.shape[1] // n_p
        d_table = F.embedding_bag(
            lay.idx_t, d_s.view(b * n_p, m), lay.offsets_t, mode="sum", per_sample_weights=w_t
        )  # [n_p N + n_p, M]: the gradient of [W_0; P; alpha_0; beta_0]
        n = keys.shape[0]
        for p, kind in enumerate(lay.kinds):
            part, bias = d_table[p * n : (p + 1) * n], d_table[n_p * n + p]
            if kind == "lat":  # dPhi_0[j, k] = v_jk dP_j: bags of one row each
                flat, _, entry = _table_indices(n, keys.shape[1], keys.device)
                part = F.embedding_bag(
                    entry, part, flat, mode="sum", per_sample_weights=keys.reshape(-1)
                ).view(n, keys.shape[1], m)
            grads += [part, bias]
        grads += [d_wh[:k], d_bh[:k], d_wh[k:], d_bh[k:]]
        if att is not None:
            grads += grads_att
        return (None, None, None, *grads)


@functools.lru_cache(maxsize=32)
def _table_indices(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For bags of the K rows of each of n table entries: (row of each (entry, k), offsets of the
    bags, entry of each (entry, k)); made once per table, sliced for fewer entries."""
    flat = torch.arange(n * k, device=device)
    return flat, flat[::k].clone(), torch.arange(n, device=device).repeat_interleave(k)


def _flat_indices(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    flat, offsets, _ = _table_indices(n, k, device)
    return flat, offsets


class BlockElbo(torch.autograd.Function):
    """-Eq. 7 on one block, divided by the model's ``loss_scale``, as one autograd node.

    Reparametrisation u = mu_u + sigma_u eps_u (and v likewise); the block's predictions are the
    entries of u v^T (+ the offset) at its observed ratings; squared error on those; the KL terms
    of the block's users and items weighted per row (``kl_u`` / ``kl_v``: beta / blocks per entity
    where the entity has training ratings, 0 otherwise). Returns (loss, squared error sum).
    """

    @staticmethod
    def forward(ctx, net, rows_in, mu_u, var_u, eps_u, mu_v, var_v, eps_v, *biases):
        users, items, obs_u, obs_i, ratings = rows_in
        sd_u, sd_v = var_u.sqrt(), var_v.sqrt()
        u = torch.addcmul(mu_u, sd_u, eps_u)  # reparametrisation trick
        v = torch.addcmul(mu_v, sd_v, eps_v)
        flat = torch.add(obs_i, obs_u, alpha=v.shape[0])  # position of each rating in u v^T
        if flat.dtype != torch.int64:
            flat = flat.long()
        full = torch.mm(u, v.t())
        if biases:  # offset "biases": + user bias + item bias
            b_u, b_i = biases
            full += b_u.index_select(0, users).unsqueeze(1) + b_i.index_select(0, items)
        residual = torch.sub(ratings, full.view(-1).index_select(0, flat)).sub_(net.mean_rating)
        sse = torch.dot(residual, residual)  # Eq. 7: -E[log p(X | U, V)] + const
        # Eq. 7: the KL sums, each entity's share of its blocks (weights 0.5 beta / blocks)
        w_u = net.user_seen.index_select(0, users).mul_(_kl_weight(net, "user", mu_u))
        w_v = net.item_seen.index_select(0, items).mul_(_kl_weight(net, "item", mu_v))
        kl_u = torch.dot(kl_terms(mu_u, var_u, net.prior_var).sum(1), w_u)
        kl_v = torch.dot(kl_terms(mu_v, var_v, net.prior_var).sum(1), w_v)
        inv_scale = const(1.0 / net.loss_scale, sse.dtype, sse.device)
        total = torch.add(sse, kl_u).add_(kl_v).mul_(inv_scale)
        ctx.mark_non_differentiable(sse)
        ctx.prior_var, ctx.users, ctx.items = net.prior_var, users, items
        ctx.save_for_backward(u, v, mu_u, var_u, eps_u, sd_u, mu_v, var_v, eps_v, sd_v, flat,
                              residual, w_u, w_v, inv_scale, *biases)  # fmt: skip
        ctx.has_biases = bool(biases)
        return total, sse

    @staticmethod
    def backward(ctx, g: Tensor, _):
        (
            u,
            v,
            mu_u,
            var_u,
            eps_u,
            sd_u,
            mu_v,
            var_v,
            eps_v,
            sd_v,
            flat,
            residual,
            w_u,
            w_v,
            inv,
            *b,
        ) = ctx.saved_tensors
        gs = g * inv
        d_pred = residual.mul(gs).mul_(const(-2.0, gs.dtype, gs.device))
        d_full = u.new_zeros(u.shape[0] * v.shape[0]).index_add_(0, flat, d_pred)
        d_full = d_full.view(u.shape[0], v.shape[0])
        du, dv = d_full.mm(v), d_full.t().mm(u)
        p = ctx.prior_var
        grads = []
        for d, mu, var, eps, sd, w in ((du, mu_u, var_u, eps_u, sd_u, w_u), (dv, mu_v, var_v, eps_v, sd_v, w_v)):  # fmt: skip
            col = w.mul(gs).unsqueeze(1)
            d_mu = torch.addcmul(d, col, mu, value=2.0 / p)  # KL: d/dmu = mu / p
            d_var = torch.sub(const(1.0 / p, var.dtype, var.device), var.reciprocal()).mul_(col)
            d_var = torch.addcmul(d_var, d, eps.div(sd), value=0.5)  # through sigma = sqrt(var)
            grads += [d_mu, d_var, None]
        d_biases = []
        if ctx.has_biases:
            users, items = ctx.users, ctx.items
            d_biases = [
                b[0].new_zeros(b[0].shape).index_copy_(0, users, d_full.sum(1)),
                b[1].new_zeros(b[1].shape).index_copy_(0, items, d_full.sum(0)),
            ]
        return (None, None, *grads, *d_biases)


def kl_terms(mu: Tensor, var: Tensor, prior_var: float) -> Tensor:
    """2 KL[N(mu, var) || N(0, prior_var)] per coordinate: var/p + mu^2/p - 1 - log(var/p)."""
    if prior_var == 1.0:
        t = torch.addcmul(var, mu, mu)
        return t.sub_(var.log()).sub_(const(1.0, t.dtype, t.device))
    inv_p = const(1.0 / prior_var, var.dtype, var.device)
    t = torch.addcmul(var, mu, mu).mul_(inv_p)
    return t.sub_(var.mul(inv_p).log_()).sub_(const(1.0, t.dtype, t.device))


def _kl_weight(net, side: str, like: Tensor) -> Tensor:
    """0.5 beta / (blocks per entity) of one side (Eq. 7's KL weight per block)."""
    beta, blocks = (
        (net.beta_u, net.blocks_per_user) if side == "user" else (net.beta_v, net.blocks_per_item)
    )
    return const(0.5 * beta / blocks, like.dtype, like.device)
