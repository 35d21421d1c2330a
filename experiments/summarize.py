"""Print per-seed rows and mean +- sd over seeds of every run under a folder (a quick look before
the full report). ``seconds_to_best`` sums history.csv's per-epoch training seconds up to and
including the best validation epoch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

KEYS = [
    "val/rmse",
    "test/rmse",
    "test/recall@20",
    "test/recall@50",
    "test/ndcg@20",
    "test/ndcg@50",
    "seconds_per_epoch",
    "seconds_to_best",
    "best_epoch",
    "peak_rss_mb",
    "n_params",
]


def load(path: Path) -> dict:
    row = json.loads(path.read_text())
    hist = path.with_name("history.csv")
    if hist.exists():
        h = pd.read_csv(hist)
        row["seconds_to_best"] = float(h.loc[h["epoch"] <= row["best_epoch"], "seconds"].sum())
    row["setting"] = row.get("setting") or ""
    return row


def main(root: str) -> None:
    rows = [load(p) for p in sorted(Path(root).rglob("metrics.json"))]
    if not rows:
        sys.exit(f"no metrics.json under {root}: did the runs fail? see their .log files")
    df = pd.DataFrame(rows)
    keys = [k for k in KEYS if k in df]
    by = ["model", "data", "setting"]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(df[[*by, "seed", *keys]].sort_values([*by, "seed"]).to_string(index=False))
        print(df.groupby(by)[keys].agg(["mean", "std"]).round(4).to_string())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "logs")
