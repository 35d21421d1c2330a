"""Test-set evaluation: RMSE and the ranking metrics of every configured protocol. The one way in
is :func:`test_metrics`, called once per run, after fitting, on the best checkpoint's predictions
(``task.test_outputs``); :func:`metrics_from_predictions` recomputes the same keys from a run's
``test_predictions.csv``. Nothing here is read while training, tuning or selecting a model. ``evaluation.protocol`` is the
default reading of section 4.2 (keys ``test/recall@20`` ...); every protocol listed in
``evaluation.report_protocols`` is recorded too, under ``test/<protocol>/recall@20`` ...
(:mod:`xfvae.scoring.metrics` defines them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from xfvae.scoring.metrics import PROTOCOLS, ScoreFn, get_protocol, ranking_metrics, rmse

#: Largest n_users * n_items whose score matrix is computed once and shared by the protocols
#: (float32: 256 MiB); larger data sets are scored chunk by chunk for each protocol.
MAX_CACHED_SCORES = 64 * 2**20


#: The columns of a run's ``test_predictions.csv`` (original ids).
PREDICTION_COLUMNS = ("user", "item", "rating", "prediction")


def test_metrics(ev: DictConfig, dm, task) -> dict[str, Any]:
    """``test/<metric>`` of the run's test predictions under ``ev`` (the ``evaluation`` config)."""
    out = task.test_outputs
    td = dm.train_data
    context: dict[str, Any] = {
        "n_items": td.n_items,
        "train": dm.pairs("train"),
        "val": dm.pairs("val"),
    }
    if any(PROTOCOLS[p].needs_model_scores for p in protocol_names(ev)):
        context["score_fn"] = shared_scores(task, td.n_users, td.n_items)
    metrics = _score(ev, out["users"], out["items"], out["ratings"], out["preds"],
                     (dm.rating_min, dm.rating_max), context)  # fmt: skip
    metrics["test/n_cold_pairs"] = int(out["cold"].sum())
    return metrics


def metrics_from_predictions(
    df: pd.DataFrame,
    rating_min: float,
    rating_max: float,
    ks: Sequence[int] = (20, 50),
    threshold: float = 3.0,
    min_test_ratings: int = 2,
    protocol: str = "paper",
) -> dict[str, Any]:
    """The ``test/...`` metrics of :func:`test_metrics`, recomputed from a ``test_predictions.csv``
    table (original ids) under a protocol that ranks only test items (``paper``,
    ``paper_heldout``, ``liang_nnz``, ``binary``, ...).

    Item codes must follow the original-id order for the tie-break, so ids compare as numbers
    when every id is numeric (item 10 after item 9) and as strings otherwise.
    """
    if get_protocol(protocol).ranked != "test":
        raise ValueError(
            f"metrics_from_predictions: protocol {protocol!r} ranks items beyond the test pairs, "
            "which test_predictions.csv does not hold; use one that ranks test items only: "
            + ", ".join(n for n, p in PROTOCOLS.items() if p.ranked == "test")
        )
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"metrics_from_predictions: missing columns {missing}; expected the header "
            f"{','.join(PREDICTION_COLUMNS)} of test_predictions.csv, got {list(df.columns)}"
        )
    values = {}
    for col in ("rating", "prediction"):
        values[col] = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values[col].isna().to_numpy())
        if bad.size:
            raise ValueError(
                f"metrics_from_predictions: column {col!r} is empty or non-numeric at "
                f"{bad.size} row(s), first at data row {bad[0] + 1} (line {bad[0] + 2} of the CSV "
                "with its header); fix or drop those rows"
            )
    ev = OmegaConf.create(
        {"protocol": protocol, "ks": list(ks), "relevance_threshold": threshold,
         "min_test_ratings": min_test_ratings}
    )  # fmt: skip
    return _score(
        ev, pd.factorize(df["user"].astype(str))[0], _ordered_codes(df["item"]),
        values["rating"].to_numpy(), values["prediction"].to_numpy(), (rating_min, rating_max), {},
    )  # fmt: skip


def _score(ev, users, items, ratings, preds, scale: tuple[float, float], context) -> dict[str, Any]:
    """RMSE of the predictions clipped to ``scale`` and every protocol's ranking metrics."""
    protocols = protocol_names(ev)
    ratings = np.asarray(ratings, dtype=np.float64)
    preds = np.clip(np.asarray(preds, dtype=np.float64), *scale)
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
    return metrics


def _ordered_codes(ids: pd.Series) -> np.ndarray:
    """Integer codes whose order is numeric order if every id is a number, else string order."""
    numeric = pd.to_numeric(ids, errors="coerce")
    keys = numeric if not numeric.isna().any() else ids.astype(str)
    return pd.factorize(keys, sort=True)[0]


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
