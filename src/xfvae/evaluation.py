"""Test-set evaluation of a trained run: RMSE and the ranking metrics of ``evaluation.protocol``.

Called once per run, after fitting, on the best checkpoint's predictions (``task.test_outputs``).
Nothing here is read while training, tuning or selecting a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from xfvae.metrics import evaluate


def test_metrics(ev: DictConfig, dm, task) -> dict[str, Any]:
    """``test/<metric>`` of the run's test predictions under ``ev`` (the ``evaluation`` config)."""
    out = task.test_outputs
    if ev.protocol == "full":
        td = dm.train_data
        kwargs = dict(
            score_fn=task.score_users,
            n_items=td.n_items,
            train_users=td.users.numpy(),
            train_items=td.items.numpy(),
        )
    else:
        kwargs = dict(min_test_ratings=ev.min_test_ratings)
    scores = evaluate(
        out["users"],
        out["items"],
        out["ratings"].astype(np.float64),
        out["preds"].astype(np.float64),
        dm.rating_min,
        dm.rating_max,
        protocol=ev.protocol,
        ks=tuple(ev.ks),
        threshold=ev.relevance_threshold,
        **kwargs,
    )
    metrics = {f"test/{k}": v for k, v in scores.items()}
    metrics["test/n_cold_pairs"] = int(out["cold"].sum())
    return metrics
