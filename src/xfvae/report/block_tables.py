"""Blocks x models score tables for the rank tests (paper 4.4), built from tidy results (one row
per run) and checked, never silently repaired.

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
inside a block; it is an error.

Inputs. A missing, NaN or infinite score is an error that names the model(s) and block(s); so is a
model lacking some of the replicates (seeds) that the other models have in a block, and so are
duplicate rows for one (block, model, seed). ``drop_incomplete=True`` (``--drop-incomplete``)
instead drops every incomplete block with a warning, and the outputs' header lists what was dropped.
Replicates per block and model are counted and reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xfvae.report.collect import ReportWarning
from xfvae.report.names import metric_column, short_metric
from xfvae.report.rank_tests import INCOMPLETE_ADVICE

BLOCK_COLUMNS = ("data", "seed", "setting")


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
            + INCOMPLETE_ADVICE
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
        raise ValueError(f"{metric}: {listed}. " + INCOMPLETE_ADVICE)
    if problems:
        warnings.warn(
            f"{metric}: dropped {len(problems)} incomplete block(s) (--drop-incomplete): {problems}",
            ReportWarning,
            stacklevel=3,
        )
    return numeric.loc[~bad.any(axis=1).to_numpy()], problems
