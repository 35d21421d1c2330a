"""The sparse encoder path equals a dense reference that builds the latent input Z (paper 3.2).

The reference materialises Z_U (n_rows x N*K, the rated entries' embeddings concatenated, zeros
elsewhere) and the dense rating rows, and implements Eq. 8-10 from the paper's formulas with
dense masks; the model never builds Z. Outputs and gradients must agree to 1e-5, on every path
of the model: rows without transposes (prediction), rows with transposes (training blocks: the
latent table on all columns, or on the batch's few distinct columns), row-sparse gradients
(``sparse_update``), and with the variance sharing the input MLPs or having its own networks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xfvae.data.batches import csr_row_slice
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
    """The encoder of paper 3.2 with Z built explicitly (n_rows x N*K).

    Shared input MLPs: S = [H; G] feeds both final MLPs. Separate variance networks (paper 3.2,
    "different sets of weights and biases"): the first layers' columns [M:] are the variance
    network's W_0 / Phi_0, whose own MLPs give S' = [H'; G'] for the variance head.
    """
    n_rows, n_cols = x.shape
    mask = x != 0
    z = (mask.unsqueeze(2) * keys.unsqueeze(0)).reshape(n_rows, n_cols * enc.dim)  # Z_U
    m = enc.first
    mean_parts, var_parts = [], []
    if enc.use_data_input:
        h = torch.relu(x @ enc.w0 + enc.alpha0)  # Eq. 8, H_1 (of each network)
        mean_parts.append(enc.obs_rest(h[:, :m]))
        if enc.separate_variance:
            var_parts.append(enc.obs_rest_var(h[:, m:]))
    if enc.use_cross_feedback:
        g = torch.relu(z @ enc.phi0.reshape(n_cols * enc.dim, -1) + enc.beta0)  # Z Phi_0
        mean_parts.append(enc.lat_rest(g[:, :m]))
        if enc.separate_variance:
            var_parts.append(enc.lat_rest_var(g[:, m:]))
    s = torch.cat(mean_parts, 1)
    s_var = torch.cat(var_parts, 1) if enc.separate_variance else s
    mu, var_logit = enc.head_mu(s), enc.head_var(s_var)
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
# (how the rows are sliced, which rows): rows without transposes (prediction); training rows,
# where all columns are touched (latent table on all N) or few are (table on those only); and
# the row-sparse gradients of sparse_update.
PATHS = {
    "predict": ("plain", None),
    "train-all-columns": ("transposed", None),
    "train-few-columns": ("transposed", "few"),
    "train-sparse-grad": ("sparse", "few"),
}
N_ROWS, N_COLS, DIM = 9, 12, 3


def make_encoder(case: dict, separate_variance: bool, sparse_grad: bool) -> SideEncoder:
    kw = dict(
        dim=DIM,
        inter_dim=4,
        input_layers=0,
        input_width=5,
        output_layers=0,
        output_width=6,
        use_data_input=True,
        use_cross_feedback=True,
        attention_norm="softmax",
        attention_merge="concat",
        separate_variance=separate_variance,
        sparse_grad=sparse_grad,
    )
    kw.update(case)
    enc = SideEncoder(n_cols=N_COLS, **kw).double()
    if enc.attention is not None and enc.attention.norm == "ratio":
        with torch.no_grad():  # keep every row's score sum away from 0 (the ratio's pole)
            enc.attention.theta.copy_(torch.eye(DIM, dtype=torch.float64))
            enc.attention.lam.copy_(torch.eye(DIM, dtype=torch.float64))
    return enc


@pytest.mark.parametrize("separate_variance", [False, True], ids=["shared", "separate-var"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_sparse_path_matches_dense_reference(case, path, separate_variance):
    torch.manual_seed(0)
    kind, subset = PATHS[path]
    m = sparse_matrix(N_ROWS, N_COLS, 0.3, seed=1)
    enc = make_encoder(case, separate_variance, sparse_grad=kind == "sparse")
    keys = torch.rand(N_COLS, DIM, dtype=torch.float64) + 0.1  # positive: ratio sums stay positive
    lengths = np.diff(m.indptr)
    shortest = int(np.argmin(np.where(lengths > 0, lengths, N_COLS + 1)))
    rows = torch.arange(N_ROWS) if subset is None else torch.tensor([0, shortest])
    if kind == "plain":
        sl = slice_rows(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            rows,
        )
    else:
        sl = csr_row_slice(m, rows.numpy())
        few = 2 * sl.ucols.numel() <= N_COLS  # the path taken: table on the distinct columns
        assert few == (subset is not None)
    x = torch.from_numpy(m[rows.numpy()].toarray())
    weight = torch.randn(rows.numel(), DIM, dtype=torch.float64)

    def outputs_and_grads(fn):
        enc.zero_grad(set_to_none=True)
        mu, var = fn()
        ((mu * weight).sum() + (var * weight.flip(0)).sum()).backward()
        grads = {n: p.grad for n, p in enc.named_parameters()}
        return mu.detach(), var.detach(), grads

    mu_s, var_s, g_s = outputs_and_grads(lambda: enc(sl, keys))
    mu_d, var_d, g_d = outputs_and_grads(lambda: dense_reference(enc, x, keys))
    torch.testing.assert_close(mu_s, mu_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var_s, var_d, atol=1e-5, rtol=1e-5)
    assert g_s.keys() == g_d.keys()
    first = "phi0" if enc.use_cross_feedback else "w0"
    assert g_s[first].is_sparse == (kind == "sparse")  # the row-sparse gradient of sparse_update
    for name in g_s:
        got = g_s[name].to_dense() if g_s[name].is_sparse else g_s[name]
        torch.testing.assert_close(got, g_d[name], atol=1e-5, rtol=1e-5, msg=name)
    # the check has teeth: the gradients of the first layers are not all zero
    assert g_d[first].abs().sum() > 0


def test_separate_variance_networks_do_not_share_weights():
    """With separate_variance the mean depends only on the first layers' mean columns and the
    variance only on its own columns (and MLPs); shared, both depend on the same columns."""
    m = sparse_matrix(N_ROWS, N_COLS, 0.3, seed=1)
    sl = csr_row_slice(m, np.arange(N_ROWS))
    keys = torch.rand(N_COLS, DIM, dtype=torch.float64) + 0.1
    for separate in (True, False):
        torch.manual_seed(0)
        enc = make_encoder(dict(attention="none", input_layers=1), separate, sparse_grad=False)
        width = enc.w0.shape[1]
        assert width == (2 if separate else 1) * enc.first
        names = {n for n, _ in enc.named_parameters()}
        assert ({"obs_rest_var.0.weight", "lat_rest_var.0.weight"} <= names) == separate
        used = []  # first-layer columns that the mean (then the variance) depends on
        for output in (0, 1):
            enc.zero_grad(set_to_none=True)
            enc(sl, keys)[output].sum().backward()
            col_grad = enc.phi0.grad.abs().sum((0, 1))
            used.append({c for c in range(width) if col_grad[c] > 0})
        mean_cols, var_cols = used
        assert mean_cols and var_cols
        if separate:
            assert max(mean_cols) < enc.first <= min(var_cols)
        else:
            assert mean_cols & var_cols


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
