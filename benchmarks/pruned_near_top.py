"""Pruned trials that had already reached the top of their study before the pruner stopped them.

    .venv/bin/python benchmarks/pruned_near_top.py [results/tuning/ml-100k]

A trial reports each epoch's validation RMSE to the pruner, while its objective is the best
epoch's (docs/tuning_protocol.md, "Known limitation"). For every study journal under the folder,
this lists the pruned search trials whose best reported value beats the third-best complete
trial's (they would have entered the selection re-runs), with the value the pruner saw at the
rung. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="results/tuning/ml-100k", type=Path)
    p.add_argument("--top", type=int, default=3, help="the selection's top k (default 3)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    total = 0
    for journal in sorted(args.root.glob("*/journal.log")):
        name = journal.parent.name
        study = optuna.load_study(
            study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))
        )
        complete = sorted(t.value for t in study.trials if t.state == TrialState.COMPLETE)
        pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
        total += len(pruned)
        bar = complete[: args.top][-1]
        print(
            f"{name}: {len(pruned)} pruned; best complete {complete[0]:.4f}, "
            f"top-{args.top} bar {bar:.4f}"
        )
        for t in pruned:
            curve = t.intermediate_values
            best_epoch = min(curve, key=curve.get)
            if curve[best_epoch] < bar:
                rung = max(curve)
                print(
                    f"  trial {t.number}: best {curve[best_epoch]:.4f} (epoch {best_epoch}), "
                    f"at the rung {curve[rung]:.4f} (epoch {rung})"
                )
    print(f"{total} pruned trials in all")


if __name__ == "__main__":
    main()
