"""Replay early-stopping rules offline on committed validation curves (history.csv).

    .venv/bin/python benchmarks/replay_stopping.py [--patience 10] [history.csv ...]

For each curve: where Lightning's ``EarlyStopping`` (mode min, the model's warm-up epochs skipped
as ``xfvae.training.callbacks.WarmupEarlyStopping`` skips them) would stop under the old rule
(``min_delta`` 1e-4) and the new one (``min_delta`` 0: patience counted from the last improvement
of any size, as the checkpoint counts it), the epochs that costs and the best validation RMSE at
the stop. A committed curve ends where its run stopped, so a rule that would train on is shown as
``>N`` (it had not stopped by the last recorded epoch). Default curves: Table 3's runs of BPMF
(200-sweep curves of results/protocols too) and two gradient-trained models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
T3 = "results/table3/ml-100k/runs/ml-100k/{m}/seed{s}/history.csv"
DEFAULT = [
    *(T3.format(m=m, s=s) for m in ("bpmf", "irec", "vaecf") for s in (0, 1, 2)),
    *(f"results/protocols/ml-100k/runs/ml-100k/{r}/history.csv" for r in ("bpmf", "bpmf-seed1")),
]
WARMUP = {"bpmf": 20}  # BPMF's burn-in (conf/model/bpmf.yaml burn_in): not counted for stopping


def stop_epoch(curve: list[float], patience: int, min_delta: float, warmup: int) -> int | None:
    """The epoch at which early stopping fires (Lightning's rule: an improvement beats the best
    by more than min_delta; stop when ``patience`` epochs in a row brought none), or None."""
    best, wait = float("inf"), 0
    for epoch, value in enumerate(curve):
        if epoch < warmup:
            continue
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def replay(path: Path, patience: int) -> dict:
    curve = pd.read_csv(path)["val_rmse"].tolist()
    model = next((m for m in WARMUP if f"/{m}" in str(path)), None)
    warmup = WARMUP.get(model, 0)
    row = {"curve": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)}
    row["recorded"] = len(curve)
    row["best_epoch"] = int(pd.Series(curve).idxmin())
    for name, delta in (("old", 1e-4), ("new", 0.0)):
        stop = stop_epoch(curve, patience, delta, warmup)
        seen = curve if stop is None else curve[: stop + 1]
        row[f"{name}_epochs"] = f">{len(curve)}" if stop is None else str(stop + 1)
        row[f"{name}_val"] = round(min(seen), 5)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("curves", nargs="*", type=Path)
    ap.add_argument("--patience", type=int, default=10)
    args = ap.parse_args()
    paths = args.curves or [ROOT / p for p in DEFAULT]
    table = pd.DataFrame([replay(p, args.patience) for p in paths])
    print(f"patience {args.patience}; old: min_delta 1e-4, new: min_delta 0 (epochs = at the stop)")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
