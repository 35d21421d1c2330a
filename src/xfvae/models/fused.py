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

The encoder's forward and backward are plain functions (:func:`encode_forward`,
:func:`encode_backward`) on views of one flat tensor laid out by :func:`flat_layout`: the
per-parameter node :class:`FusedEncoder` gathers the parameters into such a tensor, and the
whole-block node of :mod:`xfvae.models.fused_block` views the model's flat parameter tensor
directly and writes the gradient into one flat tensor (``out=``), one group per product.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from xfvae.data.batches import RowSlice
from xfvae.models.flat_params import FlatLayout


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

    def keys_at_entries(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """The other side's embedding of each entry with a 1 appended ([nnz, K + 1]; the 1 sums
        the attention weights), and its first K columns: recomputed when the keys change (once
        per epoch in training). Memory: (K + 1) floats per rating of the side."""
        hit = self._keys
        if hit is None or hit[0] is not keys or hit[1] != keys._version:
            vk = keys.index_select(0, self.cols)
            vk1 = torch.cat([vk, vk.new_ones(self.nnz, 1)], 1)
            self._keys = hit = (keys, keys._version, vk1, vk1[:, : keys.shape[1]])
        return hit[2], hit[3]

    @staticmethod
    def of(rows: RowSlice, n_cols: int, obs: bool, lat: bool, pairs: bool) -> _Layout:
        key = ("fused", n_cols, obs, lat, pairs)
        if key not in rows.cache:
            rows.cache[key] = _Layout(rows, n_cols, obs, lat, pairs)
        return rows.cache[key]


def bag_sum(idx: Tensor, table: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
    """``F.embedding_bag(idx, table, offsets, mode="sum", per_sample_weights=weights)`` without
    autograd (inside the fused nodes): the kernel called directly, a third of the operator calls
    of the functional (which takes the slower autograd kernel whenever the table is a parameter)."""
    return torch.ops.aten._embedding_bag_forward_only(
        table, idx, offsets, False, 0, False, weights, False, -1
    )[0]


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


def flat_layout(enc, with_phi0: bool) -> tuple[list[Tensor], list[tuple[str, int, tuple]]]:
    """The encoder's parameters in the order of its flat layout, and the layout's groups: the
    runs the fused step views as one tensor (both heads' weights as [2K, S], Theta and Lambda as
    [2, K, K], ...; :class:`~xfvae.models.flat_params.FlatLayout`). ``with_phi0``: include Phi_0
    (most of the values; :class:`FusedEncoder` takes it as a tensor of its own)."""
    n, k, m = enc.n_cols, enc.dim, enc.first
    params, groups = [], []
    if enc.use_data_input:
        params.append(enc.w0)
        groups.append(("w0", 1, (n, m)))
    if enc.use_cross_feedback and with_phi0:
        params.append(enc.phi0)
        groups.append(("phi0", 1, (n, k, m)))
    biases = [enc.alpha0] if enc.use_data_input else []
    biases += [enc.beta0] if enc.use_cross_feedback else []
    params += biases
    groups.append(("bias0", len(biases), (len(biases), m)))
    h_mu, h_var = enc.head_mu[0], enc.head_var[0]
    params += [h_mu.weight, h_var.weight, h_mu.bias, h_var.bias]
    groups += [("w_h", 2, (2 * k, h_mu.weight.shape[1])), ("b_h", 2, (2 * k,))]
    att = enc.attention
    if att is not None:
        params += [att.theta, att.lam]
        groups.append(("th", 2, (2, k, k)))
        if att.merge == "concat":
            params += [att.merge_mu.weight, att.merge_var.weight]
            params += [att.merge_mu.bias, att.merge_var.bias]
            groups += [("w_m", 2, (2, k, 2 * k)), ("b_m", 2, (2, 1, k))]
    return params, groups


def transposes(views: dict[str, Tensor]) -> dict[str, Tensor]:
    """The transposes (last two dimensions) of the matrices among ``views``."""
    return {k: t.transpose(-1, -2) for k, t in views.items() if t.dim() >= 2}


def fused_encode(enc, rows: RowSlice, keys: Tensor) -> tuple[Tensor, Tensor]:
    phi0 = (enc.phi0,) if enc.use_cross_feedback else ()
    return FusedEncoder.apply(enc, rows, keys, *flat_layout(enc, False)[0], *phi0)


def encode_forward(enc, rows: RowSlice, keys: Tensor, v: dict, v_t: dict):
    """(mean, variance, state for :func:`encode_backward`) of a batch of rows with transposes.
    ``v`` / ``v_t``: the groups of :func:`flat_layout` (with ``phi0`` [N, K, M] if the encoder has
    the latent input) and their transposes."""
    n, k = keys.shape
    m = enc.first
    att = enc.attention
    lay = _Layout.of(rows, n, enc.use_data_input, enc.use_cross_feedback, att is not None)
    w, _, empty = lay.weights(v["bias0"].dtype)
    tables = []
    if enc.use_data_input:  # Eq. 8, first layer: X W_0 + alpha_0
        tables.append(v["w0"])
    if enc.use_cross_feedback:  # latent first layer: Z Phi_0 + beta_0 = sum of P_j + beta_0
        flat, offs = _flat_indices(n, k, keys.device)
        # P_j = v_j^T Phi_0[j] for all N entries
        tables.append(bag_sum(flat, v["phi0"].view(n * k, m), offs, keys.view(-1)))
    b, n_p = lay.n_rows, len(lay.kinds)
    table = torch.cat(tables + [v["bias0"]])  # [W_0; P; alpha_0; beta_0]
    s = bag_sum(lay.idx, table, lay.offsets, w).view(b, n_p * m).clamp_min(0)  # S = [H; G]
    w_h = v["w_h"]  # [Psi_mu; Psi_var]
    both = torch.addmm(v["b_h"], s, v_t["w_h"])  # the heads: [mean | variance logit], [B, 2K]
    floor = enc.var_floor
    if att is None:
        sig = torch.sigmoid(both[:, k:])
        return both[:, :k], _variance(sig, floor), (lay, keys, s, w_h, sig)
    # Eq. 9-10, local: each row's mean and variance attend to the entries it rated
    sig0 = torch.sigmoid(both[:, k:])
    x2 = torch.cat([both[:, :k], _variance(sig0, floor)]).view(2, b, k)  # mu_i, sigma_i^2
    th = v["th"]  # [Theta; Lambda]
    if att.norm == "softmax":
        th = th * const(1.0 / math.sqrt(k), th.dtype, th.device)
    q = torch.bmm(x2, th).view(2 * b, k)  # Eq. 9 queries mu_i Theta, sigma_i^2 Lambda
    vk1, vk = lay.keys_at_entries(keys)
    ones = const_ones(k, q.dtype, q.device)
    # Eq. 9 numerators at the rated entries, [2 nnz] (query-major)
    qv = q.index_select(0, lay.query_row).view(2, lay.nnz, k).mul_(vk)
    e = torch.mv(qv.view(2 * lay.nnz, k), ones)
    if att.norm == "softmax":  # minus the row max: stability only
        peak = torch.segment_reduce(e, "max", lengths=lay.pair_lengths, unsafe=True)
        e = e.sub_(peak.index_select(0, lay.query_row)).exp_()
    # [2B, K + 1]: sum_j e_ij v_j and sum_j e_ij
    num_den = bag_sum(lay.pair_entry, vk1, lay.pair_offsets, e)
    den = num_den[:, k:] + empty  # rows without entries: c_i = 0
    c = num_den[:, :k] / den  # Eq. 10, [2B, K]
    direct = both.view(b, 2, k).transpose(0, 1)  # [2, B, K]: mu, logit
    if att.merge == "concat":  # mu := Linear([mu; c]), logit := Linear([logit; c'])
        y2 = torch.cat([direct, c.view(2, b, k)], 2)  # [2, B, 2K]
        w_m = v["w_m"]
        out = torch.baddbmm(v["b_m"], y2, v_t["w_m"])  # [2, B, K]
    else:  # add: mu + c, logit + c'
        y2 = w_m = None
        out = direct + c.view(2, b, k)
    mu, sig = out[0], torch.sigmoid(out[1])
    return mu, _variance(sig, floor), (lay, keys, s, w_h, sig, sig0, x2, th, e, den, c, y2, w_m)


def encode_backward(enc, state, d_mu: Tensor, d_var: Tensor, g: dict) -> Tensor | None:
    """The gradient of :func:`encode_forward`'s parameters: written into ``g`` (views of a flat
    gradient, :func:`flat_layout`'s groups; each group is overwritten whole), Phi_0's into
    ``g["phi0"]`` [N, K, M] if ``g`` has that group, else returned."""
    lay, keys, s, w_h, sig, *att_saved = state
    n, k = keys.shape
    n_p = len(lay.kinds)
    floor, att = enc.var_floor, enc.attention
    d_logit = _sigmoid_grad(d_var, sig, floor)
    b = lay.n_rows
    if att is None:
        d_both = torch.cat([d_mu, d_logit], 1)
    else:
        sig0, x2, th, e, den, c, y2, w_m = att_saved
        if att.merge == "concat":
            d_out = torch.cat([d_mu, d_logit]).view(2, b, k)
            d_y2 = torch.bmm(d_out, w_m)  # [2, B, 2K]
            torch.bmm(d_out.transpose(1, 2), y2, out=g["w_m"])
            torch.sum(d_out, 1, keepdim=True, out=g["b_m"])
            d_direct, d_c = d_y2[:, :, :k], d_y2[:, :, k:].reshape(2 * b, k)
        else:
            d_direct = torch.cat([d_mu, d_logit]).view(2, b, k)
            d_c = d_direct.view(2 * b, k)
        # Eq. 10 backward (as flash attention): ds_ij = a_ij (dc_i . v_j - dc_i . c_i)
        vk1, vk = lay.keys_at_entries(keys)
        ones = const_ones(k, c.dtype, c.device)
        delta = torch.mv(d_c * c, ones)  # [2B]
        dv = d_c.index_select(0, lay.query_row).view(2, lay.nnz, k).mul_(vk)
        ds = torch.mv(dv.view(2 * lay.nnz, k), ones)  # [2 nnz]
        ds = ds.sub_(delta.index_select(0, lay.query_row)).div_(
            den.view(-1).index_select(0, lay.query_row)
        )
        if att.norm == "softmax":
            ds = ds.mul_(e)
        # [2B, K]: sum_j ds_ij v_j
        d_q = bag_sum(lay.pair_entry, vk1, lay.pair_offsets, ds)[:, :k].reshape(2, b, k)
        d_th = torch.bmm(x2.transpose(1, 2), d_q, out=g["th"])
        if att.norm == "softmax":
            d_th.mul_(const(1.0 / math.sqrt(k), d_th.dtype, d_th.device))
        d_x2 = torch.bmm(d_q, th.transpose(1, 2))
        d_x2[1] = _sigmoid_grad(d_x2[1], sig0, floor)
        d_both = (d_direct + d_x2).transpose(0, 1).reshape(b, 2 * k)
    torch.mm(d_both.t(), s, out=g["w_h"])
    torch.sum(d_both, 0, out=g["b_h"])
    d_s = torch.ops.aten.threshold_backward(d_both.mm(w_h), s, 0)
    _, w_t, _ = lay.weights(d_s.dtype)
    m = s.shape[1] // n_p
    # [n_p N + n_p, M]: the gradient of [W_0; P; alpha_0; beta_0]
    d_table = bag_sum(lay.idx_t, d_s.view(b * n_p, m), lay.offsets_t, w_t)
    g["bias0"].copy_(d_table[n_p * n :])
    for p, kind in enumerate(lay.kinds):
        part = d_table[p * n : (p + 1) * n]
        if kind == "obs":
            g["w0"].copy_(part)
        elif "phi0" in g:  # dPhi_0[j, k] = v_jk dP_j
            torch.mul(keys.view(n, k, 1), part.view(n, 1, m), out=g["phi0"])
        else:  # the same as bags of one row each (a fresh tensor, faster)
            flat, _, entry = _table_indices(n, k, keys.device)
            return bag_sum(entry, part, flat, keys.view(-1)).view(n, k, m)
    return None


class FusedEncoder(torch.autograd.Function):
    """(mean, variance) of a batch of rows with transposes, as one autograd node; see the module
    docstring. ``params``: the encoder's parameters in :func:`flat_layout` order (without Phi_0),
    then Phi_0 if the encoder has the latent input. (A model whose optimiser holds one flat tensor
    takes :class:`~xfvae.models.fused_block.FusedBlock` instead.)"""

    @staticmethod
    def forward(ctx, enc, rows: RowSlice, keys: Tensor, *params: Tensor):
        layout = _layout_of(enc)
        phi0 = None
        if enc.use_cross_feedback:
            *params, phi0 = params
        v = layout.split(layout.gather(params))
        if phi0 is not None:
            v["phi0"] = phi0
        mu, var, ctx.state = encode_forward(enc, rows, keys, v, transposes(v))
        ctx.enc, ctx.layout = enc, layout
        return mu, var

    @staticmethod
    def backward(ctx, d_mu: Tensor | None, d_var: Tensor | None):
        sig = ctx.state[4]  # encode_forward's state: (lay, keys, s, w_h, sig, ...)
        d_mu = torch.zeros_like(sig) if d_mu is None else d_mu
        d_var = torch.zeros_like(sig) if d_var is None else d_var
        grad = sig.new_empty(ctx.layout.numel)  # encode_backward writes every group
        d_phi0 = encode_backward(ctx.enc, ctx.state, d_mu, d_var, ctx.layout.split(grad))
        d_phi0 = () if d_phi0 is None else (d_phi0,)
        return (None, None, None, *ctx.layout.split_params(grad), *d_phi0)


def _layout_of(enc) -> FlatLayout:
    params, groups = flat_layout(enc, False)
    key = tuple(p.shape for p in params)
    hit = getattr(enc, "_fused_layout", None)
    if hit is None or hit[0] != key:
        enc._fused_layout = hit = (key, FlatLayout([p.shape for p in params], groups))
    return hit[1]


@functools.lru_cache(maxsize=32)
def _table_indices(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For bags of the K rows of each of n table entries: (row of each (entry, k), offsets of the
    bags, entry of each (entry, k)); made once per table, sliced for fewer entries."""
    flat = torch.arange(n * k, device=device)
    return flat, flat[::k].clone(), torch.arange(n, device=device).repeat_interleave(k)


def _flat_indices(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    flat, offsets, _ = _table_indices(n, k, device)
    return flat, offsets
