"""The sparse encoder path equals a dense reference that builds the latent input Z (paper 3.2).

The reference materialises Z_U (n_rows x N*K, the rated entries' embeddings concatenated, zeros
elsewhere) and the dense rating rows, and implements Eq. 8-10 from the paper's formulas with
dense masks; the model never builds Z. Outputs and gradients must agree to 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xfvae.models.encoder import SideEncoder, slice_rows


def sparse_matrix(n_rows: int, n_cols: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[0] = False  # a row without ratings
    mask[1, :] = True  # a row that rated everything
    vals = rng.integers(1, 6, size=(n_rows, n_cols)).astype(np.float64)
    m = sp.csr_matrix(np.where(mask, vals, 0.0))
    m.sort_indices()
    return m


def dense_attention(att, mu, var_logit, keys, mask):
    """Eq. 9-10 with dense masks: every (row, entry) pair scored, the indicator as a mask."""
    k = mu.shape[1]

    def context(query):
        scores = query @ keys.T
        if att.scope == "local" and att.norm == "softmax":
            scores = scores / math.sqrt(k)
            scores = scores.masked_fill(~mask, -torch.inf)
            w = torch.softmax(scores, dim=1).nan_to_num(0.0)  # rows without entries: no weights
        elif att.scope == "local":
            s = scores * mask
            has = mask.any(1, keepdim=True)  # rows without entries: no weights
            w = s / torch.where(has, s.sum(1, keepdim=True), torch.ones_like(s[:, :1]))
        elif att.norm == "softmax":
            w = torch.softmax(scores / math.sqrt(k), dim=1)
        else:
            w = scores / scores.sum(1, keepdim=True)
        return w @ keys  # Eq. 10

    c_mu = context(mu @ att.theta)
    c_var = context(torch.sigmoid(var_logit) @ att.lam)
    if att.merge == "concat":
        return att.merge_mu(torch.cat([mu, c_mu], 1)), torch.sigmoid(
            att.merge_var(torch.cat([var_logit, c_var], 1))
        )
    return mu + c_mu, torch.sigmoid(var_logit + c_var)


def dense_reference(enc: SideEncoder, x: torch.Tensor, keys: torch.Tensor):
    """The encoder of paper 3.2 with Z built explicitly (n_rows x N*K)."""
    n_rows, n_cols = x.shape
    mask = x != 0
    z = (mask.unsqueeze(2) * keys.unsqueeze(0)).reshape(n_rows, n_cols * enc.dim)  # Z_U
    parts = []
    if enc.use_data_input:
        h = torch.relu(x @ enc.w0 + enc.alpha0)  # Eq. 8, H_1
        parts.append(enc.obs_rest(h))
    if enc.use_cross_feedback:
        g = torch.relu(z @ enc.phi0.reshape(n_cols * enc.dim, -1) + enc.beta0)  # Z Phi_0
        parts.append(enc.lat_rest(g))
    s = torch.cat(parts, 1)
    mu, var_logit = enc.head_mu(s), enc.head_var(s)
    if enc.attention is None:
        return mu, torch.sigmoid(var_logit)
    return dense_attention(enc.attention, mu, var_logit, keys, mask)


CASES = [
    dict(attention="none"),
    dict(attention="local", attention_norm="softmax"),
    dict(attention="local", attention_norm="ratio"),
    dict(attention="global", attention_norm="softmax"),
    dict(attention="global", attention_norm="ratio", attention_merge="add"),
    dict(attention="local", attention_merge="add", input_layers=2, output_layers=1),
    dict(attention="none", use_data_input=False),
    dict(attention="none", use_cross_feedback=False, input_layers=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_sparse_path_matches_dense_reference(case):
    torch.manual_seed(0)
    n_rows, n_cols, k = 9, 7, 3
    m = sparse_matrix(n_rows, n_cols, 0.4, seed=1)
    kw = dict(
        dim=k,
        inter_dim=4,
        input_layers=0,
        input_width=5,
        output_layers=0,
        output_width=6,
        use_data_input=True,
        use_cross_feedback=True,
        attention_norm="softmax",
        attention_merge="concat",
    )
    kw.update(case)
    enc = SideEncoder(n_cols=n_cols, **kw).double()
    if enc.attention is not None and enc.attention.norm == "ratio":
        with torch.no_grad():  # keep every row's score sum away from 0 (the ratio's pole)
            enc.attention.theta.copy_(torch.eye(k, dtype=torch.float64))
            enc.attention.lam.copy_(torch.eye(k, dtype=torch.float64))
    keys = torch.rand(n_cols, k, dtype=torch.float64) + 0.1  # positive: ratio sums stay positive
    rows = torch.arange(n_rows)
    sl = slice_rows(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data),
        rows,
    )
    x = torch.from_numpy(m.toarray())
    weight = torch.randn(n_rows, k, dtype=torch.float64)

    def outputs_and_grads(fn):
        enc.zero_grad()
        mu, var = fn()
        ((mu * weight).sum() + (var * weight.flip(0)).sum()).backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters()}
        return mu.detach(), var.detach(), grads

    mu_s, var_s, g_s = outputs_and_grads(lambda: enc(sl, keys))
    mu_d, var_d, g_d = outputs_and_grads(lambda: dense_reference(enc, x, keys))
    torch.testing.assert_close(mu_s, mu_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var_s, var_d, atol=1e-5, rtol=1e-5)
    assert g_s.keys() == g_d.keys()
    for name in g_s:
        torch.testing.assert_close(g_s[name], g_d[name], atol=1e-5, rtol=1e-5, msg=name)
    # the check has teeth: the gradients of the first layers are not all zero
    first = "phi0" if enc.use_cross_feedback else "w0"
    assert g_s[first].abs().sum() > 0


def test_slice_rows_matches_scipy():
    m = sparse_matrix(12, 10, 0.3, seed=3)
    rows = torch.tensor([5, 0, 1, 11, 5])
    sl = slice_rows(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data),
        rows,
    )
    sub = m[rows.numpy()]
    assert sl.cols.tolist() == sub.indices.tolist()
    assert sl.vals.tolist() == sub.data.tolist()
    assert sl.offsets.tolist() == sub.indptr[:-1].tolist()
    assert sl.seg.tolist() == np.repeat(np.arange(5), np.diff(sub.indptr)).tolist()
