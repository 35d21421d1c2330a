"""Comparing models over blocks with Demsar's (2006) procedure, as paper 4.4 does: the Friedman test
on the ranks (with the Iman-Davenport F and an exact or Monte Carlo permutation p-value), Nemenyi
critical difference and pairwise p-values, and pairwise Wilcoxon signed-rank tests with Holm's
correction (Benavoli et al. 2016).

Blocks. The paper's blocks are data sets: each data set ranks the models once, and a significant
Friedman test says the models' ranks differ over data sets, a claim that reaches beyond any one data
set. ``blocks="auto"`` uses the data sets whenever the results hold several (the seeds of a data set
are then replicates, averaged inside its block) and data set x seed when there is only one. Seeds of
one data set as blocks answer a narrower question: whether the ranking on that one data set
survives a change of seed (initialisation, split). That is robustness to the seed, not
generalisation over data sets, and the two are not interchangeable: the outputs name their blocks,
and the command line names CD diagrams ``fig2_cd_<metric>`` (the paper's Figure 2) only when the
blocks are data sets, ``cd_<metric>_by_<blocks>`` otherwise. A block definition without ``data`` on
results holding several data sets would average each model over data sets of different scales
inside a block; it is an error. The paper compares its top 4 models (``top=4``, ``--top 4``),
chosen by average rank over all models on the same data sets.

Inputs are checked, never silently repaired: a missing, NaN or infinite score is an error that names
the model(s) and block(s); so is a model lacking some of the replicates (seeds) that the other models
have in a block, and so are duplicate rows for one (block, model, seed). ``drop_incomplete=True``
(``--drop-incomplete``) instead drops every incomplete block with a warning, and the outputs' header
lists what was dropped. Replicates per block and model are counted and reported.

Statistics. The Friedman chi-square is given both as Demsar writes it (no correction for ties; his
worked example) and with the tie correction of ``scipy.stats.friedmanchisquare``. Beside the
Iman-Davenport F approximation, the p-value of the statistic under the permutation null (the ranks
within each block exchangeable) is computed exactly when the enumeration is small enough (first
block fixed, arrangements with equal rank sums merged; always when (k!)^(N-1) <= ``EXACT_BUDGET``),
else by a seeded Monte Carlo (``scipy.stats.permutation_test``) whose standard error is reported.
The test decision uses the permutation p-value, valid for any number of blocks; with few blocks the
F approximation can be orders of magnitude too small (9 models on 3 seeds: 2.2e-12 by F, 1.9e-9
exact). The Nemenyi p-values and CD stay the usual large-sample ones. The Wilcoxon signed-rank test
splits zero differences evenly between the positive and negative ranks (``zero_method="zsplit"``),
as Demsar 2006 (3.1.3) does; scipy's default drops them.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from xfvae.report.collect import ReportWarning
from xfvae.report.names import lower_is_better as metric_lower_is_better
from xfvae.report.names import metric_column, short_metric

BLOCK_COLUMNS = ("data", "seed", "setting")
#: Exact permutation p-values are enumerated while one step handles at most EXACT_BUDGET arrangements
#: and all steps together at most 4 x EXACT_BUDGET (about a second); else Monte Carlo.
EXACT_BUDGET = 250_000
#: Monte Carlo resamples for the permutation p-value when exact enumeration is too large.
PERMUTATIONS = 20_000
#: Differences are rounded to this many decimals before ranking, so that differences equal in the
#: data (e.g. 0.768 - 0.763 and 0.936 - 0.931) tie, as they do for Demsar, despite float rounding.
DIFF_DECIMALS = 12
_INCOMPLETE_ADVICE = (
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
        raise ValueError("wilcoxon_holm: the score table holds NaN; " + _INCOMPLETE_ADVICE)
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


def check_blocks_separate_data_sets(df: pd.DataFrame, blocks: tuple[str, ...]) -> None:
    """Blocks must never pool data sets: without ``data`` in the blocks, results holding several
    data sets would be averaged over data sets (of different scales) inside each block."""
    if "data" in blocks or "data" not in df.columns:
        return
    datasets = sorted(df["data"].dropna().astype(str).unique())
    if len(datasets) > 1:
        raise ValueError(
            f"blocks = {'+'.join(blocks)} on results holding {len(datasets)} data sets "
            f"{datasets}: each block would average a model over data sets, so the ranks reflect "
            f"the data sets' scales, not the models. Use --blocks data (the paper's: one block per "
            f"data set, its seeds averaged), data+seed, or auto; or select one data set with --data"
        )


def resolve_blocks(
    df: pd.DataFrame, spec: str = "auto", model_col: str = "model"
) -> tuple[str, ...]:
    """Block columns from ``spec``: ``auto`` is data sets, times seeds when there is one data set,
    times settings when a model was run under several; otherwise columns joined by ``+``
    (``data+seed``), which must include ``data`` when the results hold several data sets."""
    if spec == "auto":
        blocks = ["data"]
        if df["data"].nunique() == 1:
            blocks.append("seed")
        if "setting" in df and model_col != "setting":
            settings = df["setting"].astype("string").fillna("")
            if settings.groupby(df[model_col]).nunique().max() > 1:
                blocks.append("setting")  # only when a model was run under several settings
        return tuple(blocks)
    blocks = tuple(s.strip() for s in spec.replace(",", "+").split("+") if s.strip())
    unknown = [b for b in blocks if b not in df.columns]
    if not blocks or unknown:
        raise ValueError(
            f"block definition {spec!r}: unknown column(s) {unknown}; use auto or columns joined by "
            f"'+' from {BLOCK_COLUMNS}"
        )
    check_blocks_separate_data_sets(df, blocks)
    return blocks


@dataclass(frozen=True)
class BlockTable:
    """A blocks x models score table with its replicate counts and the blocks dropped on request."""

    scores: pd.DataFrame
    replicates: pd.Series  # per block: replicates averaged per model (the same for every model)
    replicate_col: str | None
    dropped: dict[str, str]


def _block_labels(df: pd.DataFrame, blocks: tuple[str, ...]) -> pd.Series:
    keys = df[list(blocks)].astype("string").fillna("<none>")
    return keys.apply(lambda c: c.name + "=" + c if c.name != "data" else c).agg(" | ".join, axis=1)


def _duplicate_error(metric: str, tidy: pd.DataFrame, rep: str | None) -> ValueError:
    keys = ["block", "model", "replicate"]
    dup = tidy[tidy.duplicated(keys, keep=False)]
    groups = dup.groupby(keys, sort=True)["run"].agg(list)
    shown = "; ".join(
        f"block {b!r}, model {m!r}" + (f", {rep} {r}" if rep else "") + f": {len(runs)} rows {runs}"
        for (b, m, r), runs in groups.head(5).items()
    )
    return ValueError(
        f"{metric}: {len(groups)} (block, model{', ' + rep if rep else ''}) appear(s) more than "
        f"once, which would be averaged silently: {shown}. Keep one row per run (collect each run "
        f"once), select with --experiment/--models/--data, or add the column that tells them apart "
        f"to the blocks (e.g. --blocks data+setting)"
    )


def _incomplete_blocks(tidy: pd.DataFrame, models: list, rep: str | None) -> dict[str, str]:
    """Block -> what is missing there: a model without runs, or with NaN/absent replicates."""
    problems = {}
    for block, rows in tidy.groupby("block", sort=True):
        wanted = set(rows["replicate"])
        finite = rows[np.isfinite(rows["value"])]
        have = finite.groupby("model")["replicate"].agg(set)
        issues = []
        for m in models:
            lacking = sorted(wanted - have.get(m, set()), key=str)
            if not lacking:
                continue
            nan_runs = rows[(rows["model"] == m) & ~np.isfinite(rows["value"])]["run"].tolist()
            if m not in set(rows["model"]):
                issues.append(f"model {m!r} has no runs")
            elif rep:
                issues.append(
                    f"model {m!r} lacks {rep} {lacking}"
                    + (f" (NaN/inf score in {nan_runs})" if nan_runs else "")
                )
            else:
                issues.append(
                    f"model {m!r} has a NaN/inf score" + (f" ({nan_runs})" if nan_runs else "")
                )
        if issues:
            problems[block] = "; ".join(issues)
    return problems


def tidy_block_table(
    df: pd.DataFrame,
    metric: str,
    blocks: tuple[str, ...],
    model_col: str = "model",
    drop_incomplete: bool = False,
) -> BlockTable:
    """Blocks x models table of ``metric`` from tidy results (one row per run), averaging the
    replicates (seeds not in the blocks) of each model inside a block, after checking that every
    model has a finite score for the same replicates in every block and no (block, model, seed)
    appears twice. Incomplete blocks are an error, or dropped with a warning if
    ``drop_incomplete``."""
    col = metric_column(metric, df.columns)
    name = short_metric(col)
    check_blocks_separate_data_sets(df, blocks)
    rep = "seed" if "seed" in df.columns and "seed" not in blocks and model_col != "seed" else None
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    tidy = pd.DataFrame(
        {
            "block": _block_labels(df, blocks).to_numpy(),
            "model": df[model_col].astype("string").fillna("<none>").to_numpy(),
            "replicate": df[rep].astype("string").fillna("<none>").to_numpy() if rep else "",
            "value": values,
            "run": df["run_dir"].astype(str).to_numpy()
            if "run_dir" in df
            else df.index.astype(str),
        }
    )
    if tidy.duplicated(["block", "model", "replicate"]).any():
        raise _duplicate_error(name, tidy, rep)
    models = sorted(tidy["model"].unique())
    problems = _incomplete_blocks(tidy, models, rep)
    if problems and not drop_incomplete:
        listed = "; ".join(f"block {b!r}: {p}" for b, p in list(problems.items())[:10])
        raise ValueError(
            f"{name}: incomplete results in {len(problems)} block(s): {listed}. "
            + _INCOMPLETE_ADVICE
        )
    if problems:
        warnings.warn(
            f"{name}: dropped {len(problems)} incomplete block(s) (--drop-incomplete): {problems}",
            ReportWarning,
            stacklevel=2,
        )
    kept = tidy[~tidy["block"].isin(list(problems))]
    grouped = kept.groupby(["block", "model"], sort=True)["value"]
    scores = grouped.mean().unstack("model")
    scores.columns.name = None
    replicates = grouped.size().groupby("block").first().rename("replicates")
    return BlockTable(scores, replicates, rep, dict(problems))


def block_scores(
    df: pd.DataFrame,
    metric: str,
    blocks: tuple[str, ...],
    model_col: str = "model",
    drop_incomplete: bool = False,
) -> pd.DataFrame:
    """The blocks x models score table of :func:`tidy_block_table`."""
    return tidy_block_table(df, metric, blocks, model_col, drop_incomplete).scores


def check_score_table(scores: pd.DataFrame, metric: str, drop_incomplete: bool = False):
    """A numeric copy of a blocks x models table and the blocks dropped: a missing, NaN, infinite or
    non-numeric score is an error naming the model(s) and block(s), unless ``drop_incomplete``
    (then its blocks are dropped with a warning). Duplicate block names are an error."""
    dup = scores.index[scores.index.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{metric}: block(s) {dup} appear more than once; give each block one row")
    numeric = scores.apply(pd.to_numeric, errors="coerce").astype(float)
    bad = ~np.isfinite(numeric)
    problems = {
        str(block): "missing/NaN/non-numeric score for model(s) "
        + ", ".join(repr(str(m)) for m in numeric.columns[bad.loc[block].to_numpy()])
        for block in numeric.index[bad.any(axis=1).to_numpy()]
    }
    if problems and not drop_incomplete:
        listed = "; ".join(f"block {b!r}: {p}" for b, p in list(problems.items())[:10])
        raise ValueError(f"{metric}: {listed}. " + _INCOMPLETE_ADVICE)
    if problems:
        warnings.warn(
            f"{metric}: dropped {len(problems)} incomplete block(s) (--drop-incomplete): {problems}",
            ReportWarning,
            stacklevel=3,
        )
    return numeric.loc[~bad.any(axis=1).to_numpy()], problems


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


@dataclass
class Comparison:
    """Everything the report says about one metric."""

    metric: str
    lower_is_better: bool
    blocks: tuple[str, ...]
    alpha: float
    scores: pd.DataFrame
    ranks: pd.DataFrame
    friedman: FriedmanResult
    q_alpha: float
    cd: float
    nemenyi_p: pd.DataFrame
    wilcoxon: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    permutation: PermutationP | None = None
    replicates: pd.Series | None = None  # per block, the replicates averaged per model
    replicate_col: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # block -> why it was dropped
    top: int | None = None
    n_models_total: int | None = None

    @property
    def average_ranks(self) -> pd.Series:
        return self.friedman.average_ranks.sort_values(kind="stable")

    @property
    def block_text(self) -> str:
        n = f"N = {self.friedman.n_blocks}"
        if self.dropped:
            n += f"; dropped {len(self.dropped)} incomplete: {', '.join(self.dropped)}"
        return f"blocks = {' x '.join(self.blocks)} ({n})"

    @property
    def blocks_are_data_sets(self) -> bool:
        """Blocks are data sets, as in the paper's Figure 2."""
        return tuple(self.blocks) == ("data",) and self.friedman.n_blocks >= 2

    @property
    def rejects_h0_f(self) -> bool:
        """The decision of the Iman-Davenport F approximation."""
        return self.friedman.iman_davenport_p < self.alpha

    @property
    def rejects_h0(self) -> bool:
        """The decision: on the permutation p-value when there is one, else on the F test."""
        if self.permutation is None:
            return self.rejects_h0_f
        return self.permutation.p < self.alpha

    @property
    def models_text(self) -> str:
        k = self.friedman.n_models
        if self.top is None or self.n_models_total is None:
            return f"k = {k} models"
        return (
            f"k = {k} models: the top {self.top} of {self.n_models_total} by average rank over all"
        )

    @property
    def replicates_text(self) -> str:
        if self.replicates is None or self.replicates.empty:
            return "replicates: one score per block and model (given as a table)"
        lo, hi = int(self.replicates.min()), int(self.replicates.max())
        count = str(lo) if lo == hi else f"{lo}-{hi}"
        what = f" ({self.replicate_col}s, averaged)" if self.replicate_col and hi > 1 else ""
        return f"replicates per block and model: {count}{what}"

    def significant_pairs(self) -> list[tuple[str, str]]:
        """Nemenyi: pairs whose average ranks differ by more than the CD (better model first)."""
        r = self.average_ranks
        return [(a, b) for a, b in itertools.combinations(r.index, 2) if r[b] - r[a] > self.cd]

    def _decision_text(self) -> str:
        verdict = "reject" if self.rejects_h0 else "retain"
        text = f"-> {verdict} H0 (all models equal) at alpha = {self.alpha:g}"
        if self.permutation is None:
            return text + " (F approximation)"
        agree = "agrees" if self.rejects_h0_f == self.rejects_h0 else "DISAGREES"
        return text + f" (on the permutation p; the F approximation {agree})"

    def summary(self, pairwise: bool = True) -> str:
        """Readable report; ``pairwise=False`` leaves out the p-value tables."""
        f = self.friedman
        direction = "lower" if self.lower_is_better else "higher"
        ranks = ", ".join(f"{m} {r:.3f}" for m, r in self.average_ranks.items())
        sig = ", ".join(f"{a} < {b}" for a, b in self.significant_pairs()) or "none"
        lines = [
            f"metric: {self.metric} ({direction} is better) | {self.block_text} | "
            f"{self.models_text} | alpha = {self.alpha:g}",
            self.replicates_text,
            f"average ranks (1 = best): {ranks}",
            f"Friedman chi2 = {f.chi2:.3f} (p = {f.chi2_p:.4g}); tie-corrected chi2 = "
            f"{f.chi2_ties:.3f} (p = {f.chi2_ties_p:.4g})",
            f"Iman-Davenport F = {f.iman_davenport:.3f} (df = {f.df[0]}, {f.df[1]}; "
            f"F approximation p = {f.iman_davenport_p:.4g}; without tie correction F = "
            f"{f.iman_davenport_uncorrected:.3f})",
        ]
        if self.permutation is not None:
            lines.append(
                f"permutation test of the Friedman statistic: {self.permutation.describe()}"
            )
        lines += [
            self._decision_text(),
            f"Nemenyi: q_alpha = {self.q_alpha:.3f}, CD = {self.cd:.3f}; significantly different "
            f"(better < worse): {sig}",
        ]
        if pairwise:
            lines += [
                "Nemenyi p-values:",
                self.nemenyi_p.round(4).to_string(),
                "Wilcoxon signed-rank (zero differences split between the signs, Demsar 2006), "
                "Holm-adjusted; statistic T = min(R+, R-):",
                self.wilcoxon.round(4).to_string(index=False),
            ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Strict-JSON-ready (no NaN or infinity: those are None)."""
        f, perm = self.friedman, self.permutation
        reps = self.replicates
        return {
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "blocks": list(self.blocks),
            "blocks_are_data_sets": self.blocks_are_data_sets,
            "n_blocks": f.n_blocks,
            "n_models": f.n_models,
            "top": self.top,
            "n_models_total": self.n_models_total,
            "alpha": self.alpha,
            "average_ranks": {str(k): float(v) for k, v in self.average_ranks.items()},
            "friedman_chi2": f.chi2,
            "friedman_p": f.chi2_p,
            "friedman_chi2_ties": f.chi2_ties,
            "friedman_p_ties": f.chi2_ties_p,
            "iman_davenport_F": _finite_or_none(f.iman_davenport),
            "iman_davenport_p": f.iman_davenport_p,
            "iman_davenport_F_uncorrected": _finite_or_none(f.iman_davenport_uncorrected),
            "permutation_p": perm.p if perm else None,
            "permutation_method": perm.method if perm else None,
            "permutation_n": perm.n if perm else None,
            "permutation_se": perm.se if perm else None,
            "permutation_seed": perm.seed if perm else None,
            "rejects_h0": bool(self.rejects_h0),
            "rejects_h0_f_approximation": bool(self.rejects_h0_f),
            "nemenyi_q_alpha": self.q_alpha,
            "nemenyi_cd": self.cd,
            "nemenyi_significant_pairs": [list(p) for p in self.significant_pairs()],
            "nemenyi_p": json.loads(self.nemenyi_p.to_json()),
            "wilcoxon_zero_method": "zsplit",
            "wilcoxon_holm": json.loads(self.wilcoxon.to_json(orient="records")),
            "blocks_used": [str(b) for b in self.scores.index],
            "replicate_column": self.replicate_col,
            "replicates": {str(b): int(n) for b, n in reps.items()} if reps is not None else None,
            "dropped_blocks": dict(self.dropped),
            "notes": list(self.notes),
        }


def _select_top(scores: pd.DataFrame, top: int, lower_is_better: bool, notes: list[str]):
    if top < 2:
        raise ValueError(f"--top must be >= 2 models, got {top}")
    if top >= scores.shape[1]:
        notes.append(f"top {top}: all {scores.shape[1]} models kept")
        return scores
    overall = friedman_test(rank_scores(scores, lower_is_better)).average_ranks
    best = overall.nsmallest(top, keep="all")
    if len(best) > top:
        notes.append(
            f"top {top}: {len(best)} models kept, tied at average rank {best.max():.2f} among all "
            f"models"
        )
    notes.append(
        f"top {top} chosen by average rank over all {scores.shape[1]} models on the same blocks "
        f"(the paper's practice): the tests then compare models selected on these data"
    )
    return scores[list(best.index)]


def compare_scores(
    scores: pd.DataFrame,
    metric: str,
    lower_is_better: bool | None = None,
    alpha: float = 0.1,
    blocks: tuple[str, ...] = ("block",),
    top: int | None = None,
    drop_incomplete: bool = False,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> Comparison:
    """All statistics for a blocks x models score table; ``top`` keeps the best-ranked models only
    (the paper compares its top 4, fewer models than data sets) and re-ranks among them. A missing
    or NaN score is an error unless ``drop_incomplete`` (its blocks are then dropped and recorded);
    ``permutations`` and ``seed`` set the Monte Carlo permutation p-value when exact enumeration is
    too large."""
    if lower_is_better is None:
        lower_is_better = metric_lower_is_better(metric)
    scores, dropped = check_score_table(scores, metric, drop_incomplete)
    notes = [f"dropped incomplete block {b!r}: {why}" for b, why in dropped.items()]
    n_models_total = scores.shape[1]
    if top is not None:
        scores = _select_top(scores, top, lower_is_better, notes)
    n, k = scores.shape
    if n < 2 or k < 2:
        raise ValueError(
            f"{metric}: need >= 2 complete blocks and >= 2 models to compare, got {n} blocks x {k} "
            f"models (blocks = {' x '.join(blocks)}); run more seeds/data sets or change --blocks"
        )
    ranks = rank_scores(scores, lower_is_better)
    m = k * (k - 1) // 2
    if min_wilcoxon_p(n) >= alpha / m:
        notes.append(
            f"with N = {n} blocks the smallest possible two-sided Wilcoxon p is {min_wilcoxon_p(n):.3g} "
            f">= alpha / {m} pairs = {alpha / m:.3g}, so no pair can be significant after Holm's "
            f"correction; more blocks (data sets or seeds) are needed"
        )
        warnings.warn(f"{metric}: {notes[-1]}", ReportWarning, stacklevel=2)
    if k >= n:
        notes.append(
            f"{k} models on {n} blocks: the chi-square and F approximations are rough for N this "
            f"small; the decision uses the permutation p-value"
        )
    friedman = friedman_test(ranks)
    permutation = friedman_permutation_p(ranks, permutations, seed)
    if (permutation.p < alpha) != (friedman.iman_davenport_p < alpha):
        notes.append(
            f"the F approximation (p = {friedman.iman_davenport_p:.4g}) and the permutation test "
            f"(p = {permutation.p:.4g}) disagree at alpha = {alpha:g}; the decision follows the "
            f"permutation test"
        )
    return Comparison(
        metric=metric,
        lower_is_better=lower_is_better,
        blocks=tuple(blocks),
        alpha=alpha,
        scores=scores,
        ranks=ranks,
        friedman=friedman,
        q_alpha=nemenyi_q(k, alpha),
        cd=nemenyi_cd(k, n, alpha),
        nemenyi_p=nemenyi_pvalues(ranks),
        wilcoxon=wilcoxon_holm(scores, alpha),
        notes=notes,
        permutation=permutation,
        dropped=dropped,
        top=top,
        n_models_total=n_models_total if top is not None else None,
    )


def compare(
    df: pd.DataFrame,
    metric: str,
    blocks: str | tuple[str, ...] = "auto",
    alpha: float = 0.1,
    top: int | None = None,
    lower_is_better: bool | None = None,
    model_col: str = "model",
    drop_incomplete: bool = False,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> Comparison:
    """:func:`compare_scores` on the tidy results of one experiment; ``model_col`` names what is
    compared (e.g. ``setting`` to compare ablation variants of one model)."""
    if isinstance(blocks, str):
        block_cols = resolve_blocks(df, blocks, model_col)
    else:
        block_cols = tuple(blocks)
    if model_col in block_cols:
        raise ValueError(f"{model_col!r} cannot be both what is compared and part of the blocks")
    table = tidy_block_table(df, metric, block_cols, model_col, drop_incomplete)
    c = compare_scores(
        table.scores,
        metric_column(metric, df.columns),
        lower_is_better,
        alpha,
        block_cols,
        top,
        permutations=permutations,
        seed=seed,
    )
    c.replicates = table.replicates.reindex(c.scores.index)
    c.replicate_col = table.replicate_col
    c.dropped = dict(table.dropped)
    c.notes[:0] = [f"dropped incomplete block {b!r}: {why}" for b, why in table.dropped.items()]
    return c
