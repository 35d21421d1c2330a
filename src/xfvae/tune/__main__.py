"""``python -m xfvae.tune model=<m> data=<d> budget=<n> [key=value ...]``: equal-budget tuning.

Thin on purpose: compose the tune config, run the study (xfvae.tune.driver), report. README
"Tuning (equal budget)" has the protocol; conf/tune.yaml lists the tuner's settings.
"""

from __future__ import annotations

import logging
import sys

import optuna


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(
            "Settings (conf/tune.yaml); any other key=value goes to every trial's training config."
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    from xfvae.runs.allocator import keep_freed_memory

    keep_freed_memory()  # the trials run in this process: no page-fault churn per step
    from xfvae.training.quiet import quiet_third_party

    quiet_third_party()  # trials run in-process, outside Hydra's job callbacks
    from xfvae.tune.driver import compose_tune, tune
    from xfvae.tune.space import SpaceError
    from xfvae.tune.study import TuneError

    for noisy in ("pytorch_lightning", "lightning_fabric"):  # their per-run banners, after import
        logging.getLogger(noisy).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.INFO)

    from xfvae.runs.signals import RunInterrupted

    try:
        tune(compose_tune(argv))
    except (TuneError, SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # the running trial is marked failed: it does not count
        print(f"error: {e}; re-run the same command to resume the study", file=sys.stderr)
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
