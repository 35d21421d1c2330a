"""BPMF's Gibbs sampler against brute-force formulas (Salakhutdinov and Mnih 2008, Eq. 11-14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.bpmf import BPMF, conditional, sample_gaussian, sample_hyper, sample_wishart
from xfvae.data.train_data import TrainData


def small_data(seed: int = 0) -> TrainData:
    g = np.random.default_rng(seed)
    mask = g.random((12, 9)) < 0.4
    mask[:, 0] = True  # every user has a rating
    u, i = np.nonzero(mask)
    r = g.integers(1, 6, size=u.size).astype(np.float32)
    return TrainData(12, 9, torch.tensor(u), torch.tensor(i), torch.tensor(r), 1.0, 5.0)


def test_wishart_draws_have_the_wishart_mean_and_variance():
    torch.manual_seed(0)
    w = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    df = 7.0
    draws = sample_wishart(w, df, n=20000)
    assert sample_wishart(w, df).shape == (3, 3) and draws.shape == (20000, 3, 3)
    torch.testing.assert_close(draws.mean(0), df * w, atol=0.15, rtol=0.03)
    var = df * (w**2 + torch.outer(w.diag(), w.diag()))  # Var(S_ij) = df (w_ij^2 + w_ii w_jj)
    torch.testing.assert_close(draws.var(0), var, atol=0.3, rtol=0.06)


def test_gaussian_draws_have_the_inverse_precision_as_covariance():
    torch.manual_seed(1)
    prec = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x = sample_gaussian(mean.expand(40000, 2).clone(), prec.expand(40000, 2, 2).clone())
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), torch.linalg.inv(prec), atol=0.01, rtol=0.03)


@pytest.fixture
def one_thread():
    """Thousands of tiny Cholesky calls: one thread avoids OpenMP start-up cost on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_hyperparameter_posterior_matches_eq_14(one_thread):
    """E[Lambda | X] = nu_n W_n and E[mu | X] = N xbar / (beta_0 + N), from the formulas written out."""
    torch.manual_seed(2)
    x = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0]) + 0.3
    n, d = x.shape
    xbar = x.mean(0)
    s = sum(torch.outer(r - xbar, r - xbar) for r in x) / n
    beta0, nu0 = 2.0, 3.0
    w_n = torch.linalg.inv(
        torch.eye(d, dtype=x.dtype) + n * s + beta0 * n / (beta0 + n) * torch.outer(xbar, xbar)
    )
    draws = [sample_hyper(x, beta0, nu0) for _ in range(3000)]
    lam = torch.stack([dr[1] for dr in draws])
    mu = torch.stack([dr[0] for dr in draws])
    torch.testing.assert_close(lam.mean(0), (nu0 + n) * w_n, atol=0.03, rtol=0.04)
    torch.testing.assert_close(mu.mean(0), n * xbar / (beta0 + n), atol=0.02, rtol=0)


def test_conditionals_use_only_each_users_observed_items():
    """Eq. 12-13 per user with an explicit loop over that user's ratings; unobserved items absent."""
    data = small_data()
    model = BPMF(data, dim=4)
    ind_u, res_u, _, _ = model._matrices()
    torch.manual_seed(3)
    v = torch.randn(9, 4, dtype=torch.float64)
    lam = torch.eye(4, dtype=torch.float64) * 1.5 + 0.1
    mu = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    mean, prec = conditional(v, ind_u, res_u, mu, lam, alpha=2.0)
    centred = data.ratings.double() - data.global_mean
    for user in range(12):
        sel = torch.nonzero(data.users == user).squeeze(1)
        p = lam.clone()
        b = lam @ mu
        for k in sel.tolist():
            j = int(data.items[k])
            p += 2.0 * torch.outer(v[j], v[j])
            b += 2.0 * centred[k] * v[j]
        torch.testing.assert_close(prec[user], p)
        torch.testing.assert_close(mean[user], torch.linalg.solve(p, b))


def test_predictions_average_the_kept_samples_each_clipped():
    data = small_data()
    torch.manual_seed(4)
    model = BPMF(data, dim=3, burn_in=2, n_samples=4)
    for epoch in range(8):
        model.fit_epoch(epoch)
    assert int(model.n_kept) == 6  # sweeps 2..7; the ring keeps the latest 4
    users, items = torch.tensor([0, 3, 11, 3]), torch.tensor([0, 8, 4, 8])
    brute = torch.zeros(4)
    for s in range(4):
        u, v = model.U_samples[s], model.V_samples[s]
        brute += (data.global_mean + (u[users] * v[items]).sum(-1)).clamp(1, 5) / 4
    torch.testing.assert_close(model.predict(users, items), brute)
    latest = (int(model.n_kept) - 1) % 4
    torch.testing.assert_close(model.U_samples[latest], model.U.data)


def test_before_burn_in_predictions_use_the_current_sample():
    data = small_data()
    torch.manual_seed(5)
    model = BPMF(data, dim=3, burn_in=5, clip=False)
    model.fit_epoch(0)
    users, items = torch.tensor([1, 2]), torch.tensor([3, 4])
    expected = data.global_mean + (model.U[users] * model.V[items]).sum(-1)
    torch.testing.assert_close(model.predict(users, items), expected)
    assert int(model.n_kept) == 0


def test_gibbs_chain_is_reproducible_and_has_no_gradient_loss():
    data = small_data()

    def chain(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        model = BPMF(data, dim=3, burn_in=1)
        for epoch in range(3):
            model.fit_epoch(epoch)
        return model.predict(torch.arange(12), torch.zeros(12, dtype=torch.long))

    torch.testing.assert_close(chain(0), chain(0), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Gibbs"):
        BPMF(data).loss({})


SPARSE = [
    "model=bpmf",
    "data=synthetic",
    "data.options.n_users=300",
    "data.options.n_items=200",
    "data.options.density=0.02",
    "model.net.dim=10",
    "model.net.init_std=0.5",
    "model.net.burn_in=8",
    "model.patience=3",
    "trainer.max_epochs=40",
    "seed=0",
]


@pytest.mark.parametrize("warmup", [True, False])
def test_early_stopping_waits_for_the_burn_in_on_sparse_data(warmup, cfg_factory, monkeypatch):
    """On sparse data the burn-in's single samples score worse than the first, all-mean prediction:
    counted, they would stop BPMF after `patience` sweeps, before any sample is averaged (what
    happened at 1-10 % of ML-100K). Its burn-in is a warm-up: patience starts when it ends."""
    from xfvae.train import train

    if not warmup:  # what the loop did before: every epoch counts
        monkeypatch.setattr(BPMF, "warmup_epochs", property(lambda self: 0))
    metrics = train(cfg_factory(*SPARSE))
    if warmup:
        assert metrics["epochs"] >= 8 + 3 + 1, "patience counts from the end of the burn-in"
        assert metrics["best_epoch"] >= 8, "an average of samples beats the burn-in's single ones"
    else:
        assert metrics["epochs"] < 8, "stopped inside the burn-in: the defect, shown"
