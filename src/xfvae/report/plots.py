"""The paper's figures: CD diagrams (Figure 2), metric against sub-sampling percentage (Figure 3) and
test RMSE against iteration per variant (Figure 4).

Figures are built as :class:`matplotlib.figure.Figure` objects (no pyplot state), so they save
headless and still display in a notebook. Lines differ by marker and line style, not only colour, so
they stay readable in grayscale.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from matplotlib import transforms
from matplotlib.figure import Figure

from xfvae.report.collect import ReportWarning, resolve_run_dir
from xfvae.report.comparison import Comparison
from xfvae.report.names import (
    MODEL_LABELS,
    data_label,
    metric_column,
    metric_label,
    model_label,
    order_by,
    setting_value,
)
from xfvae.runs.atomic import atomic_write_bytes

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")


def line_styles(n: int) -> list[dict]:
    """n distinct (line style, marker, gray level) combinations."""
    grays = np.linspace(0.0, 0.55, max(n, 1))
    return [
        {
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)],
            "color": f"{g:.2f}",
        }
        for i, g in enumerate(grays[:n])
    ]


def save_figure(fig: Figure, stem: str | os.PathLike) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=200, bbox_inches="tight")
        paths.append(atomic_write_bytes(f"{stem}.{ext}", buf.getvalue()))
    return paths


def cd_diagram(comparison: Comparison, ax=None) -> Figure:
    """The CD diagram (the paper's Figure 2 when the blocks are data sets): average ranks on an axis
    spanning 1..k, models joined by a bar where Nemenyi finds no significant difference at
    ``comparison.alpha``, and the CD drawn above the axis. The title names the blocks."""
    k = comparison.friedman.n_models
    if ax is None:
        fig = Figure(figsize=(6.4, 1.2 + 0.3 * k))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    labels = {m: model_label(m) for m in comparison.nemenyi_p.index}
    ranks = comparison.average_ranks.rename(index=labels)
    sig = comparison.nemenyi_p.rename(index=labels, columns=labels)
    artists = sp.critical_difference_diagram(
        ranks,
        sig,
        alpha=comparison.alpha,
        ax=ax,
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
        color_palette=["black"] * k,
        marker_props={"marker": "o", "color": "black"},
    )
    # The axis spans every possible rank, 1..k, not only the observed ones: labels move out to its
    # ends (scikit-posthocs puts them beside the best and worst observed ranks).
    ax.set_xlim(1, k)
    ax.set_xticks(range(1, k + 1))
    for elbow, label in zip(artists["elbows"], artists["labels"], strict=True):
        end = (
            1 - 0.05 * (k - 1) if label.get_horizontalalignment() == "right" else k + 0.05 * (k - 1)
        )
        x = np.asarray(elbow.get_xdata(), dtype=float)
        elbow.set_xdata([end, x[1], x[2]])
        elbow.set_clip_on(False)
        label.set_x(end)
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("average rank (1 = best)", fontsize=9)
    # The CD bar above the tick labels and axis label: x in rank units, y in points above the axes.
    above = transforms.offset_copy(
        transforms.blended_transform_factory(ax.transData, ax.transAxes),
        fig=fig,
        y=34,
        units="points",
    )
    start = float(ranks.iloc[0])
    ax.plot(
        [start, start + comparison.cd],
        [1, 1],
        transform=above,
        color="black",
        linewidth=2,
        clip_on=False,
    )
    ax.plot(
        [start] * 2 + [start + comparison.cd] * 2,
        [0.97, 1.03] * 2,
        transform=above,
        color="black",
        linewidth=0,
        marker="|",
        markersize=6,
        clip_on=False,
    )
    ax.text(
        start + comparison.cd,
        1,
        f"CD = {comparison.cd:.2f}",
        va="center",
        fontsize=9,
        transform=transforms.offset_copy(above, fig=fig, x=6, units="points"),
    )
    models = f"k = {k}"
    if comparison.top is not None and comparison.n_models_total is not None:
        models += f" (top {comparison.top} of {comparison.n_models_total})"
    ax.set_title(
        f"{metric_label(comparison.metric)}: {comparison.block_text}, "
        f"{models}, alpha = {comparison.alpha:g}",
        fontsize=9,
        pad=48,
    )
    return fig


def subsampling_percent(df: pd.DataFrame) -> pd.Series:
    """Training percentage of each run: ``frac=`` in ``setting``, else the ``train_frac`` column."""
    from_setting = pd.to_numeric(
        df["setting"].map(lambda s: setting_value(s, "frac")), errors="coerce"
    )
    if "train_frac" in df:
        from_setting = from_setting.fillna(pd.to_numeric(df["train_frac"], errors="coerce"))
    if from_setting.isna().any():
        raise ValueError(
            f"{int(from_setting.isna().sum())} run(s) have neither a 'frac=...' setting nor "
            f"train_frac, e.g. {df.loc[from_setting.isna(), 'run_dir'].head(3).tolist()}"
        )
    return 100.0 * from_setting


def plot_subsampling(df: pd.DataFrame, metrics=("rmse",)) -> Figure:
    """Figure 3: one panel per data set (rows) and metric (columns); per model the mean over seeds
    against the sub-sampling percentage, with +-1 sd error bars."""
    pct = subsampling_percent(df)
    datasets = order_by(df["data"], {})
    models = order_by(df["model"], MODEL_LABELS)
    styles = dict(zip(models, line_styles(len(models)), strict=True))
    fig = Figure(figsize=(3.2 * len(metrics), 2.8 * len(datasets) + 0.6), layout="constrained")
    axes = fig.subplots(len(datasets), len(metrics), squeeze=False)
    for j, metric in enumerate(metrics):
        col = metric_column(metric, df.columns)
        stats = (
            df.assign(pct=pct, value=pd.to_numeric(df[col]))
            .groupby(["data", "model", "pct"])["value"]
            .agg(["mean", "std"])
            .reset_index()
        )
        for i, data in enumerate(datasets):
            ax = axes[i, j]
            for model in models:
                s = stats[(stats["data"] == data) & (stats["model"] == model)]
                if s.empty:
                    continue
                ax.errorbar(
                    s["pct"],
                    s["mean"],
                    yerr=s["std"].fillna(0.0),
                    label=model_label(model),
                    capsize=2,
                    markersize=4,
                    linewidth=1,
                    **styles[model],
                )
            ax.set_xticks(sorted(stats["pct"].unique()))
            ax.set_xlabel("training data (%)")
            ax.set_ylabel(f"test {metric_label(col)}")
            ax.set_title(data_label(data), fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 9), fontsize=8)
    return fig


def load_histories(df: pd.DataFrame, base_dir=None, group_col: str = "setting") -> pd.DataFrame:
    """Every run's history.csv, stacked, with its group (variant), data set and seed."""
    base_dir = base_dir if base_dir is not None else df.attrs.get("base_dir")
    frames, missing = [], []
    for run in df[["run_dir", group_col, "data", "seed"]].itertuples(index=False):
        path = resolve_run_dir(str(run[0]), base_dir) / "history.csv"
        if not path.is_file():
            missing.append(str(path))
            continue
        frames.append(pd.read_csv(path).assign(group=run[1], data=run[2], seed=run[3]))
    if missing:
        warnings.warn(
            f"{len(missing)} run(s) without history.csv skipped: {missing[:3]}",
            ReportWarning,
            stacklevel=2,
        )
    if not frames:
        raise FileNotFoundError(
            f"no history.csv found for the {len(df)} selected run(s) (base dir {base_dir})"
        )
    return pd.concat(frames, ignore_index=True)


def variant_label(group) -> str:
    value = setting_value(group, "variant") or setting_value(group) or "default"
    return f"Variant {value}" if len(str(value)) == 1 else str(value)


def plot_convergence(
    histories: pd.DataFrame, column: str = "test_rmse", max_epoch: int | None = None
) -> Figure:
    """Figure 4: per data set, the mean ``column`` over seeds against the epoch for each variant,
    with a +-1 sd band."""
    h = histories if max_epoch is None else histories[histories["epoch"] <= max_epoch]
    curves = (
        h.groupby(["data", "group", "epoch"])[column].agg(["mean", "std", "count"]).reset_index()
    )
    datasets = order_by(curves["data"], {})
    groups = sorted(curves["group"].astype(str).unique(), key=variant_label)
    styles = dict(zip(groups, line_styles(len(groups)), strict=True))
    fig = Figure(figsize=(5.5 * len(datasets), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])
    for ax, data in zip(axes, datasets, strict=True):
        for group in groups:
            c = curves[(curves["data"] == data) & (curves["group"].astype(str) == group)]
            if c.empty:
                continue
            sd = c["std"].fillna(0.0)
            style = styles[group]
            every = max(1, len(c) // 10)
            ax.plot(
                c["epoch"],
                c["mean"],
                label=variant_label(group),
                markevery=every,
                markersize=4,
                **style,
            )
            ax.fill_between(
                c["epoch"],
                c["mean"] - sd,
                c["mean"] + sd,
                color=style["color"],
                alpha=0.15,
                linewidth=0,
            )
        ax.set_xlabel("iteration (epoch)")
        ax.set_ylabel(f"test {metric_label(column.replace('test_', ''))}")
        ax.set_title(data_label(data), fontsize=10)
        ax.legend(fontsize=8)
    return fig
