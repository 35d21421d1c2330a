"""Print per-seed rows and mean +- sd over seeds of every run under a folder (a quick look before
the full report). Runs are read by ``xfvae.report.collect``; ``seconds_to_best`` sums history.csv's
per-epoch training seconds up to and including the best validation epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from xfvae.report.collect import collect
from xfvae.report.names import SCORE_KEYS

KEYS = [
    *SCORE_KEYS,
    "seconds_per_epoch",
    "seconds_to_best",
    "best_epoch",
    "peak_rss_mb",
    "n_params",
]


def seconds_to_best(run_dir: str, best_epoch: float) -> float:
    hist = Path(run_dir) / "history.csv"
    if not hist.exists():
        return float("nan")
    h = pd.read_csv(hist)
    return float(h.loc[h["epoch"] <= best_epoch, "seconds"].sum())


def main(roots: list[str]) -> None:
    df = collect(roots)
    df = df[df["status"] == "complete"]
    if df.empty:
        sys.exit(f"no complete run under {roots}: did the runs fail? see their train.log files")
    df["seconds_to_best"] = [
        seconds_to_best(d, b) for d, b in zip(df["run_dir"], df["best_epoch"], strict=True)
    ]
    df["setting"] = df["setting"].fillna("")
    by = ["model", "data", "setting"]
    keys = [k for k in KEYS if k in df]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(df[[*by, "seed", *keys]].sort_values([*by, "seed"]).to_string(index=False))
        print(df.groupby(by)[keys].agg(["mean", "std"]).round(4).to_string())


if __name__ == "__main__":
    main(sys.argv[1:] or ["logs"])
