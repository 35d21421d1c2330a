"""The fused training path of the cross-feedback VAE (src/xfvae/models/fused.py, issue 21).

The fused encoder node must give the general (autograd) path's outputs and gradients on every
configuration it covers (``tests/test_xfvae_equivalence.py`` ties both to the dense reference
that builds Z), must notice when the latent inputs change (they are gathered once per epoch),
and the fused ELBO node must equal Eq. 7 written with autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xfvae.data.batches import BlockPlan, csr_row_slice, epoch_generator, iter_blocks
from xfvae.data.synthetic import make_synthetic
from xfvae.data.train_data import TrainData
from xfvae.models.encoder import SideEncoder
from xfvae.models.xfvae import CrossFeedbackVAE, gaussian_kl

N_ROWS, N_COLS, DIM = 9, 12, 3
ENCODERS = [
    dict(attention="local", attention_merge="add"),
    dict(attention="local", attention_norm="ratio", attention_merge="add"),
    dict(attention="local", var_floor=1e-3),
    dict(attention="none", var_floor=0.0),
    dict(attention="local", use_data_input=False),
    dict(attention="none", use_cross_feedback=False),
]


def rows_and_keys(seed: int = 1):
    rng = np.random.default_rng(seed)
    mask = rng.random((N_ROWS, N_COLS)) < 0.3
    mask[0] = False  # a row without ratings
    vals = rng.integers(1, 6, size=(N_ROWS, N_COLS)).astype(np.float64)
    import scipy.sparse as sp

    m = sp.csr_matrix(np.where(mask, vals, 0.0))
    m.sort_indices()
    keys = torch.rand(N_COLS, DIM, dtype=torch.float64) + 0.1
    return csr_row_slice(m, np.arange(N_ROWS)), keys


def encoder(case: dict) -> SideEncoder:
    kw = dict(dim=DIM, inter_dim=4, input_layers=0, input_width=5, output_layers=0)
    kw.update(output_width=6, use_data_input=True, use_cross_feedback=True)
    kw.update(attention="local", attention_norm="softmax", attention_merge="concat")
    kw.update(case)
    return SideEncoder(n_cols=N_COLS, **kw).double()


def outputs_and_grads(enc, rows, keys, fused: bool):
    enc.fusable = fused
    enc.zero_grad(set_to_none=True)
    mu, var = enc(rows, keys)
    weight = torch.linspace(-1, 1, mu.numel(), dtype=mu.dtype).view(mu.shape)
    ((mu * weight).sum() + (var * weight.flip(0)).sum()).backward()
    return mu.detach(), var.detach(), {n: p.grad for n, p in enc.named_parameters()}


@pytest.mark.parametrize("case", ENCODERS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_fused_encoder_matches_the_general_path(case):
    torch.manual_seed(0)
    enc = encoder(case)
    assert enc.fusable
    rows, keys = rows_and_keys()
    mu_f, var_f, g_f = outputs_and_grads(enc, rows, keys, fused=True)
    mu_g, var_g, g_g = outputs_and_grads(enc, rows, keys, fused=False)
    torch.testing.assert_close(mu_f, mu_g)
    torch.testing.assert_close(var_f, var_g)
    assert g_f.keys() == g_g.keys()
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_g[name], msg=name)
    assert all(g.abs().sum() > 0 for g in g_f.values())  # the check has teeth


@pytest.mark.parametrize(
    "case",
    [
        dict(input_layers=1),
        dict(output_layers=1),
        dict(separate_variance=True),
        dict(sparse_grad=True),
        dict(attention="global"),
    ],  # fmt: skip
    ids=lambda c: "-".join(map(str, c)),
)
def test_other_configurations_take_the_general_path(case):
    assert not encoder(case).fusable


def test_fused_encoder_sees_new_latent_inputs():
    """The keys at the rated entries are gathered once per epoch: an in-place change of the keys
    (Algorithm 1 step 6 copies the new samples) must reach the fused path."""
    torch.manual_seed(0)
    enc = encoder(dict(attention="local"))
    rows, keys = rows_and_keys()
    before, _, _ = outputs_and_grads(enc, rows, keys, fused=True)
    with torch.no_grad():
        keys.mul_(2.0).add_(0.5)
    after, _, _ = outputs_and_grads(enc, rows, keys, fused=True)
    general, _, _ = outputs_and_grads(enc, rows, keys, fused=False)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, general)


def tiny_model(**kw) -> tuple[CrossFeedbackVAE, list]:
    df = make_synthetic(40, 30, 0.25, rank=2, noise_sd=0.3, seed=0)
    df = df[df["user"] != 39]  # a user without training ratings: no KL term
    data = TrainData(
        40, 30,
        torch.tensor(df["user"].to_numpy()), torch.tensor(df["item"].to_numpy()),
        torch.tensor(df["rating"].to_numpy(), dtype=torch.float32), 1.0, 5.0,
    )  # fmt: skip
    assert not data.user_seen[39]
    torch.manual_seed(0)
    net = CrossFeedbackVAE(data, dim=4, inter_dim=5, block_size=[16, 12], **kw).double()
    blocks = list(iter_blocks(BlockPlan(data, 16, 12, seed=0), epoch_generator(0, 0), True))
    net.on_fit_start()
    net.on_train_epoch_start(0)
    return net, blocks


def eq7_reference(net, block, mu_u, var_u, eps_u, mu_v, var_v, eps_v):
    """-Eq. 7 on one block with autograd, as the model computed it before the fused node."""
    users, items, ou, oi = block["users"], block["items"], block["obs_u"], block["obs_i"]
    ou, oi = ou.long(), oi.long()
    u, v = mu_u + var_u.sqrt() * eps_u, mu_v + var_v.sqrt() * eps_v
    pred = (u[ou] * v[oi]).sum(-1) + net.mean_rating
    if net.offset == "biases":
        pred = pred + net.user_bias[users[ou]] + net.item_bias[items[oi]]
    sse = (block["ratings"].double() - pred).pow(2).sum()
    kl_u = (gaussian_kl(mu_u, var_u, net.prior_var) * net.user_seen[users]).sum()
    kl_v = (gaussian_kl(mu_v, var_v, net.prior_var) * net.item_seen[items]).sum()
    total = sse + net.beta_u * kl_u / net.blocks_per_user + net.beta_v * kl_v / net.blocks_per_item
    return total / net.loss_scale, sse


@pytest.mark.parametrize(
    "kw",
    [
        dict(offset="biases"),
        dict(offset="global", prior_sd=0.5, beta_u=0.3),
        dict(offset="none", iteration="sequential"),
    ],  # fmt: skip
    ids=["biases", "global-prior", "none-sequential"],
)
def test_fused_elbo_equals_eq7_with_autograd(kw):
    net, blocks = tiny_model(attention="local", **kw)
    checked = 0
    for block in blocks[:4]:
        params = dict(net.named_parameters())
        torch.manual_seed(1)
        out = net.loss(block)
        net.zero_grad(set_to_none=True)
        out["loss"].backward()
        fused = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
        # the same step again, through the reference: same encoders, same noise
        net._steps -= 1
        net.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        sides = [(net.user_encoder, block.user_rows, net.latent_items, block["users"]),
                 (net.item_encoder, block.item_rows, net.latent_users, block["items"])]  # fmt: skip
        parity = net._steps % 2
        enc_out = []
        for k, (enc, rows, keys, _) in enumerate(sides):
            train = net.iteration == "nested" or parity == k
            with torch.set_grad_enabled(train):
                enc_out.append(enc(rows, keys))
        net._steps += 1
        (mu_u, var_u), (mu_v, var_v) = enc_out
        eps_u, eps_v = torch.randn_like(mu_u), torch.randn_like(mu_v)
        ref, sse = eq7_reference(net, block, mu_u, var_u, eps_u, mu_v, var_v, eps_v)
        torch.testing.assert_close(out["loss"], ref)
        torch.testing.assert_close(out["mse"] * block["ratings"].numel(), sse.detach())
        ref.backward()
        reference = {n: p.grad for n, p in params.items() if p.grad is not None}
        assert fused.keys() == reference.keys()
        for name in fused:
            torch.testing.assert_close(fused[name], reference[name], msg=name)
        checked += len(fused)
    assert checked > 0
