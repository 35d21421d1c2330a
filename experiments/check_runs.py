"""Do the committed Table 3 and Table 4 runs replay their tuning and stop by the rule? (issue 19)

    .venv/bin/python experiments/check_runs.py [--data ml-100k]

Reads each run archived under ``results/<table>/<data>/runs/<data>/<row>/<job>/`` (its
``metrics.json`` and resolved ``.hydra/config.yaml``) and checks two things:

- **replay** (acceptance 3): a run of a model with a tuned configuration has, every digit, the
  validation RMSE of the kept trial for the same seed in the records of the study that kept the
  run's configuration (``selection.json``; seed 0: the search trial; seeds 1, 2: the selection's
  re-runs). Those are ``results/tuning/<data>/<study>/``, or an archived study
  (``results/tuning/archive/<data>-*/<study>/``) when the run predates the current one: the
  records are found by the run's resolved configuration, which must carry every override the
  study kept. Table 4's rows map to the studies ``xfvae_<ablation>``, its full model to
  ``xfvae``. Runs of untuned models (their defaults) are not compared.
- **stop**: every run ended ``patience`` epochs after its best with ``min_delta`` 0 (no
  improvement of any size in between), or at the epoch cap.

Prints one line per run and exits 1 if any check fails (or no run was found), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

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
    config: DictConfig | None = field(default=None, compare=False, repr=False)


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
                    config=cfg,
                )
            )
    return out


def kept(run: Run, sel: dict) -> bool:
    """Whether the run's configuration carries every override of the selection's kept trial
    (applied in order, as Hydra does, then compared leaf by leaf)."""
    overrides = (sel.get("chosen") or {}).get("overrides") or []
    expected = OmegaConf.create({})
    parser = OverridesParser.create()
    for item in overrides:
        o = parser.parse_override(item)
        OmegaConf.update(expected, o.key_or_group, o.value(), merge=False, force_add=True)
    leaves = _leaves(OmegaConf.to_container(expected))
    return bool(overrides) and all(
        OmegaConf.select(run.config, key, default="<missing>") == value for key, value in leaves
    )


def _leaves(node, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of every leaf of a nested dict."""
    if isinstance(node, dict) and node:
        return [kv for k, v in node.items() for kv in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], node)]


def records(run: Run, data: str = "ml-100k", root: Path = ROOT) -> tuple[Path, dict] | None:
    """The records (folder, selection) of the study that kept the run's configuration: the
    current study, else an archived one; None if none did."""
    study = study_of(run.table, run.row)
    tuning = root / "results" / "tuning"
    candidates = [tuning / data / study]
    candidates += sorted((tuning / "archive").glob(f"{data}-*/{study}"), reverse=True)
    for folder in candidates:
        path = folder / "selection.json"
        if path.is_file():
            sel = json.loads(path.read_text())
            if run.config is None or kept(run, sel):
                return folder, sel
    return None


def replay(run: Run, data: str = "ml-100k", root: Path = ROOT) -> float | None:
    """The kept trial's validation RMSE for the run's seed; None for an untuned model, NaN when
    no study's records kept the run's configuration."""
    return trial_of(run, data, root)[0]


def trial_of(
    run: Run, data: str = "ml-100k", root: Path = ROOT
) -> tuple[float | None, Path | None]:
    """(:func:`replay`'s value, the records' folder or None)."""
    study = study_of(run.table, run.row)
    if not (root / "conf" / "tuned" / data / f"{study}.yaml").is_file():
        return None, None
    found = records(run, data, root)
    if found is None:
        return float("nan"), None
    return float(found[1]["chosen"]["val_rmse"].get(str(run.seed), "nan")), found[0]


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
        want, where = trial_of(run, args.data)
        same = want is None or run.val_rmse == want
        rule = stopped_by_rule(run)
        bad += (not same) + (not rule)
        trial = "untuned"
        if want is not None:
            origin = where.relative_to(ROOT) if where else "no study kept this configuration"
            trial = f"trial {want:.10f} {'same' if same else 'DIFFERENT'} ({origin})"
        print(
            f"{run.table} {run.row:18s} seed {run.seed}: val {run.val_rmse:.10f} {trial}; "
            f"best {run.best_epoch} of {run.epochs} (patience {run.patience}, cap "
            f"{run.max_epochs}) {'by the rule' if rule else 'NOT BY THE RULE'}"
        )
    print(f"{len(found)} runs, {bad} failed checks")
    return 1 if bad or not found else 0


if __name__ == "__main__":
    sys.exit(main())
