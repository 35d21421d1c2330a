"""Test-set evaluation of a trained run: RMSE and the ranking metrics of every configured protocol.

Called once per run, after fitting, on the best checkpoint's predictions (``task.test_outputs``).
Nothing here is read while training, tuning or selecting a model. ``evaluation.protocol`` is the
default reading of section 4.2 (keys ``test/recall@20`` ...); every protocol listed in
``evaluation.report_protocols`` is recorded too, under ``test/<protocol>/recall@20`` ...
(:mod:`xfvae.scoring.metrics` defines them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from xfvae.scoring.metrics import PROTOCOLS, ScoreFn, get_protocol, ranking_metrics, rmse

#: Largest n_users * n_items whose score matrix is computed once and shared by the protocols
#: (float32: 256 MiB); larger data sets are scored chunk by chunk for each protocol.
MAX_CACHED_SCORES = 64 * 2**20


def test_metrics(ev: DictConfig, dm, task) -> dict[str, Any]:
    """``test/<metric>`` of the run's test predictions under ``ev`` (the ``evaluation`` config)."""
    out = task.test_outputs
    protocols = protocol_names(ev)
    users, items = out["users"], out["items"]
    ratings, preds = out["ratings"].astype(np.float64), out["preds"].astype(np.float64)
    preds = np.clip(preds, dm.rating_min, dm.rating_max)
    td = dm.train_data
    context: dict[str, Any] = {
        "n_items": td.n_items,
        "train": dm.pairs("train"),
        "val": dm.pairs("val"),
    }
    if any(PROTOCOLS[p].needs_model_scores for p in protocols):
        context["score_fn"] = shared_scores(task, td.n_users, td.n_items)
    metrics: dict[str, Any] = {"test/rmse": rmse(ratings, preds)}
    for name in protocols:
        scores = ranking_metrics(
            name,
            users,
            items,
            ratings,
            preds,
            ks=tuple(ev.ks),
            threshold=ev.relevance_threshold,
            min_test_ratings=ev.min_test_ratings,
            **context,
        )
        if name == ev.protocol:
            metrics.update({f"test/{k}": v for k, v in scores.items()})
            metrics["test/protocol"] = name
        if name in ev.get("report_protocols", []):
            metrics.update({f"test/{name}/{k}": v for k, v in scores.items()})
    metrics["test/n_cold_pairs"] = int(out["cold"].sum())
    return metrics


def protocol_names(ev: DictConfig) -> list[str]:
    """The default protocol, then the other report protocols (each checked, each once)."""
    names = [ev.protocol, *ev.get("report_protocols", [])]
    for name in names:
        try:
            get_protocol(name)
        except ValueError as e:
            raise ValueError(f"evaluation.protocol / evaluation.report_protocols: {e}") from None
    return list(dict.fromkeys(names))


def shared_scores(task, n_users: int, n_items: int) -> ScoreFn:
    """``task.score_users`` in eval mode (no dropout or sampling: the scores the test predictions
    were made with); the whole score matrix is computed once when it is small enough."""

    def score(users: torch.Tensor) -> torch.Tensor:
        was_training = task.training
        task.eval()
        try:
            return task.score_users(users).float()
        finally:
            task.train(was_training)

    if n_users * n_items > MAX_CACHED_SCORES:
        return score
    cache: list[torch.Tensor] = []

    def cached(users: torch.Tensor) -> torch.Tensor:
        if not cache:
            chunks = torch.arange(n_users).split(1024)
            cache.append(torch.cat([score(c) for c in chunks]))
        return cache[0][users]

    return cached
