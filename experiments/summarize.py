"""Print mean +- sd over seeds of every run under a folder (a quick look before the full report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

KEYS = [
    "test/rmse",
    "test/recall@20",
    "test/recall@50",
    "test/ndcg@20",
    "test/ndcg@50",
    "seconds_per_epoch",
    "peak_rss_mb",
    "n_params",
]


def main(root: str) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(root).rglob("metrics.json"))]
    if not rows:
        sys.exit(f"no metrics.json under {root}: did the runs fail? see their .log files")
    df = pd.DataFrame(rows)
    per_seed = df[["model", "data", "seed", *KEYS]].sort_values(["model", "seed"])
    print(per_seed.to_string(index=False))
    agg = df.groupby(["model", "data"])[KEYS].agg(["mean", "std"])
    print(agg.round(4).to_string())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "logs")
