"""The model comparison of paper 4.4 (Demsar 2006) for one metric: a checked blocks x models table
(:mod:`xfvae.report.block_tables`), the rank tests on it (:mod:`xfvae.report.rank_tests`) and the
decision, as one :class:`Comparison` that prints itself and serialises to strict JSON. The paper
compares its top 4 models (``top=4``, ``--top 4``), chosen by average rank over all models on the
same data sets.
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xfvae.report.block_tables import check_score_table, resolve_blocks, tidy_block_table
from xfvae.report.collect import ReportWarning
from xfvae.report.names import lower_is_better as metric_lower_is_better
from xfvae.report.names import metric_column
from xfvae.report.rank_tests import (
    PERMUTATIONS,
    FriedmanResult,
    PermutationP,
    friedman_permutation_p,
    friedman_test,
    min_wilcoxon_p,
    nemenyi_cd,
    nemenyi_pvalues,
    nemenyi_q,
    rank_scores,
    wilcoxon_holm,
)


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
