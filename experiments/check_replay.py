"""Does every committed tuned run replay its tuning trial? (issue 19, acceptance 3)

    .venv/bin/python experiments/check_replay.py [--data ml-100k]

For each committed run of Table 3 and Table 4 (``results/<table>/<data>/results.csv``) whose
model has a tuned configuration, the run's validation RMSE must equal, every digit, the kept
trial's validation RMSE for the same seed in ``results/tuning/<data>/<study>/selection.json``
(seed 0: the search trial; seeds 1, 2: the selection's re-runs). Table 4's rows map to the
studies ``xfvae_<ablation>``; its full model is the ``xfvae`` study. Runs of models without a
tuned configuration (their defaults) are not compared. Prints one line per run and exits 1 if any
run differs (or none was compared), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def study_of(table: str, row: pd.Series) -> str:
    """The study whose kept configuration a run of ``table`` uses."""
    if table == "table4":
        ablation = str(row["setting"]).removeprefix("ablation=")
        return "xfvae" if ablation == "full" else f"xfvae_{ablation}"
    return str(row["model"])


def check(data: str = "ml-100k", root: Path = ROOT) -> list[tuple[str, str, int, float, float]]:
    """(table, study, seed, run's val RMSE, trial's val RMSE) for every compared run."""
    rows = []
    for table in ("table3", "table4"):
        path = root / "results" / table / data / "results.csv"
        if not path.is_file():
            continue
        runs = pd.read_csv(path)
        for _, run in runs.iterrows():
            study = study_of(table, run)
            if not (root / "conf" / "tuned" / data / f"{study}.yaml").is_file():
                continue  # an untuned model runs its default: nothing to replay
            sel = root / "results" / "tuning" / data / study / "selection.json"
            chosen = json.loads(sel.read_text())["chosen"]["val_rmse"]
            seed = int(run["seed"])
            want = chosen.get(str(seed), float("nan"))
            rows.append((table, study, seed, float(run["val/rmse"]), float(want)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml-100k")
    args = p.parse_args(argv)
    rows = check(args.data)
    bad = 0
    for table, study, seed, got, want in rows:
        same = got == want
        bad += not same
        print(f"{table} {study:26s} seed {seed}: run {got:.10f} trial {want:.10f} "
              f"{'same' if same else 'DIFFERENT'}")
    print(f"{len(rows) - bad} of {len(rows)} tuned runs replay their trial exactly")
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
