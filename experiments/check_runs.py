"""Do the committed Table 3 and Table 4 runs replay their tuning and stop by the rule? (issue 19)

    .venv/bin/python experiments/check_runs.py [--data ml-100k]

Reads each run archived under ``results/<table>/<data>/runs/<data>/<row>/<job>/`` (its
``metrics.json`` and resolved ``.hydra/config.yaml``) and checks two things:

- **replay** (acceptance 3): a run of a model with a tuned configuration has, every digit, the
  validation RMSE of the kept trial for the same seed in
  ``results/tuning/<data>/<study>/selection.json`` (seed 0: the search trial; seeds 1, 2: the
  selection's re-runs). Table 4's rows map to the studies ``xfvae_<ablation>``, its full model to
  ``xfvae``. Runs of untuned models (their defaults) are not compared.
- **stop**: every run ended ``patience`` epochs after its best with ``min_delta`` 0 (no
  improvement of any size in between), or at the epoch cap.

Prints one line per run and exits 1 if any check fails (or no run was found), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("table3", "table4")


@dataclass(frozen=True)
class Run:
    table: str
    row: str  # model (Table 3) or ablation (Table 4)
    seed: int
    val_rmse: float
    best_epoch: int
    epochs: int
    patience: int
    max_epochs: int
    min_delta: float
    stopped_by: str | None


def study_of(table: str, row: str) -> str:
    """The study whose kept configuration a run of ``table``'s ``row`` uses."""
    if table == "table4":
        return "xfvae" if row == "full" else f"xfvae_{row}"
    return row


def runs(data: str = "ml-100k", root: Path = ROOT) -> list[Run]:
    out = []
    for table in TABLES:
        base = root / "results" / table / data / "runs" / data
        for metrics in sorted(base.glob("*/*/metrics.json")):
            m = json.loads(metrics.read_text())
            cfg = OmegaConf.load(metrics.parent / ".hydra" / "config.yaml")
            out.append(
                Run(
                    table=table,
                    row=metrics.parent.parent.name,
                    seed=int(m["seed"]),
                    val_rmse=float(m["val/rmse"]),
                    best_epoch=int(m["best_epoch"]),
                    epochs=int(m["epochs"]),
                    patience=int(cfg.model.patience),
                    max_epochs=int(cfg.model.max_epochs),
                    min_delta=float(cfg.callbacks.early_stopping.min_delta),
                    stopped_by=m.get("stopped_by"),
                )
            )
    return out


def replay(run: Run, data: str = "ml-100k", root: Path = ROOT) -> float | None:
    """The kept trial's validation RMSE for the run's seed; None for an untuned model."""
    study = study_of(run.table, run.row)
    if not (root / "conf" / "tuned" / data / f"{study}.yaml").is_file():
        return None
    sel = json.loads((root / "results" / "tuning" / data / study / "selection.json").read_text())
    return float(sel["chosen"]["val_rmse"].get(str(run.seed), "nan"))


def stopped_by_rule(run: Run) -> bool:
    at_cap = run.epochs == run.max_epochs
    patience_out = (
        run.stopped_by == "early_stopping"
        and run.min_delta == 0.0
        and run.epochs == run.best_epoch + 1 + run.patience
    )
    return at_cap or patience_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml-100k")
    args = p.parse_args(argv)
    found, bad = runs(args.data), 0
    for run in found:
        want = replay(run, args.data)
        same = want is None or run.val_rmse == want
        rule = stopped_by_rule(run)
        bad += (not same) + (not rule)
        trial = (
            "untuned" if want is None else f"trial {want:.10f} {'same' if same else 'DIFFERENT'}"
        )
        print(
            f"{run.table} {run.row:18s} seed {run.seed}: val {run.val_rmse:.10f} {trial}; "
            f"best {run.best_epoch} of {run.epochs} (patience {run.patience}, cap "
            f"{run.max_epochs}) {'by the rule' if rule else 'NOT BY THE RULE'}"
        )
    print(f"{len(found)} runs, {bad} failed checks")
    return 1 if bad or not found else 0


if __name__ == "__main__":
    sys.exit(main())
