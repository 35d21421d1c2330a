"""Comparing models over blocks (data sets, or seeds of one data set), as paper 4.4 does: Friedman
test on the ranks, Iman-Davenport F, Nemenyi critical difference and pairwise p-values (Demsar 2006),
and pairwise Wilcoxon signed-rank tests with Holm's correction (Benavoli et al. 2016).

The Friedman chi-square is given both as Demsar writes it (no correction for ties; his worked example)
and with the tie correction of ``scipy.stats.friedmanchisquare``; the test decision uses the
tie-corrected Iman-Davenport F. Without ties the two coincide.
"""

from __future__ import annotations

import itertools
import json
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


def wilcoxon_holm(scores: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test of every pair of models over the blocks, Holm-adjusted."""
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        diff = scores[a].to_numpy(dtype=float) - scores[b].to_numpy(dtype=float)
        if np.allclose(diff, 0.0):
            stat, p = 0.0, 1.0
        else:
            res = stats.wilcoxon(diff)
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"model_a": a, "model_b": b, "statistic": stat, "p": p})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "statistic", "p"])
    if table.empty:
        return table.assign(p_holm=[], significant=[])
    reject, p_holm, _, _ = multipletests(table["p"], alpha=alpha, method="holm")
    return table.assign(p_holm=p_holm, significant=reject)


def resolve_blocks(
    df: pd.DataFrame, spec: str = "auto", model_col: str = "model"
) -> tuple[str, ...]:
    """Block columns from ``spec``: ``auto`` is data sets, times seeds when there is one data set,
    times settings when a model was run under several; otherwise columns joined by ``+``
    (``data+seed``)."""
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
    return blocks


def block_scores(
    df: pd.DataFrame, metric: str, blocks: tuple[str, ...], model_col: str = "model"
) -> pd.DataFrame:
    """Blocks x models table of ``metric``, averaging replicates inside a block (e.g. seeds when the
    blocks are data sets); blocks missing a model are dropped with a warning."""
    col = metric_column(metric, df.columns)
    keys = df[list(blocks)].astype("string").fillna("<none>")
    label = keys.apply(lambda c: c.name + "=" + c if c.name != "data" else c).agg(
        " | ".join, axis=1
    )
    table = (
        pd.DataFrame({"block": label, "model": df[model_col], "value": pd.to_numeric(df[col])})
        .groupby(["block", "model"], sort=True)["value"]
        .mean()
        .unstack("model")
    )
    incomplete = table.isna().any(axis=1)
    if incomplete.any():
        missing = {b: sorted(table.columns[table.loc[b].isna()]) for b in table.index[incomplete]}
        warnings.warn(
            f"{short_metric(col)}: dropped {int(incomplete.sum())} block(s) lacking a model: {missing}",
            ReportWarning,
            stacklevel=2,
        )
    return table.loc[~incomplete]


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

    @property
    def average_ranks(self) -> pd.Series:
        return self.friedman.average_ranks.sort_values(kind="stable")

    @property
    def block_text(self) -> str:
        return f"blocks = {' x '.join(self.blocks)} (N = {self.friedman.n_blocks})"

    @property
    def rejects_h0(self) -> bool:
        return self.friedman.iman_davenport_p < self.alpha

    def significant_pairs(self) -> list[tuple[str, str]]:
        """Nemenyi: pairs whose average ranks differ by more than the CD (better model first)."""
        r = self.average_ranks
        return [(a, b) for a, b in itertools.combinations(r.index, 2) if r[b] - r[a] > self.cd]

    def summary(self, pairwise: bool = True) -> str:
        """Readable report; ``pairwise=False`` leaves out the p-value tables."""
        f = self.friedman
        direction = "lower" if self.lower_is_better else "higher"
        ranks = ", ".join(f"{m} {r:.3f}" for m, r in self.average_ranks.items())
        sig = ", ".join(f"{a} < {b}" for a, b in self.significant_pairs()) or "none"
        lines = [
            f"metric: {self.metric} ({direction} is better) | {self.block_text} | "
            f"k = {f.n_models} models | alpha = {self.alpha:g}",
            f"average ranks (1 = best): {ranks}",
            f"Friedman chi2 = {f.chi2:.3f} (p = {f.chi2_p:.4g}); tie-corrected chi2 = "
            f"{f.chi2_ties:.3f} (p = {f.chi2_ties_p:.4g})",
            f"Iman-Davenport F = {f.iman_davenport:.3f} (df = {f.df[0]}, {f.df[1]}; "
            f"p = {f.iman_davenport_p:.4g}; without tie correction F = "
            f"{f.iman_davenport_uncorrected:.3f}) -> "
            + ("reject" if self.rejects_h0 else "retain")
            + f" H0 (all models equal) at alpha = {self.alpha:g}",
            f"Nemenyi: q_alpha = {self.q_alpha:.3f}, CD = {self.cd:.3f}; significantly different "
            f"(better < worse): {sig}",
        ]
        if pairwise:
            lines += [
                "Nemenyi p-values:",
                self.nemenyi_p.round(4).to_string(),
                "Wilcoxon signed-rank, Holm-adjusted:",
                self.wilcoxon.round(4).to_string(index=False),
            ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        f = self.friedman
        return {
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "blocks": list(self.blocks),
            "n_blocks": f.n_blocks,
            "n_models": f.n_models,
            "alpha": self.alpha,
            "average_ranks": {str(k): float(v) for k, v in self.average_ranks.items()},
            "friedman_chi2": f.chi2,
            "friedman_p": f.chi2_p,
            "friedman_chi2_ties": f.chi2_ties,
            "friedman_p_ties": f.chi2_ties_p,
            "iman_davenport_F": f.iman_davenport,
            "iman_davenport_p": f.iman_davenport_p,
            "iman_davenport_F_uncorrected": f.iman_davenport_uncorrected,
            "rejects_h0": bool(self.rejects_h0),
            "nemenyi_q_alpha": self.q_alpha,
            "nemenyi_cd": self.cd,
            "nemenyi_significant_pairs": [list(p) for p in self.significant_pairs()],
            "nemenyi_p": json.loads(self.nemenyi_p.to_json()),
            "wilcoxon_holm": json.loads(self.wilcoxon.to_json(orient="records")),
            "blocks_used": list(self.scores.index),
            "notes": list(self.notes),
        }


def compare_scores(
    scores: pd.DataFrame,
    metric: str,
    lower_is_better: bool | None = None,
    alpha: float = 0.1,
    blocks: tuple[str, ...] = ("block",),
    top: int | None = None,
) -> Comparison:
    """All statistics for a blocks x models score table; ``top`` keeps the best-ranked models only
    (the paper compares its top 4, fewer models than data sets) and re-ranks among them."""
    if lower_is_better is None:
        lower_is_better = metric_lower_is_better(metric)
    notes = []
    if top is not None and top < scores.shape[1]:
        overall = friedman_test(rank_scores(scores, lower_is_better)).average_ranks
        best = overall.nsmallest(top, keep="all")
        if len(best) > top:
            notes.append(
                f"top {top}: {len(best)} models kept, tied at average rank {best.max():.2f} among all models"
            )
        scores = scores[list(best.index)]
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
            f"{k} models on {n} blocks: the chi-square approximations are rough for N this small"
        )
    return Comparison(
        metric=metric,
        lower_is_better=lower_is_better,
        blocks=tuple(blocks),
        alpha=alpha,
        scores=scores,
        ranks=ranks,
        friedman=friedman_test(ranks),
        q_alpha=nemenyi_q(k, alpha),
        cd=nemenyi_cd(k, n, alpha),
        nemenyi_p=nemenyi_pvalues(ranks),
        wilcoxon=wilcoxon_holm(scores, alpha),
        notes=notes,
    )


def compare(
    df: pd.DataFrame,
    metric: str,
    blocks: str | tuple[str, ...] = "auto",
    alpha: float = 0.1,
    top: int | None = None,
    lower_is_better: bool | None = None,
    model_col: str = "model",
) -> Comparison:
    """:func:`compare_scores` on the tidy results of one experiment; ``model_col`` names what is
    compared (e.g. ``setting`` to compare ablation variants of one model)."""
    if isinstance(blocks, str):
        block_cols = resolve_blocks(df, blocks, model_col)
    else:
        block_cols = tuple(blocks)
    if model_col in block_cols:
        raise ValueError(f"{model_col!r} cannot be both what is compared and part of the blocks")
    scores = block_scores(df, metric, block_cols, model_col)
    return compare_scores(
        scores, metric_column(metric, df.columns), lower_is_better, alpha, block_cols, top
    )
