"""The Friedman test's permutation p-value against brute-force enumeration of every within-block
arrangement, against scipy's permutation test, and against the F approximation, which is far too
small when there are few blocks (issue 10: RMSE with N = 3 seeds, 2.2e-12 by F vs 1.9e-9 exact)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xfvae.report.comparison import compare_scores
from xfvae.report.rank_tests import (
    exact_friedman_p,
    friedman_permutation_p,
    friedman_test,
    rank_scores,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*no pair can be significant:UserWarning")


def brute_force_p(ranks: np.ndarray) -> float:
    """Share of all (k!)^N within-block orderings (every block permuted, none fixed) whose
    Friedman statistic sum_j R_j^2 reaches the observed one."""
    observed = np.sum(ranks.sum(axis=0) ** 2)
    per_block = [np.array(list(itertools.permutations(row))) for row in ranks]
    sums = per_block[0]
    for block in per_block[1:]:
        sums = (sums[:, None, :] + block[None, :, :]).reshape(-1, ranks.shape[1])
    t = np.sum(sums**2, axis=1)
    return float(np.mean(t >= observed - 1e-9))


@pytest.mark.parametrize("k, n", [(3, 2), (3, 3), (3, 4), (4, 2), (4, 3), (4, 4), (5, 2)])
def test_exact_p_equals_brute_force_enumeration_with_ties(k, n):
    rng = np.random.default_rng(10 * k + n)
    for _ in range(3):
        scores = pd.DataFrame(rng.integers(0, 3, size=(n, k)).astype(float))  # ties are common
        ranks = rank_scores(scores, lower_is_better=True)
        exact = exact_friedman_p(ranks)
        assert exact is not None and exact.method == "exact"
        assert exact.p == pytest.approx(brute_force_p(ranks.to_numpy()), abs=1e-12)


def test_exact_p_equals_scipy_exact_permutation_test():
    ranks = rank_scores(pd.DataFrame([[1, 2, 3], [1, 3, 2], [2, 1, 3], [1, 2, 3.0]]), True)
    ref = stats.permutation_test(
        tuple(ranks.to_numpy().T),
        lambda *cols, axis: np.sum(np.stack([c.sum(axis=axis) for c in cols]) ** 2, axis=0),
        permutation_type="samples",
        alternative="greater",
        n_resamples=np.inf,
        vectorized=True,
    )
    assert exact_friedman_p(ranks).p == pytest.approx(ref.pvalue, abs=1e-12)


def test_f_approximation_is_far_too_small_with_three_blocks():
    # Five models, three blocks that nearly agree: the F approximation says 1.9e-5, the exact
    # permutation distribution (all 120^3 orderings, brute force) 9.0e-4, 48 times larger.
    ranks = pd.DataFrame([[4, 2, 5, 1, 3], [3, 2, 5, 1, 4], [3, 2, 5, 1, 4.0]])
    f = friedman_test(ranks)
    exact = friedman_permutation_p(ranks)
    reference = brute_force_p(ranks.to_numpy())
    assert exact.method == "exact" and exact.p == pytest.approx(reference, abs=1e-12)
    assert exact.p == pytest.approx(0.0009028, rel=1e-3)
    assert f.iman_davenport_p == pytest.approx(1.88e-5, rel=1e-2)
    assert exact.p > 40 * f.iman_davenport_p


def test_decision_follows_the_permutation_p_and_reports_the_disagreement():
    # Two blocks, four models: F gives p = 0.052 (reject at 0.1), the exact p is 4/24 (retain).
    scores = pd.DataFrame([[1, 2, 3, 4], [1, 3, 2, 4.0]], columns=list("abcd"))
    c = compare_scores(scores, "rmse", alpha=0.1)
    assert c.friedman.iman_davenport_p == pytest.approx(0.052, abs=1e-3)
    assert c.permutation.p == pytest.approx(brute_force_p(c.ranks.to_numpy()))
    assert c.permutation.p == pytest.approx(4 / 24)
    assert c.rejects_h0_f and not c.rejects_h0
    summary = c.summary()
    assert "permutation test of the Friedman statistic: p = 0.1667 (exact" in summary
    assert "F approximation p = 0.05204" in summary
    assert "-> retain H0" in summary and "the F approximation DISAGREES" in summary
    d = c.to_dict()
    assert d["permutation_method"] == "exact" and d["permutation_p"] == pytest.approx(4 / 24)
    assert d["rejects_h0"] is False and d["rejects_h0_f_approximation"] is True


def test_monte_carlo_when_enumeration_is_too_large_is_seeded_with_a_standard_error():
    rng = np.random.default_rng(3)
    ranks = rank_scores(pd.DataFrame(rng.normal(size=(6, 5)) + np.arange(5) * 0.4), True)
    exact = friedman_permutation_p(ranks)
    assert exact.method == "exact"
    mc = friedman_permutation_p(ranks, n_resamples=4000, seed=1, exact_budget=0)
    assert mc.method == "monte carlo" and mc.n == 4000 and mc.seed == 1
    assert mc.se == pytest.approx(np.sqrt(mc.p * (1 - mc.p) / 4000))
    assert abs(mc.p - exact.p) < 4 * mc.se + 1 / 4001
    again = friedman_permutation_p(ranks, n_resamples=4000, seed=1, exact_budget=0)
    assert again.p == mc.p  # seeded: reproducible
    assert "Monte Carlo: 4000 random within-block permutations, seed 1" in mc.describe()


def test_nine_models_on_three_seeds_fall_back_to_monte_carlo_with_an_honest_bound():
    # The shape of the committed ML-100K runs (9 models, 3 seeds): (9!)^2 = 1.3e11 orderings. No
    # resample reaches a near-perfect agreement, so p is reported as at most 1 / (B + 1).
    ranks = pd.DataFrame(
        [
            [1, 6, 9, 3, 4, 5, 7, 8, 2],
            [2, 6, 9, 3, 4, 5, 7, 8, 1],
            [3, 6, 9, 2, 4, 5, 7, 8, 1.0],
        ]
    )
    f = friedman_test(ranks)
    assert f.iman_davenport_p == pytest.approx(2.17e-12, rel=1e-2)
    mc = friedman_permutation_p(ranks, n_resamples=2000, seed=0)
    assert mc.method == "monte carlo" and mc.p == pytest.approx(1 / 2001)
    assert "no resample reached the observed statistic" in mc.describe()
