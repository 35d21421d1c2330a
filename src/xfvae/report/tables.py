"""The paper's Tables 1, 3 and 4 from the tidy results, as Markdown and LaTeX (booktabs).

Cells are mean +- sd over seeds; the best value of each column within a metric is bold (ties at the
printed precision all bold); the paper's published number can sit beside each of our columns
where the data set is one of the paper's.
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
    VARIANT_LABELS,
    canonical_variant,
    data_label,
    lower_is_better,
    metric_column,
    metric_label,
    model_label,
    order_by,
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
    datasets = order_by(df["data"], {d: d for d in paper_numbers.DATASETS})
    rows = order_by(df[row_col], row_labels)
    header = [row_header]
    for data in datasets:
        header.append(data_label(data))
        if paper is not None and data in paper_numbers.DATASETS:
            header.append(f"{data_label(data)} (paper)")
    groups, counts = [], set()
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
    notes = [f"Mean ± sd over {seeds} seed(s); the best value per column and metric in bold."]
    if paper is not None and any(h.endswith("(paper)") for h in header):
        notes.append("Columns marked (paper): the numbers published by Jin et al.")
    return Table(header=header, groups=groups, notes=notes)


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
