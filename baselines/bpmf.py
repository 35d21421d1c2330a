"""BPMF: Salakhutdinov and Mnih (2008), "Bayesian Probabilistic Matrix Factorization using Markov
Chain Monte Carlo", ICML'08, section 3 (model, Eq. 5-8) and 3.3 (Gibbs sampler, Eq. 11-14).

R_ij ~ N(mu + U_i . V_j, 1/alpha) with Gaussian priors on the rows of U and V whose means and
precisions have Normal-Wishart hyperpriors (mu_0 = 0, beta_0 = 2, nu_0 = D, W_0 = I, alpha = 2, as
in the paper and the authors' code). One training "epoch" is one Gibbs sweep: sample the user
hyperparameters (Eq. 14), then every user's factors given V (Eq. 12-13: one batched D x D Cholesky
per user, no Python loop), then the same for items given the new U. Samples after ``burn_in``
sweeps go into a ring of ``n_samples`` slots; predictions average the per-sample predictions, each
clipped to the rating scale as in the authors' code (the Monte Carlo estimate of Eq. 10).

Deviations from the paper:

* U and V start at N(0, ``init_std``^2) instead of the MAP solution of PMF; the burn-in absorbs it.
* With more post-burn-in sweeps than ``n_samples`` only the latest ``n_samples`` are averaged
  (a sliding window over the chain); ``n_samples >= max_epochs - burn_in`` keeps them all.
* Ratings are centred by the training mean (as the authors' code does; the paper leaves it open).
* The Gibbs arithmetic runs in float64; U, V and the kept samples are stored in float32.
* Early stopping (the loop's, as for every model) starts counting after the burn-in
  (``warmup_epochs``); otherwise on sparse data the noisy single samples of the burn-in end the
  run before any sample is averaged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Chi2

from xfvae.data.train_data import TrainData


def sample_hyper(x: torch.Tensor, beta0: float, nu0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 14: a draw of (mu, Lambda) from p(mu, Lambda | X, Theta_0), mu_0 = 0, W_0 = I."""
    n, d = x.shape
    xbar = x.mean(0)
    centred = x - xbar
    s_bar = centred.T @ centred / n
    beta_n, nu_n = beta0 + n, nu0 + n
    mu_n = n * xbar / beta_n
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    w_n = torch.linalg.inv(eye + n * s_bar + (beta0 * n / beta_n) * torch.outer(xbar, xbar))
    lam = sample_wishart(0.5 * (w_n + w_n.T), nu_n)
    return sample_gaussian(mu_n.unsqueeze(0), (beta_n * lam).unsqueeze(0)).squeeze(0), lam


def sample_wishart(scale: torch.Tensor, df: float, n: int | None = None) -> torch.Tensor:
    """Bartlett decomposition: (L A)(L A)^T, scale = L L^T, A lower triangular with A_kk^2 ~
    chi2(df - k) and N(0, 1) below the diagonal; ``n`` independent draws stacked when given. Not
    torch.distributions.Wishart: its rsample in torch 2.13 flags every positive-definite draw as
    singular, warns and redraws."""
    d = scale.shape[0]
    batch = () if n is None else (n,)
    dfs = df - torch.arange(d, dtype=scale.dtype, device=scale.device)
    a = torch.tril(torch.randn(*batch, d, d, dtype=scale.dtype, device=scale.device), diagonal=-1)
    a = a + torch.diag_embed(Chi2(dfs, validate_args=False).sample(batch).sqrt())
    la = torch.linalg.cholesky(scale) @ a
    return la @ la.mT


def sample_gaussian(mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Rows x_k ~ N(mean_k, precision_k^-1), batched: x = mean + L^-T z with precision = L L^T."""
    chol = torch.linalg.cholesky(precision)
    z = torch.randn(mean.shape + (1,), dtype=mean.dtype, device=mean.device)
    return mean + torch.linalg.solve_triangular(chol.mT, z, upper=True).squeeze(-1)


def conditional(
    other: torch.Tensor,
    ind: torch.Tensor,
    res: torch.Tensor,
    mu: torch.Tensor,
    lam: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 12-13 for every row at once: precision Lambda + alpha sum_j V_j V_j^T and mean
    precision^-1 (alpha sum_j R_ij V_j + Lambda mu), sums over each row's observed j only.

    ``ind`` and ``res`` are sparse [n, m] (1 and centred rating at each observed entry)."""
    m, d = other.shape
    outer = (other.unsqueeze(2) * other.unsqueeze(1)).reshape(m, d * d)
    precision = lam + alpha * (ind @ outer).reshape(-1, d, d)
    rhs = alpha * (res @ other) + lam @ mu
    mean = torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(precision)).squeeze(-1)
    return mean, precision


class BPMF(nn.Module):
    """Parameters: ``dim`` latent size D, ``alpha`` rating precision, ``beta0`` prior strength of
    the hyper-mean, ``burn_in`` sweeps discarded, ``n_samples`` kept samples (ring size),
    ``init_std`` of the initial factors, ``clip`` each sample's predictions to the rating scale,
    ``predict_chunk`` values per step in :meth:`predict`."""

    batch_kind = "none"
    automatic_optimization = False

    def __init__(
        self,
        data: TrainData,
        dim: int = 10,
        alpha: float = 2.0,
        beta0: float = 2.0,
        burn_in: int = 10,
        n_samples: int = 200,
        init_std: float = 0.1,
        clip: bool = True,
        predict_chunk: int = 2**23,
    ):
        super().__init__()
        self.dim, self.alpha, self.beta0 = int(dim), float(alpha), float(beta0)
        self.burn_in, self.n_samples, self.clip = int(burn_in), int(n_samples), bool(clip)
        self.predict_chunk = int(predict_chunk)
        self.rating_min, self.rating_max = data.rating_min, data.rating_max
        self.n_users, self.n_items = data.n_users, data.n_items
        # Sampled, not optimised: parameters only so that n_params counts them.
        self.U = nn.Parameter(torch.randn(data.n_users, dim) * init_std, requires_grad=False)
        self.V = nn.Parameter(torch.randn(data.n_items, dim) * init_std, requires_grad=False)
        self.register_buffer("mu", torch.tensor(data.global_mean, dtype=torch.float32))
        self.register_buffer("U_samples", torch.zeros(self.n_samples, data.n_users, dim))
        self.register_buffer("V_samples", torch.zeros(self.n_samples, data.n_items, dim))
        self.register_buffer("n_kept", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_users", data.users.clone(), persistent=False)
        self.register_buffer("train_items", data.items.clone(), persistent=False)
        self.register_buffer("train_ratings", data.ratings.clone(), persistent=False)
        self._sparse: dict[str, tuple[torch.Tensor, ...]] = {}

    def _matrices(self) -> tuple[torch.Tensor, ...]:
        """Sparse indicator and centred-rating matrices, users x items and items x users (float64)."""
        dev = self.train_users.device
        if str(dev) not in self._sparse:
            idx = torch.stack([self.train_users, self.train_items])
            res = self.train_ratings.double() - self.mu.double()
            shape = (self.n_users, self.n_items)
            mats = []
            for vals in (torch.ones_like(res), res):
                coo = torch.sparse_coo_tensor(idx, vals, shape).coalesce()
                mats += [coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()]
            ind_u, ind_i, res_u, res_i = mats
            self._sparse = {str(dev): (ind_u, res_u, ind_i, res_i)}
        return self._sparse[str(dev)]

    @property
    def warmup_epochs(self) -> int:
        """Early stopping counts from the end of the burn-in: before it the predictions are single
        samples, which on sparse data score worse than the initial all-mean prediction."""
        return self.burn_in if self.n_samples > 0 else 0

    @torch.no_grad()
    def fit_epoch(self, epoch: int) -> float:
        """One Gibbs sweep (Eq. 11-14); returns the training MSE of the new sample."""
        ind_u, res_u, ind_i, res_i = self._matrices()
        u, v = self.U.double(), self.V.double()
        mu_u, lam_u = sample_hyper(u, self.beta0, self.dim)
        u = sample_gaussian(*conditional(v, ind_u, res_u, mu_u, lam_u, self.alpha))
        mu_v, lam_v = sample_hyper(v, self.beta0, self.dim)
        v = sample_gaussian(*conditional(u, ind_i, res_i, mu_v, lam_v, self.alpha))
        self.U.copy_(u.float())
        self.V.copy_(v.float())
        if epoch >= self.burn_in and self.n_samples > 0:
            slot = int(self.n_kept) % self.n_samples
            self.U_samples[slot] = self.U
            self.V_samples[slot] = self.V
            self.n_kept += 1
        pred = self.mu + (self.U[self.train_users] * self.V[self.train_items]).sum(-1)
        return float(((pred - self.train_ratings) ** 2).mean())

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError("BPMF trains by Gibbs sampling in fit_epoch(); it has no gradient loss")

    @torch.no_grad()
    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean over the kept samples of mu + U_i . V_j (each clipped); the current sample before any."""
        k = min(int(self.n_kept), self.n_samples)
        us, vs = (self.U_samples[:k], self.V_samples[:k]) if k else (self.U[None], self.V[None])
        step = max(1, self.predict_chunk // (us.shape[0] * self.dim))
        out = []
        for s in range(0, users.numel(), step):
            p = self.mu + (us[:, users[s : s + step]] * vs[:, items[s : s + step]]).sum(-1)
            if self.clip:
                p = p.clamp(self.rating_min, self.rating_max)
            out.append(p.mean(0))
        return torch.cat(out) if out else users.new_zeros(0, dtype=torch.float32)
