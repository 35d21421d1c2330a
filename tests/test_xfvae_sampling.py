"""The cross-feedback VAE's sampling, Algorithm 1 step 6 and the attention switch, each checked
through public behaviour on tiny data (no private helpers)."""

from __future__ import annotations

import math

import pytest
import torch

from xfvae.data.batches import BlockPlan, epoch_generator, iter_blocks
from xfvae.data.train_data import TrainData
from xfvae.models.attention import PosteriorAttention, RowSlice
from xfvae.models.xfvae import CrossFeedbackVAE

SMALL = dict(dim=3, inter_dim=4, input_width=4, output_width=4)


def dense_data(n_users: int = 8, n_items: int = 6, ratings: float | None = None) -> TrainData:
    """Every user rates every item: random ratings 1..5, or all equal to ``ratings``."""
    users = torch.arange(n_users).repeat_interleave(n_items)
    items = torch.arange(n_items).repeat(n_users)
    if ratings is None:
        g = torch.Generator().manual_seed(0)
        values = torch.randint(1, 6, (n_users * n_items,), generator=g).float()
    else:
        values = torch.full((n_users * n_items,), float(ratings))
    return TrainData(n_users, n_items, users, items, values, 1.0, 5.0)


def one_block(model: CrossFeedbackVAE, data: TrainData) -> dict[str, torch.Tensor]:
    plan = BlockPlan(data, data.n_users, data.n_items, seed=0)
    return next(iter_blocks(plan, epoch_generator(0, 0), shuffle=False))


# -- reparametrisation: u = mu + sqrt(var) * eps ---------------------------------------------------
def expected_sse(b, mu_u, s_u, mu_v, s_v) -> float:
    """E[sum over the block's ratings of (r - u.v)^2] for u ~ N(mu_u, diag s_u), v ~ N(mu_v, diag s_v)
    independent: r^2 - 2 r mu_u.mu_v + (mu_u.mu_v)^2 + s_u.mu_v^2 + mu_u^2.s_v + s_u.s_v."""
    mu_u, s_u = mu_u[b["obs_u"]].double(), s_u[b["obs_u"]].double()
    mu_v, s_v = mu_v[b["obs_i"]].double(), s_v[b["obs_i"]].double()
    r = b["ratings"].double()
    m = (mu_u * mu_v).sum(-1)
    second = m**2 + (s_u * mu_v**2).sum(-1) + (mu_u**2 * s_v).sum(-1) + (s_u * s_v).sum(-1)
    return float((r**2 - 2 * r * m + second).sum())


def test_sampled_embeddings_have_the_posterior_variance():
    """The loss's samples have variance var (std sqrt(var)), not var**2: the mean squared error
    over many seeded draws matches its closed form under var, and is far from it under var**2.
    Ratings of 1 keep the noise of the r * u.v term small next to the variance terms."""
    data = dense_data(40, 30, ratings=1.0)
    torch.manual_seed(0)
    m = CrossFeedbackVAE(
        data, block_size=[data.n_users, data.n_items], attention="none", offset="none",
        beta_u=0.0, beta_v=0.0, **SMALL,
    )  # fmt: skip
    m.on_fit_start()
    m.on_train_epoch_start(0)
    b = one_block(m, data)
    with torch.no_grad():
        mu_u, var_u = m.encode_users(b["users"])
        mu_v, var_v = m.encode_items(b["items"])
        assert 0.05 < float(var_u.min()) and float(var_u.max()) < 0.95  # var**2 differs from var
        torch.manual_seed(1)
        draws = torch.tensor([float(m.loss(b)["loss"]) * m.loss_scale for _ in range(100)])
    mean, se = float(draws.mean()), float(draws.std()) / math.sqrt(draws.numel())
    right = expected_sse(b, mu_u, var_u, mu_v, var_v)
    wrong = expected_sse(b, mu_u, var_u**2, mu_v, var_v**2)
    assert abs(right - wrong) > 15 * se  # the check has the power to tell them apart
    assert mean == pytest.approx(right, abs=4 * se)


# -- Algorithm 1 step 6: the latent inputs are the current samples U, V ----------------------------
def test_step_6_feeds_the_samples_not_the_posterior_means():
    data = dense_data()
    torch.manual_seed(0)
    m = CrossFeedbackVAE(data, block_size=[4, 3], attention="local", **SMALL)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m.on_fit_start()
    m.on_train_epoch_start(0)
    for b in iter_blocks(BlockPlan(data, 4, 3, seed=0), epoch_generator(0, 0), shuffle=True):
        opt.zero_grad()
        m.loss(b)["loss"].backward()
        opt.step()
    m.on_train_epoch_end(0)  # step 15: U, V sampled around the encoders' (non-zero) means
    for sample, mean in ((m.U, m.U_mean), (m.V, m.V_mean)):
        assert float(mean.abs().mean()) > 1e-2  # the means are not zero ...
        assert float((sample - mean).abs().max()) > 0.1  # ... and the samples differ from them
    m.on_train_epoch_start(1)  # step 6
    torch.testing.assert_close(m.latent_items, m.V, rtol=0, atol=0)  # user side reads V
    torch.testing.assert_close(m.latent_users, m.U, rtol=0, atol=0)  # item side reads U
    # and training encodes with them: the posterior given the samples, not given the means
    users = torch.arange(data.n_users)
    with torch.no_grad():
        mu, _ = m.encode_users(users)
        torch.testing.assert_close(mu, m.encode_users(users, keys=m.V.clone())[0])
        assert float((mu - m.encode_users(users, keys=m.V_mean.clone())[0]).abs().max()) > 1e-4


# -- the attention switch inside PosteriorAttention ------------------------------------------------
def _rows(cols_per_row: list[list[int]]) -> RowSlice:
    cols = torch.tensor([c for row in cols_per_row for c in row])
    lengths = torch.tensor([len(row) for row in cols_per_row])
    seg = torch.repeat_interleave(torch.arange(len(cols_per_row)), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    return RowSlice(len(cols_per_row), cols, torch.ones(cols.numel()), offsets, seg)


@pytest.mark.parametrize("norm", ["softmax", "ratio"])
@pytest.mark.parametrize("merge", ["concat", "add"])
def test_attention_scope_switches_between_rated_and_all_entries(norm, merge):
    torch.manual_seed(0)
    dim, n_keys = 4, 7
    local = PosteriorAttention(dim, "local", norm, merge)
    glob = PosteriorAttention(dim, "global", norm, merge)
    glob.load_state_dict(local.state_dict())  # same parameters; only the scope differs
    mu, logit, keys = torch.randn(3, dim), torch.randn(3, dim), torch.randn(n_keys, dim)
    partial = _rows([[1, 4], [2], [0, 3, 5, 6]])  # no row rates every entry
    full = _rows([list(range(n_keys))] * 3)
    with torch.no_grad():
        loc_part, glob_part = local(mu, logit, keys, partial), glob(mu, logit, keys, partial)
        loc_full, glob_full = local(mu, logit, keys, full), glob(mu, logit, keys, full)
        # local attends to the rated entries only: unrated keys do not matter to it ...
        moved = keys.clone()
        moved[[0, 3, 5, 6]] += 5.0  # entries that rows 0 and 1 did not rate
        loc_moved, glob_moved = local(mu, logit, moved, partial), glob(mu, logit, moved, partial)
    for a, b in zip(loc_part, loc_moved, strict=True):
        torch.testing.assert_close(a[:2], b[:2])
    # ... global attends to every entry whatever the row rated: unrated keys change it,
    for a, b in zip(glob_part, glob_moved, strict=True):
        assert float((a[:2] - b[:2]).abs().max()) > 1e-3
    # so the two differ when a row does not rate every entry,
    for a, b in zip(loc_part, glob_part, strict=True):
        assert float((a[:2] - b[:2]).abs().max()) > 1e-3
    # and agree when every row rates every entry (global ignores the rows altogether).
    for a, b, c in zip(loc_full, glob_full, glob_part, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(b, c)
