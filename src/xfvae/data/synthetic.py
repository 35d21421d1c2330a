"""Low-rank ratings with known Gaussian noise: a data set whose best achievable RMSE is known.

true = clip(mu + signal_sd * U V^T / sqrt(rank)) with U, V standard normal, so the signal has
standard deviation ``signal_sd`` (default: a quarter of the scale's width, so mu +- 2 sd spans it);
observed = clip(true + N(0, noise_sd^2)) at round(density * n_users * n_items) distinct cells.
Because ``true`` lies inside the scale, clipping can only move an observation towards it: the
oracle RMSE (``df.attrs["rmse_floor"]``, measured on the sampled cells) is slightly below
``noise_sd``. Every user and item gets at least one rating when there are enough of them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # cells per block when evaluating U V^T, bounding memory at ~8 MB * rank


def make_synthetic(
    n_users: int = 500,
    n_items: int = 400,
    density: float = 0.05,
    rank: int = 5,
    noise_sd: float = 0.5,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    seed: int = 0,
    signal_sd: float | None = None,
    popularity: float = 0.0,
    with_truth: bool = False,
) -> pd.DataFrame:
    """Ratings ``user, item, rating, timestamp`` (timestamp = row order; rows in random order).

    ``popularity`` > 0 skews who rates what: user and item activity follow Zipf weights
    ``rank ** -popularity`` (in a random order), as in real rating data; 0 is uniform.
    ``with_truth=True`` adds the noise-free ``true_rating`` column. ``df.attrs`` holds
    ``rmse_floor`` (RMSE of predicting ``true_rating``) and the generator's arguments.
    """
    n_users, n_items, rank = int(n_users), int(n_items), int(rank)
    if (
        min(n_users, n_items, rank) < 1
        or not 0 < density <= 1
        or noise_sd < 0
        or not popularity >= 0
    ):
        raise ValueError(
            "make_synthetic needs n_users, n_items, rank >= 1, 0 < density <= 1, noise_sd >= 0, "
            f"popularity >= 0; got {n_users}, {n_items}, {rank}, {density}, {noise_sd}, "
            f"{popularity}"
        )
    if not rating_min < rating_max:
        raise ValueError(f"rating_min {rating_min} must be below rating_max {rating_max}")
    rng = np.random.default_rng(seed)
    n_cells = n_users * n_items
    k = max(1, round(density * n_cells))
    cells = _sample_cells(rng, n_users, n_items, k, float(popularity))
    users, items = cells // n_items, cells % n_items

    mu = (rating_min + rating_max) / 2
    sd = (rating_max - rating_min) / 4 if signal_sd is None else float(signal_sd)
    u_fac = rng.standard_normal((n_users, rank))
    v_fac = rng.standard_normal((n_items, rank))
    true = np.empty(k)
    for lo in range(0, k, _CHUNK):  # blocks of a million cells, not single ratings
        hi = min(lo + _CHUNK, k)
        true[lo:hi] = np.einsum("ij,ij->i", u_fac[users[lo:hi]], v_fac[items[lo:hi]])
    true = np.clip(mu + sd * true / np.sqrt(rank), rating_min, rating_max)
    observed = np.clip(true + rng.normal(0.0, noise_sd, k), rating_min, rating_max)

    df = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": observed,
            "timestamp": np.arange(k, dtype=np.int64),
        }
    )
    if with_truth:
        df["true_rating"] = true
    rmse_floor = float(np.sqrt(np.mean((observed - true) ** 2)))
    df.attrs.update(
        rmse_floor=rmse_floor,
        noise_sd=float(noise_sd),
        rank=rank,
        density=k / n_cells,
        popularity=float(popularity),
        seed=int(seed),
    )
    log.info(
        "synthetic: %d users x %d items, %d ratings (density %.4g), rank %d, noise_sd %g, "
        "rmse_floor %.4f",
        n_users,
        n_items,
        k,
        k / n_cells,
        rank,
        noise_sd,
        rmse_floor,
    )
    return df


def _zipf(rng: np.random.Generator, n: int, a: float) -> np.ndarray:
    """Activity weights ``rank ** -a`` over the n entities in a random order (sum 1)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -a
    return rng.permutation(w / w.sum())


def _sample_cells(
    rng: np.random.Generator, n_users: int, n_items: int, k: int, popularity: float = 0.0
) -> np.ndarray:
    """``k`` distinct cells (user * n_items + item) in random order, covering all rows and
    columns when k >= max(n_users, n_items); never builds the dense matrix when it is large.
    With ``popularity`` > 0 the cells beyond the cover are drawn with Zipf user/item weights."""
    n_cells = n_users * n_items
    if k > n_cells:
        raise ValueError(f"cannot place {k} distinct ratings in {n_cells} cells")
    cover = np.empty(0, dtype=np.int64)
    m = max(n_users, n_items)
    if k >= m:  # pair the j-th of a user permutation with the j-th of an item one: distinct cells
        j = np.arange(m)
        pu, pi = rng.permutation(n_users), rng.permutation(n_items)
        cover = pu[j % n_users].astype(np.int64) * n_items + pi[j % n_items]
    rest = k - cover.size
    wu = _zipf(rng, n_users, popularity) if popularity > 0 else None
    wi = _zipf(rng, n_items, popularity) if popularity > 0 else None
    if 4 * k >= n_cells:  # dense: rank all cells at most 4x the output (Gumbel top-k if skewed)
        if wu is None:
            pool = rng.permutation(n_cells)
        else:
            logw = np.log(np.outer(wu, wi).ravel()) + rng.gumbel(size=n_cells)
            pool = np.argsort(-logw, kind="stable")
        extra = pool[~np.isin(pool, cover)][:rest]
    else:  # sparse: draw with replacement, deduplicate, top up; then a random subset of size rest
        extra = np.empty(0, dtype=np.int64)
        while extra.size < rest:
            size = int(1.1 * (rest - extra.size)) + 16
            if wu is None:
                draw = rng.integers(0, n_cells, size=size)
            else:
                draw = rng.choice(n_users, size, p=wu) * n_items + rng.choice(n_items, size, p=wi)
            extra = _sorted_unique(np.concatenate([extra, draw]))
            extra = extra[~np.isin(extra, cover)]
        extra = rng.permutation(extra)[:rest]
    return rng.permutation(np.concatenate([cover, extra]).astype(np.int64))


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is ~5x slower on millions of int64)."""
    x = np.sort(x)
    return x[np.concatenate(([True], x[1:] != x[:-1]))]
