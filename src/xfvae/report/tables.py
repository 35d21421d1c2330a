"""The paper's Tables 1, 3 and 4 from the tidy results, as Markdown and LaTeX (booktabs).

Cells are mean +- sd over seeds; the best value of each column within a metric is bold (ties at the
printed precision all bold) unless the column is saturated: its spread across models is below the
seed-to-seed noise (:func:`saturation`), which a note then says. The paper's published number can
sit beside each of our columns where the data set is one of the paper's. :func:`protocol_table` and
:func:`pattern_table` show the ranking metrics under every recorded protocol (xfvae.scoring.metrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xfvae.report import paper_numbers
from xfvae.report.names import (
    METRICS,
    MODEL_LABELS,
    RANKING_METRICS,
    VARIANT_LABELS,
    canonical_variant,
    data_label,
    lower_is_better,
    metric_column,
    metric_label,
    model_label,
    order_by,
    protocol_column,
    protocols_in,
    setting_value,
    short_metric,
)

MISSING = "–"


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """Rows in groups (one group per metric); ``group_header`` None means a single unnamed group."""

    header: list[str]
    groups: list[tuple[str, list[list[Cell]]]]
    group_header: str | None = "Metric"
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    #: (metric label, data set label) of the columns left without a best (see :func:`saturation`).
    saturated: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_columns(self) -> int:
        return len(self.header) + (self.group_header is not None)


def _fmt(mean: float, sd: float, n: int, digits: int) -> str:
    if np.isnan(mean):
        return MISSING
    if n < 2 or np.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _bold_best(values: list[float], lower: bool, digits: int) -> list[bool]:
    rounded = np.round(np.asarray(values, dtype=float), digits)
    if np.all(np.isnan(rounded)):
        return [False] * len(values)
    best = np.nanmin(rounded) if lower else np.nanmax(rounded)
    return list(rounded == best)


def saturation(means, sds, digits: int = 3) -> str | None:
    """Why no model is the best of ``means`` (one per model; ``sds`` their sd over seeds), or None.

    A column is saturated when the spread of the model means is below the seed-to-seed noise: the
    root-mean-square of the sds (unknown with one seed) or, at least, the printed precision
    10**-digits (every model within 0.001 at three digits)."""
    means, sds = np.asarray(means, dtype=float), np.asarray(sds, dtype=float)
    finite = means[~np.isnan(means)]
    if finite.size < 2:
        return None
    spread = float(finite.max() - finite.min())
    sd = float(np.sqrt(np.nanmean(sds**2))) if np.isfinite(sds).any() else float("nan")
    if np.isfinite(sd) and spread < sd:
        return f"the models span {spread:.4f}, less than the seed-to-seed sd {sd:.4f}"
    if spread < 10.0**-digits:
        return f"the models span {spread:.4f}, less than the printed precision {10.0**-digits:g}"
    return None


def metric_table(
    df: pd.DataFrame,
    row_col: str,
    row_labels: dict[str, str],
    metrics=tuple(METRICS),
    paper: dict | None = None,
    row_header: str = "Model",
    digits: int = 3,
) -> Table:
    """Metric groups x rows (``row_col`` values) x data set columns, with optional paper columns."""
    protocol_note = _protocol_note(df, metrics)
    datasets = order_by(df["data"], {d: d for d in paper_numbers.DATASETS})
    rows = order_by(df[row_col], row_labels)
    header = [row_header]
    for data in datasets:
        header.append(data_label(data))
        if paper is not None and data in paper_numbers.DATASETS:
            header.append(f"{data_label(data)} (paper)")
    groups, counts, notes, saturated = [], set(), [], []
    for metric in metrics:
        col = metric_column(metric, df.columns)
        lower = lower_is_better(col)
        agg = (
            df.assign(value=pd.to_numeric(df[col]))
            .groupby([row_col, "data"])["value"]
            .agg(["mean", "std", "count"])
        )
        counts.update(agg["count"].astype(int).tolist())
        columns: list[list[Cell]] = []
        for data in datasets:
            stat = agg.reindex(pd.MultiIndex.from_product([rows, [data]]))
            means = stat["mean"].to_numpy(dtype=float)
            bold = _bold_best(means, lower, digits)
            why = saturation(means, stat["std"].to_numpy(dtype=float), digits)
            if why:
                bold = [False] * len(bold)
                saturated.append((metric_label(col), data_label(data)))
                notes.append(
                    f"{metric_label(col)} on {data_label(data)} is saturated: {why}, so no "
                    "best is marked."
                )
            columns.append(
                [
                    Cell(_fmt(m, s, int(0 if np.isnan(n) else n), digits), b)
                    for m, s, n, b in zip(
                        means, stat["std"], stat["count"].astype(float), bold, strict=True
                    )
                ]
            )
            if paper is not None and data in paper_numbers.DATASETS:
                published = [
                    paper.get(short_metric(col), {}).get(r, {}).get(data, np.nan) for r in rows
                ]
                bold = _bold_best(published, lower, digits)
                columns.append(
                    [
                        Cell(_fmt(v, np.nan, 1, digits), b)
                        for v, b in zip(published, bold, strict=True)
                    ]
                )
        body = [
            [Cell(row_labels.get(r, str(r)))] + [c[i] for c in columns] for i, r in enumerate(rows)
        ]
        groups.append((metric_label(col), body))
    seeds = f"{min(counts)}" if len(counts) == 1 else f"{min(counts)}-{max(counts)}"
    notes.insert(
        0, f"Mean ± sd over {seeds} seed(s); the best value per column and metric in bold."
    )
    if protocol_note:
        notes.insert(1, protocol_note)
    if paper is not None and any(h.endswith("(paper)") for h in header):
        notes.append("Columns marked (paper): the numbers published by Jin et al.")
    return Table(header=header, groups=groups, notes=notes, saturated=saturated)


def _protocol_note(df: pd.DataFrame, metrics) -> str | None:
    """Which ranking protocol the ranking metrics follow; an error when the runs mix protocols."""
    if "test/protocol" not in df.columns:
        return None
    if not any(short_metric(str(m)) in RANKING_METRICS for m in metrics):
        return None
    used = sorted(df["test/protocol"].dropna().astype(str).unique())
    if len(used) > 1:
        raise ValueError(
            f"the runs' ranking metrics come from different protocols {used} (test/protocol of "
            "metrics.json): tabulate runs of one protocol, or every protocol's own columns with "
            "`python -m xfvae.report protocols`"
        )
    return (
        f"Ranking metrics under the {used[0]!r} protocol (xfvae.scoring.metrics)." if used else None
    )


def table3(df: pd.DataFrame, metrics=tuple(METRICS), paper: bool = True) -> Table:
    """Table 3: every model on every data set, per metric."""
    labels = {m: model_label(m) for m in order_by(df["model"], MODEL_LABELS)}
    t = metric_table(df, "model", labels, metrics, paper_numbers.TABLE3 if paper else None)
    t.caption = "Evaluation results of each model across the data sets with different metrics (cf. Table 3)."
    return t


def ablation_variant(setting) -> str:
    """Table 4 row of a run from its setting (``ablation=...`` or ``variant=...`` or bare value)."""
    value = (
        setting_value(setting, "ablation")
        or setting_value(setting, "variant")
        or setting_value(setting)
    )
    return "(no setting)" if value is None else canonical_variant(value)


def table4(df: pd.DataFrame, metrics=tuple(METRICS), paper: bool = True) -> Table:
    """Table 4: the ablation variants of our model, per metric."""
    df = df.assign(variant=df["setting"].map(ablation_variant))
    labels = {v: VARIANT_LABELS.get(v, v) for v in order_by(df["variant"], VARIANT_LABELS)}
    t = metric_table(
        df,
        "variant",
        labels,
        metrics,
        paper_numbers.TABLE4 if paper else None,
        row_header="Components",
    )
    t.caption = "Ablation study of our framework (cf. Table 4)."
    return t


def protocol_table(df: pd.DataFrame, protocols=None, digits: int = 3) -> Table:
    """Ranking metrics of every model under each protocol (``test/<protocol>/<metric>`` columns):
    one group per protocol and data set, RMSE beside them, and whether N = 50 lies below N = 20."""
    protocols = list(protocols or protocols_in(df.columns))
    if not protocols:
        raise ValueError(
            "no protocol columns (test/<protocol>/recall@20 ...) in the results: runs record them "
            "when evaluation.report_protocols lists protocols (conf/train.yaml)"
        )
    models = order_by(df["model"], MODEL_LABELS)
    datasets = order_by(df["data"], {d: d for d in paper_numbers.DATASETS})
    header = ["Model", metric_label("rmse"), *map(metric_label, RANKING_METRICS), "@50 < @20"]
    groups, notes, saturated, counts = [], [], [], set()
    for protocol in protocols:
        for data in datasets:
            runs = df[df["data"] == data]
            cols = {"rmse": "test/rmse"} | {
                m: protocol_column(protocol, m) for m in RANKING_METRICS
            }
            missing = [c for c in cols.values() if c not in runs.columns]
            if missing:
                raise KeyError(f"protocol {protocol!r}: missing results columns {missing}")
            agg = {
                m: runs.assign(v=pd.to_numeric(runs[c])).groupby("model")["v"]
                .agg(["mean", "std", "count"]).reindex(models)
                for m, c in cols.items()
            }  # fmt: skip
            counts.update(agg["rmse"]["count"].dropna().astype(int).tolist())
            label = protocol if len(datasets) == 1 else f"{protocol} ({data_label(data)})"
            columns = []
            for m, stat in agg.items():
                means = stat["mean"].to_numpy(dtype=float)
                bold = _bold_best(means, lower_is_better(m), digits)
                why = saturation(means, stat["std"].to_numpy(dtype=float), digits)
                if why:
                    bold = [False] * len(bold)
                    saturated.append((f"{label}: {metric_label(m)}", data_label(data)))
                    notes.append(f"{label}, {metric_label(m)}: saturated ({why}).")
                columns.append(
                    [
                        Cell(_fmt(v, sd, int(0 if np.isnan(n) else n), digits), b)
                        for v, sd, n, b in zip(
                            means, stat["std"], stat["count"].astype(float), bold, strict=True
                        )
                    ]
                )
            body = []
            for i, model in enumerate(models):
                mean = {m: agg[m]["mean"].iloc[i] for m in RANKING_METRICS}
                body.append(
                    [Cell(model_label(model))]
                    + [c[i] for c in columns]
                    + [Cell(_below(mean["recall@50"], mean["recall@20"], mean["ndcg@50"],
                                   mean["ndcg@20"]))]
                )  # fmt: skip
            groups.append((label, body))
    seeds = (
        f"{min(counts)}"
        if len(counts) == 1
        else f"{min(counts, default=0)}-{max(counts, default=0)}"
    )
    notes.insert(
        0,
        f"Mean ± sd over {seeds} seed(s); the best value per protocol and column in bold. "
        "@50 < @20: whether Recall@50 < Recall@20 (R) and NDCG@50 < NDCG@20 (N), as in every "
        "row of the paper's Table 3.",
    )
    return Table(
        header=header,
        groups=groups,
        group_header="Protocol",
        caption="Ranking metrics under each evaluation protocol (xfvae.scoring.metrics).",
        notes=notes,
        saturated=saturated,
    )


def _below(r50: float, r20: float, n50: float, n20: float) -> str:
    if np.isnan([r50, r20, n50, n20]).any():
        return MISSING
    return f"R {'yes' if r50 < r20 else 'no'}, N {'yes' if n50 < n20 else 'no'}"


def pattern_table(df: pd.DataFrame, protocols=None, paper: bool = True) -> Table:
    """Per protocol and data set, the paper's qualitative pattern: for how many models N = 50 lies
    below N = 20, I-Rec's rank by RMSE and by NDCG@20, VAE-CF's and DAE-CF's rank by NDCG@20, and
    the Spearman correlation of the RMSE order with the NDCG@20 order (1: the same order). With
    ``paper``, the same read off the paper's Table 3 for each of its data sets."""
    protocols = list(protocols or protocols_in(df.columns))
    header = ["Data", "R@50 < R@20", "N@50 < N@20", "I-Rec rank: RMSE, NDCG@20",
              "VAE-CF, DAE-CF rank: NDCG@20", "Spearman (RMSE, NDCG@20)"]  # fmt: skip
    groups = []
    for protocol in protocols:
        rows = []
        for data in order_by(df["data"], {d: d for d in paper_numbers.DATASETS}):
            runs = df[df["data"] == data]
            cols = {"rmse": "test/rmse"} | {
                m: protocol_column(protocol, m) for m in RANKING_METRICS
            }
            means = pd.DataFrame(
                {m: pd.to_numeric(runs[c]).groupby(runs["model"]).mean() for m, c in cols.items()}
            )
            rows.append([Cell(data_label(data)), *_pattern_cells(means)])
        groups.append((protocol, rows))
    if paper:
        rows = []
        for data in paper_numbers.DATASETS:
            means = pd.DataFrame(
                {m: {k: v[data] for k, v in paper_numbers.TABLE3[m].items()} for m in METRICS}
            )
            rows.append([Cell(data_label(data)), *_pattern_cells(means)])
        groups.append(("Jin et al. (published)", rows))
    return Table(
        header=header,
        groups=groups,
        group_header="Protocol",
        caption="The paper's qualitative pattern under each protocol.",
        notes=[
            "Counts of models (means over seeds); ranks among the models of the row (1 = best); "
            "the paper's rows are read off its Table 3 (7 models)."
        ],
    )


def _pattern_cells(means: pd.DataFrame) -> list[Cell]:
    """Cells of one :func:`pattern_table` row from model x metric means."""
    means = means.dropna()
    n = len(means)
    rank_rmse = means["rmse"].rank(method="min")
    rank_ndcg = means["ndcg@20"].rank(method="min", ascending=False)

    def rank(model: str, ranks: pd.Series) -> str:
        return f"{int(ranks[model])}/{n}" if model in ranks.index else MISSING

    rho = means["rmse"].rank().corr(-means["ndcg@20"].rank(), method="pearson") if n > 2 else np.nan
    return [
        Cell(f"{int((means['recall@50'] < means['recall@20']).sum())}/{n}"),
        Cell(f"{int((means['ndcg@50'] < means['ndcg@20']).sum())}/{n}"),
        Cell(f"{rank('irec', rank_rmse)}, {rank('irec', rank_ndcg)}"),
        Cell(f"{rank('vaecf', rank_ndcg)}, {rank('daecf', rank_ndcg)}"),
        Cell(MISSING if np.isnan(rho) else f"{rho:.2f}"),
    ]


TABLE1_COLUMNS = {"n_users": "# users", "n_items": "# items", "n_ratings": "# ratings"}


def table1(stats: pd.DataFrame, paper: bool = True) -> Table:
    """Table 1 from a frame with ``data`` and ``n_users``, ``n_items``, ``n_ratings`` columns (or
    ``data/n_users`` ... as metrics.json may name them); one row per data set."""
    stats = stats.rename(columns={f"data/{k}": k for k in TABLE1_COLUMNS})
    missing = [c for c in TABLE1_COLUMNS if c not in stats.columns]
    if missing:
        raise ValueError(
            f"Table 1 needs columns data, {', '.join(TABLE1_COLUMNS)}; missing {missing} "
            f"(pass --data-stats CSV, or record data/n_users... in metrics.json)"
        )
    stats = stats.dropna(subset=list(TABLE1_COLUMNS)).drop_duplicates("data").set_index("data")
    header = ["Data set"]
    for title in TABLE1_COLUMNS.values():
        header.append(title)
        if paper:
            header.append(f"{title} (paper)")
    body = []
    for data in order_by(stats.index, {d: d for d in paper_numbers.DATASETS}):
        row = [Cell(data_label(data))]
        for i, key in enumerate(TABLE1_COLUMNS):
            row.append(Cell(f"{int(stats.loc[data, key]):,}"))
            if paper:
                published = paper_numbers.TABLE1.get(data)
                row.append(Cell(f"{published[i]:,}" if published else MISSING))
        body.append(row)
    return Table(
        header=header,
        groups=[("", body)],
        group_header=None,
        caption="Key attributes of the data sets (cf. Table 1).",
        notes=["Columns marked (paper): Table 1 of Jin et al."] if paper else [],
    )


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return f"**{text}**" if cell.bold and text != MISSING else text


def to_markdown(table: Table) -> str:
    header = ([table.group_header] if table.group_header is not None else []) + table.header
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for label, rows in table.groups:
        for i, row in enumerate(rows):
            lead = [label if i == 0 else ""] if table.group_header is not None else []
            lines.append("| " + " | ".join(lead + [_md_cell(c) for c in row]) + " |")
    notes = [table.caption] if table.caption else []
    notes += table.notes
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "") + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    text = re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], text)
    return text.replace("±", r"$\pm$").replace("–", "--")


def _tex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    return rf"\textbf{{{text}}}" if cell.bold and cell.text != MISSING else text


def to_latex(table: Table, label: str = "") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    header = ([table.group_header] if table.group_header is not None else []) + table.header
    n_text = 2 if table.group_header is not None else 1
    spec = "l" * n_text + "r" * (len(header) - n_text)
    caption = " ".join([table.caption, *table.notes]).strip()
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
    ]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(map(latex_escape, header)) + r" \\",
    ]
    for label_text, rows in table.groups:
        lines.append(r"\midrule")
        for i, row in enumerate(rows):
            lead = (
                [latex_escape(label_text) if i == 0 else ""]
                if table.group_header is not None
                else []
            )
            lines.append(" & ".join(lead + [_tex_cell(c) for c in row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
