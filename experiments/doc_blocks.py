"""Numbers the committed results produce, written into the docs instead of typed by hand.

A doc holds a block between two markers; ``make figures`` (``experiments/figures.py``) rewrites
what lies between them from the files under ``results/``, and ``tests/test_docs.py`` fails when a
committed block differs from what this module writes:

    <!-- BEGIN generated:table3 (make figures) -->
    ...
    <!-- END generated:table3 -->

    python experiments/doc_blocks.py [--check]   (rewrite the blocks, or only report stale ones)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from xfvae.report.names import MODEL_LABELS, VARIANT_LABELS
from xfvae.runs.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DATA = "ml-100k"
#: Model config name -> the label the docs use (the paper's labels; "Ours" spelled out).
LABELS = {**MODEL_LABELS, "mf": "biased MF", "xfvae": "cross-feedback VAE"}
#: Tuning studies in the order of `make tune-all` (Table 3 models, then the Table 4 rows).
STUDIES = (
    "mf", "bpmf", "ncf", "cnncf", "urec", "irec", "vaecf", "daecf", "xfvae",
    "xfvae_no_data_input", "xfvae_no_cross_feedback", "xfvae_no_attention",
)  # fmt: skip
_BLOCK = re.compile(
    r"(<!-- BEGIN generated:(?P<name>[\w-]+) \(make figures\) -->\n)(?P<body>.*?)"
    r"(<!-- END generated:(?P=name) -->)",
    re.S,
)


def _span(values: pd.Series) -> str:
    """min-max of a column, 1 decimal (2 below 1), one number when both round alike."""
    digits = 2 if values.max() < 1 else 1
    lo, hi = f"{values.min():.{digits}f}", f"{values.max():.{digits}f}"
    return lo if lo == hi else f"{lo}-{hi}"


def _runs(experiment: str, root: Path) -> pd.DataFrame:
    path = root / "results" / experiment / DATA / "results.csv"
    df = pd.read_csv(path)
    df = df[df["status"] == "complete"].sort_values("seed")
    df.attrs["path"] = path
    return df


def _config(run_dir: str, base: Path) -> str:
    """``tuned`` when the run was started with a tuned configuration, else ``default``; read from
    the committed copy of the run (``runs/`` beside the results, as experiments/archive.py lays it
    out), never from a local logs/ folder."""
    overrides = yaml.safe_load((_archived(run_dir, base) / ".hydra" / "overrides.yaml").read_text())
    return "tuned" if any(str(o).startswith("tuned=") for o in overrides or []) else "default"


def _archived(run_dir: str, base: Path) -> Path:
    """The committed copy of the run at ``run_dir`` (``runs/`` beside the results, laid out as
    experiments/archive.py does)."""
    return base / "runs" / run_dir.split("/logs/", 1)[-1].split("/", 1)[-1]


def _rows(df: pd.DataFrame, by: str) -> list[tuple[str, pd.DataFrame]]:
    groups = [(name, g) for name, g in df.groupby(by, sort=False)]
    return sorted(groups, key=lambda item: item[1]["test/rmse"].mean())


def table3_snapshot(root: Path = ROOT) -> str:
    """The README's few lines of Table 3: test RMSE and NDCG@20 per model, best first."""
    df = _runs("table3", root)
    lines = [
        "| model | config | test RMSE, mean ± sd (seeds 0-2) | NDCG@20 | s/epoch (1 thread) |",
        "|---|---|---|---|---|",
    ]
    for model, g in _rows(df, "model"):
        lines.append(
            f"| {_label(df, model, g)} | {_mean_sd(g['test/rmse'])} "
            f"| {g['test/ndcg@20'].mean():.3f} | {_span(g['seconds_per_epoch'])} |"
        )
    return "\n".join(lines) + "\n"


def _best_of(g: pd.DataFrame) -> str:
    return ", ".join(
        f"{int(b)}/{int(e)}" for b, e in zip(g["best_epoch"], g["epochs"], strict=True)
    )


def _mean_sd(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std():.3f}"


def _label(df: pd.DataFrame, model: str, g: pd.DataFrame) -> str:
    """Model label and whether it ran its tuned configuration."""
    return f"{LABELS.get(model, model)} | {_config(g['run_dir'].iloc[0], df.attrs['path'].parent)}"


def _per_seed(g: pd.DataFrame) -> str:
    """Cells: test RMSE per seed | mean ± sd | mean validation RMSE."""
    rmse = g["test/rmse"]
    seeds = " / ".join(f"{v:.4f}" for v in rmse)
    return f"{seeds} | {_mean_sd(rmse)} | {g['val/rmse'].mean():.3f}"


#: The columns of :func:`_per_seed` and :func:`_cost`.
PER_SEED = ("test RMSE, seeds 0 / 1 / 2", "mean ± sd", "val RMSE, mean")
COST = ("best epoch / epochs", "s/epoch", "training s to the stop, mean")


def _table(columns: tuple[str, ...], rows: list[str]) -> str:
    """A Markdown table of ``rows`` (each a line of cells) under ``columns``."""
    head = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
    return "\n".join(head + rows) + "\n"


def _cost(g: pd.DataFrame) -> str:
    """Cells: best epoch / epochs | seconds per epoch | mean training seconds to the stop."""
    return f"{_best_of(g)} | {_span(g['seconds_per_epoch'])} | {g['train_seconds'].mean():.0f}"


def table3_full(root: Path = ROOT) -> str:
    """Table 3 per seed, with the selected epochs, seconds per epoch and training time to the stop."""
    df = _runs("table3", root)
    rows = [
        f"| {_label(df, model, g)} | {_per_seed(g)} "
        f"| {g['test/ndcg@20'].mean():.3f} / {g['test/recall@20'].mean():.3f} | {_cost(g)} |"
        for model, g in _rows(df, "model")
    ]
    return _table(("model", "config", *PER_SEED, "NDCG@20 / Recall@20", *COST), rows)


def table4(root: Path = ROOT) -> str:
    """Table 4 per seed (the rows in the paper's order)."""
    df = _runs("table4", root)
    groups = [(label, df[df["setting"] == f"ablation={v}"]) for v, label in VARIANT_LABELS.items()]
    rows = [f"| {label} | {_per_seed(g)} | {_cost(g)} |" for label, g in groups if not g.empty]
    return _table(("variant", *PER_SEED, *COST), rows)


def figure3(root: Path = ROOT) -> str:
    """Figure 3's numbers: test RMSE, mean ± sd over seeds, per model and training fraction,
    sorted by the largest fraction; models that ran their default config say so."""
    df = _runs("figure3", root)
    fracs = sorted(df["train_frac"].unique())
    table = df.groupby(["model", "train_frac"])["test/rmse"]
    means = table.mean().unstack("train_frac")
    order = means[fracs[-1]].sort_values(kind="stable").index
    rows = []
    for model in order:
        g = df[df["model"] == model]
        config = _config(g["run_dir"].iloc[0], df.attrs["path"].parent)
        label = LABELS.get(model, model) + (" (default config)" if config == "default" else "")
        cells = " | ".join(_mean_sd(g[g["train_frac"] == f]["test/rmse"]) for f in fracs)
        rows.append(f"| {label} | {cells} |")
    return _table(("model", *(f"{f * 100:g} %" for f in fracs)), rows)


#: Figure 4's variants (section 4.6; L' = hidden input layers).
FIG4_VARIANTS = {
    "A": "no cross feedback, L' = 0",
    "B": "cross feedback, no attention, L' = 0",
    "C": "no cross feedback, L' = 1",
    "D": "cross feedback, no attention, L' = 1",
    "E": "cross feedback + attention, L' = 1",
}


def figure4(root: Path = ROOT) -> str:
    """Figure 4's numbers per variant, from each run's test RMSE per epoch (history.csv of the
    committed copy of the run): the minimum and its epoch per seed, the mean of the minima, the
    mean at the last epoch, and the median seconds per epoch of the runs (their span)."""
    df = _runs("figure4", root)
    base = df.attrs["path"].parent
    rows, last = [], None
    for setting, g in sorted(df.groupby("setting"), key=lambda item: item[0]):
        letter = setting.split("=", 1)[1]
        curves = [pd.read_csv(_archived(r, base) / "history.csv") for r in g["run_dir"]]
        mins = [c.loc[c["test_rmse"].idxmin()] for c in curves]
        last = int(curves[0]["epoch"].iloc[-1])
        seeds = " / ".join(f"{m['test_rmse']:.3f} ({int(m['epoch'])})" for m in mins)
        at_end = sum(c["test_rmse"].iloc[-1] for c in curves) / len(curves)
        per_epoch = pd.Series([c["seconds"].median() for c in curves])
        rows.append(
            f"| {letter}: {FIG4_VARIANTS.get(letter, setting)} | {seeds} "
            f"| {sum(m['test_rmse'] for m in mins) / len(mins):.3f} | {at_end:.3f} "
            f"| {_span(per_epoch)} |"
        )
    columns = ("variant", "min test RMSE (epoch), seeds 0 / 1 / 2", "mean of the minima",
               f"test RMSE at epoch {last}, mean", "s/epoch (median per run)")  # fmt: skip
    return _table(columns, rows)


def defaults(root: Path = ROOT) -> str:
    """``make check-defaults``: best epoch / epochs and test RMSE per model and synthetic shape."""
    df = pd.read_csv(root / "results" / "defaults" / "results.csv")
    df = df[df["status"] == "complete"]
    # dense, tall, sparse: the order of experiments/defaults.sh
    shapes = sorted(df["data"].unique(), key=lambda d: ("dense" not in d, "tall" not in d, d))
    models = ["xfvae", *(m for m in MODEL_LABELS if m != "xfvae")]
    rows = []
    for model in (m for m in models if m in set(df["model"])):
        cells = []
        for shape in shapes:
            r = df[(df["model"] == model) & (df["data"] == shape)]
            cells.append(
                "—" if r.empty else
                f"{int(r['best_epoch'].iloc[0])} / {int(r['epochs'].iloc[0])}, "
                f"{r['test/rmse'].iloc[0]:.3f}"
            )  # fmt: skip
        rows.append(f"| {LABELS.get(model, model)} | {' | '.join(cells)} |")
    return _table(("model", *(f"`{d}`: best / epochs, test RMSE" for d in shapes)), rows)


def _study_row(name: str, folder: Path) -> str:
    if not (folder / "provenance.json").is_file():  # a journal whose records were not written yet
        return (
            f"| `{name}` | started, no records yet (`python -m xfvae.tune model={name} "
            f"data={DATA} budget=<n> run=false` writes them) | | | | | | | |"
        )
    prov = json.loads((folder / "provenance.json").read_text())
    sel_path = folder / "selection.json"
    sel = json.loads(sel_path.read_text()) if sel_path.is_file() else {}
    trials = pd.read_csv(folder / "trials.csv")
    states = trials["state"].value_counts()
    complete = trials[trials["state"] == "COMPLETE"]
    best = complete["val_rmse_seed0"].min() if not complete.empty else float("nan")
    chosen, off = sel.get("chosen") or {}, sel.get("extras_off") or {}
    kept = f"{chosen['mean']:.4f} (trial {chosen['trial']})" if "mean" in chosen else "—"
    if not off:
        without = "—" if not chosen else "same (no extras)"
    elif off.get("same_as_chosen"):
        without = "same (no extras)"
    else:
        without = f"{off['mean']:.4f}"
    waiting = int(states.get("WAITING", 0))
    stopped = int(prov.get("stopped", 0))  # the tuner's own count (record.py)
    counts = (
        f"{int(states.get('COMPLETE', 0))} / {int(states.get('PRUNED', 0))} / "
        f"{int(states.get('FAIL', 0)) - stopped}"
        + (f" (+{stopped} stopped, continued)" if stopped else "")
        + (f" (+{waiting} waiting)" if waiting else "")
    )
    best_text = f"{best:.4f}" if best == best else "—"
    minutes = prov.get("trial_seconds", trials["seconds"].sum()) / 60
    return (
        f"| `{name}` | {prov.get('status', '?')} | {prov.get('budget', '?')} | {counts} "
        f"| {best_text} | {_best_anchor(trials, sel)} | {kept} | {without} | {minutes:.0f} min |"
    )


def _best_anchor(trials: pd.DataFrame, sel: dict) -> str:
    """The best anchor's mean validation RMSE over the selection seeds (anchors are always
    re-run on them), with its name; "—" before the selection ran."""
    anchors = dict(zip(trials["trial"], trials["anchor"].astype("string"), strict=True))
    means = [
        (c["mean"], anchors[c["trial"]])
        for c in sel.get("candidates", [])
        if c.get("mean") is not None and pd.notna(anchors.get(c["trial"]))
    ]
    if not means:
        return "—"
    mean, label = min(means)
    return f"{mean:.4f} ({label})"


def tuning(root: Path = ROOT) -> str:
    """One row per study under results/tuning/<data>/, from its provenance, selection and trials."""
    base = root / "results" / "tuning" / DATA
    lines = [
        "| study | status | budget | trials: complete / pruned / failed | best val RMSE, seed 0 "
        "| best anchor: mean val RMSE, seeds 0-2 | kept: mean val RMSE, seeds 0-2 "
        "| kept without extras (mean) | trial time (summed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = [s for s in STUDIES if (base / s).is_dir()]
    names += sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in STUDIES)
    lines += [_study_row(name, base / name) for name in names]
    missing = [s for s in STUDIES if s not in names]
    if missing:
        lines.append("")
        lines.append(f"Not started (no records): {', '.join(f'`{s}`' for s in missing)}.")
    return "\n".join(lines) + "\n"


#: Block name -> what writes it.
GENERATORS: dict[str, Callable[[Path], str]] = {
    "table3": table3_snapshot,
    "table3-full": table3_full,
    "table4": table4,
    "figure3": figure3,
    "figure4": figure4,
    "defaults": defaults,
    "tuning": tuning,
}
#: The docs holding generated blocks.
DOCS = ("README.md", "results/README.md", "docs/tuning.md")


def blocks(text: str) -> dict[str, str]:
    """Block name -> its current body in ``text``."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def render(text: str, root: Path = ROOT) -> str:
    """``text`` with every generated block rewritten from the results under ``root``."""

    def body(m: re.Match) -> str:
        name = m["name"]
        if name not in GENERATORS:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        return m.group(1) + GENERATORS[name](root) + m.group(4)

    return _BLOCK.sub(body, text)


def update(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or with ``check`` only compare) the blocks of :data:`DOCS`; the stale docs."""
    stale = []
    for doc in DOCS:
        path = root / doc
        if not path.is_file():
            continue
        text = path.read_text()
        new = render(text, root)
        if new != text:
            stale.append(doc)
            if not check:
                atomic_write_text(path, new)
    return stale


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only list docs whose blocks are stale")
    stale = update(check=p.parse_args().check)
    print(f"generated doc blocks {'stale' if stale else 'up to date'}: {stale or ''}")
    sys.exit(1 if stale and "--check" in sys.argv else 0)
