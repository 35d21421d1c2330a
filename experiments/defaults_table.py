"""The table of ``make check-defaults``: per model and data set, how training ended (early stopping
or the epoch cap), at which epoch, with which final learning rate, and the validation/test RMSE
next to the data's noise floor."""

from __future__ import annotations

import argparse

import pandas as pd

from xfvae.report.collect import load_results
from xfvae.runs.atomic import atomic_write_text

COLUMNS = {
    "model": "model",
    "data": "data",
    "seed": "seed",
    "best_epoch": "best epoch",
    "epochs": "epochs",
    "stopped_by": "stopped by",
    "final_lr": "final lr",
    "val/rmse": "val RMSE",
    "test/rmse": "test RMSE",
    "seconds_per_epoch": "s/epoch",
}


def _markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.4g}"
        return str(v)

    rows = [list(df.columns), ["---"] * len(df.columns)]
    rows += [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    df = load_results(args.results)
    bad = df[df["status"] != "complete"]
    df = df[df["status"] == "complete"]
    cols = [c for c in COLUMNS if c in df.columns]
    table = df[cols].sort_values(["data", "model", "seed"]).rename(columns=COLUMNS)
    n_early = int((df.get("stopped_by") == "early_stopping").sum())
    lines = [
        "# Default configs beyond ML-100K",
        "",
        f"{n_early} of {len(df)} complete runs ended by early stopping on val/rmse"
        + (f"; {len(bad)} run(s) not complete: {', '.join(bad['run_dir'])}" if len(bad) else ""),
        "",
        _markdown(table),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
