"""The rank tests of Demsar (2006) that paper 4.4 uses, on a blocks x models score table: the
Friedman test on the ranks (with the Iman-Davenport F and an exact or Monte Carlo permutation
p-value), the Nemenyi critical difference and pairwise p-values, and pairwise Wilcoxon signed-rank
tests with Holm's correction (Benavoli et al. 2016).

The Friedman chi-square is given both as Demsar writes it (no correction for ties; his worked
example) and with the tie correction of ``scipy.stats.friedmanchisquare``. Beside the
Iman-Davenport F approximation, the p-value of the statistic under the permutation null (the ranks
within each block exchangeable) is computed exactly when the enumeration is small enough (first
block fixed, arrangements with equal rank sums merged; always when (k!)^(N-1) <= ``EXACT_BUDGET``),
else by a seeded Monte Carlo (``scipy.stats.permutation_test``) whose standard error is reported.
The test decision (:mod:`xfvae.report.comparison`) uses the permutation p-value, valid for any
number of blocks; with few blocks the F approximation can be orders of magnitude too small (9 models
on 3 seeds: 2.2e-12 by F, 1.9e-9 exact). The Nemenyi p-values and CD stay the usual large-sample
ones. The Wilcoxon signed-rank test splits zero differences evenly between the positive and negative
ranks (``zero_method="zsplit"``), as Demsar 2006 (3.1.3) does; scipy's default drops them.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

#: Exact permutation p-values are enumerated while one step handles at most EXACT_BUDGET arrangements
#: and all steps together at most 4 x EXACT_BUDGET (about a second); else Monte Carlo.
EXACT_BUDGET = 250_000
#: Monte Carlo resamples for the permutation p-value when exact enumeration is too large.
PERMUTATIONS = 20_000
#: Differences are rounded to this many decimals before ranking, so that differences equal in the
#: data (e.g. 0.768 - 0.763 and 0.936 - 0.931) tie, as they do for Demsar, despite float rounding.
DIFF_DECIMALS = 12

INCOMPLETE_ADVICE = (
    "every model needs a finite score for the same replicates in every block: rerun or remove the "
    "failed runs, select models/data sets (--models, --data), or drop these blocks explicitly with "
    "--drop-incomplete (drop_incomplete=True), which the outputs then record"
)


def rank_scores(scores: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """Rank models (columns) within each block (row): 1 = best, average ranks for ties."""
    values = scores.to_numpy(dtype=float)
    ranks = stats.rankdata(values if lower_is_better else -values, axis=1, method="average")
    return pd.DataFrame(ranks, index=scores.index, columns=scores.columns)


@dataclass(frozen=True)
class FriedmanResult:
    n_blocks: int
    n_models: int
    average_ranks: pd.Series
    chi2: float  # Demsar's formula, no tie correction
    chi2_p: float
    chi2_ties: float  # tie-corrected, equals scipy.stats.friedmanchisquare
    chi2_ties_p: float
    iman_davenport: float  # from the tie-corrected chi2
    iman_davenport_p: float
    iman_davenport_uncorrected: float  # from Demsar's chi2, as in his worked example

    @property
    def df(self) -> tuple[int, int]:
        return self.n_models - 1, (self.n_models - 1) * (self.n_blocks - 1)


def _iman_davenport(chi2: float, n: int, k: int) -> float:
    denominator = n * (k - 1) - chi2
    return float("inf") if denominator <= 1e-12 else (n - 1) * chi2 / denominator


def friedman_test(ranks: pd.DataFrame) -> FriedmanResult:
    """Friedman chi-square and Iman-Davenport F of a blocks x models rank table."""
    r = ranks.to_numpy(dtype=float)
    n, k = r.shape
    if n < 2 or k < 2:
        raise ValueError(f"the Friedman test needs >= 2 blocks and >= 2 models, got {n} x {k}")
    if not np.isfinite(r).all():
        raise ValueError("the rank table holds NaN: every block needs a rank for every model")
    mean_ranks = r.mean(axis=0)
    chi2 = 12.0 * n / (k * (k + 1)) * (np.sum(mean_ranks**2) - k * (k + 1) ** 2 / 4.0)
    # Tie correction: each element's tie-group size t; summing t^2 - 1 over elements gives
    # sum over groups of t^3 - t.
    t = (r[:, :, None] == r[:, None, :]).sum(axis=2)
    correction = 1.0 - np.sum(t**2 - 1) / (n * k * (k * k - 1))
    chi2_ties = chi2 / correction if correction > 1e-12 else 0.0
    f_ties, f_plain = _iman_davenport(chi2_ties, n, k), _iman_davenport(chi2, n, k)
    df1, df2 = k - 1, (k - 1) * (n - 1)
    return FriedmanResult(
        n_blocks=n,
        n_models=k,
        average_ranks=pd.Series(mean_ranks, index=ranks.columns, name="average rank"),
        chi2=float(chi2),
        chi2_p=float(stats.chi2.sf(chi2, df1)),
        chi2_ties=float(chi2_ties),
        chi2_ties_p=float(stats.chi2.sf(chi2_ties, df1)),
        iman_davenport=f_ties,
        iman_davenport_p=float(stats.f.sf(f_ties, df1, df2)) if np.isfinite(f_ties) else 0.0,
        iman_davenport_uncorrected=f_plain,
    )


@dataclass(frozen=True)
class PermutationP:
    """P(Friedman statistic >= observed) when the ranks within each block are exchangeable."""

    p: float
    method: str  # "exact" or "monte carlo"
    n: int  # exact: within-block arrangements (first block fixed); else Monte Carlo resamples
    se: float  # Monte Carlo standard error; 0 when exact
    seed: int | None = None

    def describe(self) -> str:
        if self.method == "exact":
            return f"p = {self.p:.4g} (exact: all {self.n:.4g} within-block arrangements)"
        text = (
            f"p = {self.p:.4g} (Monte Carlo: {self.n} random within-block permutations, seed "
            f"{self.seed}; standard error {self.se:.2g}"
        )
        if self.p * (self.n + 1) < 1.5:  # (0 + 1) / (n + 1): no resample reached the observed
            text += "; no resample reached the observed statistic, so p is at most about this"
        return text + ")"


def _doubled_ranks(ranks: pd.DataFrame) -> np.ndarray:
    """Ranks times two as integers (average ranks of ties are multiples of 0.5)."""
    r2 = 2.0 * ranks.to_numpy(dtype=float)
    if not np.allclose(r2, np.rint(r2)):
        raise ValueError("ranks must be multiples of 0.5 (ranks 1..k, ties averaged)")
    return np.rint(r2).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _arrangements(row: tuple[int, ...]) -> np.ndarray:
    """The distinct orderings of one block's ranks (all k! when there are no ties)."""
    k = len(row)
    order = np.array(list(itertools.permutations(range(k))), dtype=np.int8)
    arr = np.asarray(row, dtype=np.int32)[order]
    if len(set(row)) < k:
        arr = np.unique(arr, axis=0)
    arr.flags.writeable = False
    return arr


def exact_friedman_p(ranks: pd.DataFrame, budget: int = EXACT_BUDGET) -> PermutationP | None:
    """Exact permutation p-value of the Friedman statistic, or None when too large to enumerate.

    The statistic is a function of sum_j R_j^2 (R_j: rank sum of model j); the tie correction is
    the same for every arrangement. The first block stays fixed; blocks are added one at a time,
    and partial rank-sum vectors equal up to the order of the models are merged (they lead to the
    same distribution of the statistic), so the work grows with the number of distinct vectors,
    not with (k!)^(N-1). Returns None as soon as one step would exceed ``budget`` arrangements or
    all steps together ``4 * budget``.
    """
    r2 = _doubled_ranks(ranks)
    n, k = r2.shape
    if math.factorial(k) > budget:
        return None
    observed = int(np.sum(r2.sum(axis=0) ** 2))
    # Doubled partial rank sums are below base: a sorted vector is encoded as one integer key.
    base = 2 * k * n + 1
    if k * math.log2(base) > 62:
        return None
    weights = base ** np.arange(k, dtype=np.int64)
    states, prob, total, work = np.sort(r2[:1], axis=1).astype(np.int32), np.ones(1), 1, 0
    for i in range(1, n):
        arr = _arrangements(tuple(int(v) for v in np.sort(r2[i])))
        work += len(states) * len(arr)
        if len(states) * len(arr) > budget or work > 4 * budget:
            return None
        total *= len(arr)
        sums = (states[:, None, :] + arr[None, :, :]).reshape(-1, k)
        w = np.repeat(prob / len(arr), len(arr))
        if i == n - 1:
            t = np.sum(sums.astype(np.int64) ** 2, axis=1)
            p = min(1.0, float(w[t >= observed].sum()))
            return PermutationP(p=p, method="exact", n=total, se=0.0)
        sums.sort(axis=1)
        _, first, inverse = np.unique(sums @ weights, return_index=True, return_inverse=True)
        states, prob = sums[first], np.bincount(inverse, weights=w)
    raise AssertionError("unreachable: n >= 2")


def _rank_sum_statistic(*columns, axis):
    return np.sum(np.stack([np.sum(c, axis=axis) for c in columns]) ** 2, axis=0)


def friedman_permutation_p(
    ranks: pd.DataFrame,
    n_resamples: int = PERMUTATIONS,
    seed: int = 0,
    exact_budget: int = EXACT_BUDGET,
) -> PermutationP:
    """Permutation p-value of the Friedman statistic: exact when feasible (:func:`exact_friedman_p`
    with ``exact_budget``), else Monte Carlo over ``n_resamples`` random within-block permutations
    (``seed``), as (b + 1) / (n_resamples + 1) with its standard error."""
    exact = exact_friedman_p(ranks, exact_budget)
    if exact is not None:
        return exact
    if n_resamples < 1:
        raise ValueError(f"permutations must be >= 1, got {n_resamples}")
    r2 = _doubled_ranks(ranks).astype(float)
    res = stats.permutation_test(
        tuple(r2.T),
        _rank_sum_statistic,
        permutation_type="samples",
        alternative="greater",
        n_resamples=n_resamples,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    p = float(res.pvalue)
    return PermutationP(
        p=p, method="monte carlo", n=n_resamples, se=math.sqrt(p * (1 - p) / n_resamples), seed=seed
    )


def nemenyi_q(k: int, alpha: float) -> float:
    """Demsar's q_alpha: the studentized range quantile (k groups, infinite df) over sqrt(2)."""
    if k < 2 or not 0 < alpha < 1:
        raise ValueError(f"nemenyi_q needs k >= 2 and 0 < alpha < 1, got k={k}, alpha={alpha}")
    return float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0))


def nemenyi_cd(k: int, n: int, alpha: float) -> float:
    """Critical difference of average ranks, CD = q_alpha sqrt(k (k + 1) / (6 N))."""
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6.0 * n)))


def nemenyi_pvalues(ranks: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Nemenyi p-values (scikit-posthocs), models x models."""
    p = sp.posthoc_nemenyi_friedman(ranks.to_numpy(dtype=float))
    names = list(ranks.columns)
    return pd.DataFrame(p.to_numpy(), index=names, columns=names)


def min_wilcoxon_p(n_blocks: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n pairs."""
    return min(1.0, 2.0 ** (1 - n_blocks))


def _zsplit_r_plus(d, axis):
    """R+ with the ranks of zero differences split evenly between R+ and R-."""
    r = stats.rankdata(np.abs(d), axis=axis)
    return np.sum(np.where(d > 0, r, 0.0) + np.where(d == 0, r / 2, 0.0), axis=axis)


def wilcoxon_signed_rank(diff: np.ndarray, zero_method: str = "zsplit") -> tuple[float, float]:
    """T = min(R+, R-) and the two-sided p of ``scipy.stats.wilcoxon(diff, zero_method)``.

    Differences are rounded to ``DIFF_DECIMALS`` first. With ties or zeros and at most 13 pairs
    scipy's p is an exact sign-flip permutation test, which scipy evaluates one arrangement at a
    time (about 30 s a pair at 13 pairs); the same test is run here with a vectorised statistic."""
    d = np.round(np.asarray(diff, dtype=float), DIFF_DECIMALS)
    nonzero = np.abs(d[d != 0])
    ties_or_zeros = len(nonzero) < len(d) or len(np.unique(nonzero)) < len(nonzero)
    if zero_method == "zsplit" and ties_or_zeros and len(d) <= 13:
        t = stats.wilcoxon(d, zero_method=zero_method, method="asymptotic").statistic
        perm = stats.permutation_test(
            (d,), _zsplit_r_plus, permutation_type="samples", n_resamples=np.inf, vectorized=True
        )
        return float(t), float(perm.pvalue)
    res = stats.wilcoxon(d, zero_method=zero_method)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_holm(scores: pd.DataFrame, alpha: float, zero_method: str = "zsplit") -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test of every pair of models over the blocks, Holm-adjusted.

    ``statistic`` is T = min(R+, R-). The default ``zsplit`` splits the ranks of zero differences
    evenly between R+ and R- (Demsar 2006, 3.1.3: T = 12 for C4.5 vs C4.5+m in his Table 2);
    scipy's own default ``wilcox`` discards them (T = 6.5 there)."""
    if scores.isna().any().any():
        raise ValueError("wilcoxon_holm: the score table holds NaN; " + INCOMPLETE_ADVICE)
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        diff = scores[a].to_numpy(dtype=float) - scores[b].to_numpy(dtype=float)
        stat, p = wilcoxon_signed_rank(diff, zero_method)
        rows.append({"model_a": a, "model_b": b, "statistic": stat, "p": p})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "statistic", "p"])
    if table.empty:
        return table.assign(p_holm=[], significant=[])
    # With zero_method="wilcox" and only zero differences scipy gives p = NaN: nothing to reject.
    table["p"] = table["p"].fillna(1.0)
    reject, p_holm, _, _ = multipletests(table["p"], alpha=alpha, method="holm")
    return table.assign(p_holm=p_holm, significant=reject)
