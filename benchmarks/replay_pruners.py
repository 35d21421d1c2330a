"""Replay Optuna pruners offline on a study's recorded validation curves.

    .venv/bin/python benchmarks/replay_pruners.py results/tuning/ml-100k/mf/journal.log [...]

Each journal's search trials are taken in their order with their full per-epoch validation
curves (a trial that was pruned or stopped when it ran has only part of its curve; such trials are
left out, so run the study with ``pruner.name=none`` to record every curve). Each pruner then sees
the same trials in the same order, one worker, through Optuna itself (an in-memory study: report
the curve epoch by epoch, stop when ``should_prune``); the first ``--anchors`` trials are never
pruned, as the tuner never prunes its anchors. Printed per pruner: trials pruned, epochs trained
and their training seconds (each trial's own seconds per epoch: the compute), and the best
complete trials' validation RMSE (the selection's seed-0 candidates). The trials' values do not depend on the pruner, so the comparison is exact for the
trials given; what it cannot show is how the sampler would have used the saved epochs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median (tune.yaml: 5 startup, 10 warm-up)": lambda: optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=10
    ),
    "successive halving (min 10, eta 3)": lambda: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=10, reduction_factor=3
    ),
    "hyperband (min 10, max 300, eta 3)": lambda: optuna.pruners.HyperbandPruner(
        min_resource=10, max_resource=300, reduction_factor=3
    ),
}


def curves(journal: Path) -> list[tuple[dict[int, float], float]]:
    """The complete search trials' curves (step = epoch) with their seconds per epoch, in order."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    name = next(s for s in optuna.get_all_study_names(storage) if not s.endswith(".reruns"))
    study = optuna.load_study(study_name=name, storage=storage)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [
        (dict(t.intermediate_values), t.user_attrs["train_seconds"] / t.user_attrs["epochs"])
        for t in done
        if t.intermediate_values
    ]


def replay(trials, pruner: optuna.pruners.BasePruner, anchors: int):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="replay", direction="minimize", pruner=pruner)
    epochs, seconds, pruned, kept = 0, 0.0, 0, []
    for n, (curve, per_epoch) in enumerate(trials):
        trial = study.ask()
        stopped = False
        for step in sorted(curve):
            trial.report(curve[step], step)
            epochs += 1
            seconds += per_epoch
            if trial.should_prune() and n >= anchors:  # asked for anchors too, as the tuner does
                stopped = True
                break
        if stopped:
            pruned += 1
            study.tell(trial, state=TrialState.PRUNED)
        else:
            value = min(curve.values())
            kept.append(value)
            study.tell(trial, value)
    return pruned, epochs, seconds, sorted(kept)[:3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("journals", nargs="+", type=Path)
    ap.add_argument("--anchors", type=int, default=2, help="first trials never pruned")
    args = ap.parse_args()
    for journal in args.journals:
        trials = curves(journal)
        print(f"{journal}: {len(trials)} complete curves")
        for name, make in PRUNERS.items():
            pruned, epochs, seconds, top = replay(trials, make(), args.anchors)
            print(
                f"  {name:44s} pruned {pruned:2d}  epochs {epochs:5d}  training s {seconds:6.1f}"
                f"  best 3 complete val {' '.join(f'{v:.5f}' for v in top)}"
            )


if __name__ == "__main__":
    main()
