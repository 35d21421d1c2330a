"""Random split of all ratings, irrespective of users and items (paper 4.2 and 4.4).

The rule is exactly reproducible in any language: with the ratings in source-file order,
``p = np.random.default_rng(seed).permutation(n)``; train = the first ``round(train_frac * n)``
of ``p``, validation = the next ``floor((n - n_train) * val_share)`` (``(n - n_train) // 2`` for
the default share 0.5), test = the rest. The sub-sampling experiment (paper 4.4) is the same rule
with ``train_frac`` in {0.01, 0.02, 0.03, 0.05, 0.10}.

CLI: ``python -m xfvae.data.split data=<name> seed=<s> out=DIR`` writes ``DIR/{train,val,test}.csv``
(header ``user,item,rating``, original ids) so other libraries can run on the very same split.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np


class SplitIndex(NamedTuple):
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_sizes(n: int, train_frac: float = 0.7, val_share: float = 0.5) -> tuple[int, int, int]:
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"split.train_frac must be in (0, 1), got {train_frac}")
    if not 0.0 <= val_share <= 1.0:
        raise ValueError(f"split.val_share must be in [0, 1], got {val_share}")
    n_train = round(train_frac * n)
    n_val = math.floor((n - n_train) * val_share)
    return n_train, n_val, n - n_train - n_val


def random_split(n: int, seed: int, train_frac: float = 0.7, val_share: float = 0.5) -> SplitIndex:
    """Row indices (into the source-ordered ratings) of train, validation and test."""
    p = np.random.default_rng(seed).permutation(n)
    n_train, n_val, _ = split_sizes(n, train_frac, val_share)
    return SplitIndex(p[:n_train], p[n_train : n_train + n_val], p[n_train + n_val :])


def _main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from xfvae import CONF_DIR
    from xfvae.runs.atomic import atomic_write_csv

    out = [a for a in argv if a.startswith("out=")]
    if not out:
        sys.exit(
            "usage: python -m xfvae.data.split data=<name> seed=<s> out=DIR [data.split.train_frac=0.7]"
        )
    overrides = [a for a in argv if not a.startswith("out=")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup()
    out_dir = Path(out[0].split("=", 1)[1])
    for part, frame in dm.split_frames().items():
        atomic_write_csv(out_dir / f"{part}.csv", frame[["user", "item", "rating"]])
        print(f"{out_dir / f'{part}.csv'}: {len(frame)} ratings")


if __name__ == "__main__":
    _main(sys.argv[1:])
