"""Test metrics of the paper (section 4.2): RMSE, Recall@N and NDCG@N (Liang et al. 2018 formulas).

Two ranking protocols:

* ``paper``: the test split is held out irrespective of users, so each user's ranking list is that
  user's own test items ranked by predicted rating; users with at least two test ratings count.
* ``full``: the usual top-N protocol, ranking every item the user did not rate in training.

In both, an item is relevant when its true rating is above ``threshold`` (3: "interested"),
ties in the scores are broken by ascending item code, Recall@N divides by ``min(N, #relevant)``
and NDCG@N is normalised by the ideal DCG truncated at ``min(N, #relevant)``. Only users with at
least one relevant test item are averaged (the metrics are undefined for the others).
Everything is vectorised: one sort of all pairs, then per-user sums with ``np.add.reduceat``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("user", "item", "rating", "prediction")


def clip(preds: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Predictions clipped to the rating scale, as every model's test predictions are."""
    return np.clip(np.asarray(preds, dtype=np.float64), lo, hi)


def rmse(ratings: np.ndarray, preds: np.ndarray) -> float:
    """Root mean squared error over all given ratings (NaN when there are none)."""
    ratings, preds = _as_float_arrays(ratings=ratings, preds=preds)
    if ratings.size == 0:
        log.warning("rmse: no ratings given; returning NaN")
        return float("nan")
    return float(np.sqrt(np.mean((preds - ratings) ** 2)))


def paper_ranking_metrics(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    preds: np.ndarray,
    ks: Sequence[int] = (20, 50),
    threshold: float = 3.0,
    min_test_ratings: int = 2,
) -> dict[str, Any]:
    """Recall@N / NDCG@N ranking each user's own test items by prediction (paper protocol)."""
    ks = _check_ks(ks)
    ratings, preds = _as_float_arrays(ratings=ratings, preds=preds)
    users, items = _as_int_arrays(users=users, items=items)
    _check_same_length(users=users, items=items, ratings=ratings, preds=preds)
    _check_no_nan(preds, "preds")
    n = users.size
    if n == 0:
        return _empty_result(ks, "paper protocol: no test pairs given")

    order = _user_list_order(users, items, preds)
    u = users[order]
    rel = ratings[order] > threshold
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, n])
    pos = np.arange(n) - np.repeat(starts, counts)  # 0-based position within the user's list
    n_rel = np.add.reduceat(rel.astype(np.int64), starts)
    keep = (counts >= min_test_ratings) & (n_rel > 0)
    if not keep.any():
        return _empty_result(
            ks,
            f"paper protocol: no user has >= {min_test_ratings} test ratings and a rating "
            f"> {threshold}",
        )
    disc = _discounts(max(int(counts.max()), max(ks)))
    rel_disc = np.where(rel, disc[pos], 0.0)
    out: dict[str, Any] = {}
    for k in ks:
        in_top = pos < k  # also the whole list when the user has fewer than k test items
        hits = np.add.reduceat((rel & in_top).astype(np.int64), starts)[keep]
        dcg = np.add.reduceat(np.where(in_top, rel_disc, 0.0), starts)[keep]
        out.update(_recall_ndcg(k, hits, dcg, n_rel[keep], disc))
    out["n_users_ranked"] = int(keep.sum())
    return out


def full_ranking_metrics(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    train_users: np.ndarray,
    train_items: np.ndarray,
    test_users: np.ndarray,
    test_items: np.ndarray,
    test_ratings: np.ndarray,
    ks: Sequence[int] = (20, 50),
    threshold: float = 3.0,
    user_chunk: int = 1024,
) -> dict[str, Any]:
    """Recall@N / NDCG@N ranking every item a user did not rate in training (usual top-N protocol).

    ``score_fn(user_codes[B]) -> scores[B, n_items]`` is called on chunks of ``user_chunk`` users,
    so memory stays O(user_chunk * n_items). A relevant test item that also occurs in the user's
    training items still counts in ``#relevant`` but can never be hit (a disjoint split has none).
    """
    ks = _check_ks(ks)
    if user_chunk < 1:
        raise ValueError(f"full_ranking_metrics: user_chunk must be >= 1, got {user_chunk}")
    train_users, train_items, test_users, test_items = _as_int_arrays(
        train_users=train_users,
        train_items=train_items,
        test_users=test_users,
        test_items=test_items,
    )
    (test_ratings,) = _as_float_arrays(test_ratings=test_ratings)
    _check_same_length(train_users=train_users, train_items=train_items)
    _check_same_length(test_users=test_users, test_items=test_items, test_ratings=test_ratings)
    for name, arr in (("train_items", train_items), ("test_items", test_items)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_items):
            raise ValueError(
                f"full_ranking_metrics: {name} must be codes in [0, n_items={n_items}); "
                f"got range [{arr.min()}, {arr.max()}]"
            )

    relevant = test_ratings > threshold
    rel_u, rel_i = test_users[relevant], test_items[relevant]
    # Distinct relevant (user, item) pairs, sorted by user: duplicates must not count twice.
    rel_pairs = np.unique(rel_u.astype(np.int64) * n_items + rel_i)
    rel_u, rel_i = rel_pairs // n_items, rel_pairs % n_items
    ranked_users, rel_start, n_rel = np.unique(rel_u, return_index=True, return_counts=True)
    if ranked_users.size == 0:
        return _empty_result(ks, f"full protocol: no test rating > {threshold}")

    train_order = np.argsort(train_users, kind="stable")
    tr_u, tr_i = train_users[train_order], train_items[train_order]
    disc_np = _discounts(max(n_items, max(ks)))
    hits: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    dcgs: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for c0 in range(0, ranked_users.size, user_chunk):  # loop over chunks of users, not users
        chunk = ranked_users[c0 : c0 + user_chunk]
        scores = _chunk_scores(score_fn, chunk, n_items)
        # Row-local codes of this chunk's training and relevant pairs (both sorted by user).
        row_of = np.full(int(chunk.max()) + 1, -1, dtype=np.int64)
        row_of[chunk] = np.arange(chunk.size)
        lo, hi = np.searchsorted(tr_u, [chunk.min(), chunk.max() + 1])
        tr_rows = row_of[tr_u[lo:hi]]
        in_chunk = tr_rows >= 0
        r0, r1 = rel_start[c0], rel_start[c0 + chunk.size - 1] + n_rel[c0 + chunk.size - 1]
        seen = _dense_mask(chunk.size, n_items, tr_rows[in_chunk], tr_i[lo:hi][in_chunk])
        rel = _dense_mask(chunk.size, n_items, row_of[rel_u[r0:r1]], rel_i[r0:r1])

        # Stable descending sort keeps ascending item codes among tied scores.
        _, order = torch.sort(scores, dim=1, descending=True, stable=True)
        cand = ~torch.gather(seen.to(order.device), 1, order)
        hit = torch.gather(rel.to(order.device), 1, order) & cand
        rank = (torch.cumsum(cand, dim=1) - 1).clamp(min=0)  # 0-based rank among candidates
        disc = torch.as_tensor(disc_np, device=order.device)[rank]
        for k in ks:
            top_hit = hit & (rank < k)
            hits[k].append(top_hit.sum(1).cpu().numpy())
            dcgs[k].append(torch.where(top_hit, disc, 0.0).sum(1).cpu().numpy())
    out: dict[str, Any] = {}
    for k in ks:
        out.update(
            _recall_ndcg(k, np.concatenate(hits[k]), np.concatenate(dcgs[k]), n_rel, disc_np)
        )
    out["n_users_ranked"] = int(ranked_users.size)
    return out


def evaluate(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    preds: np.ndarray,
    rating_min: float,
    rating_max: float,
    protocol: str = "paper",
    ks: Sequence[int] = (20, 50),
    threshold: float = 3.0,
    **protocol_kwargs: Any,
) -> dict[str, Any]:
    """RMSE of the clipped predictions plus the ranking metrics of ``protocol`` ("paper" or "full").

    ``protocol_kwargs`` go to the protocol: ``min_test_ratings`` for "paper"; ``score_fn``,
    ``n_items``, ``train_users``, ``train_items`` (and optionally ``user_chunk``) for "full".
    """
    clipped = clip(preds, rating_min, rating_max)
    out: dict[str, Any] = {"rmse": rmse(ratings, clipped)}
    if protocol == "paper":
        out.update(
            paper_ranking_metrics(users, items, ratings, clipped, ks, threshold, **protocol_kwargs)
        )
    elif protocol == "full":
        out.update(
            full_ranking_metrics(
                test_users=users,
                test_items=items,
                test_ratings=ratings,
                ks=ks,
                threshold=threshold,
                **protocol_kwargs,
            )
        )
    else:
        raise ValueError(
            f"evaluate: unknown protocol {protocol!r}; use 'paper' (rank each user's test items) "
            "or 'full' (rank all items unrated in training), e.g. evaluation.protocol=paper"
        )
    out["protocol"] = protocol
    return out


def metrics_from_predictions(
    df: pd.DataFrame,
    rating_min: float,
    rating_max: float,
    ks: Sequence[int] = (20, 50),
    threshold: float = 3.0,
    min_test_ratings: int = 2,
) -> dict[str, Any]:
    """Paper-protocol metrics recomputed from a ``test_predictions.csv`` table (original ids).

    Item codes must follow the original-id order for the tie-break, so ids compare as numbers
    when every id is numeric (item 10 after item 9) and as strings otherwise.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"metrics_from_predictions: missing columns {missing}; expected the header "
            f"{','.join(PREDICTION_COLUMNS)} of test_predictions.csv, got {list(df.columns)}"
        )
    for col in ("rating", "prediction"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise ValueError(
                f"metrics_from_predictions: column {col!r} is empty or non-numeric at "
                f"{bad.size} row(s), first at data row {bad[0] + 1} (line {bad[0] + 2} of the CSV "
                "with its header); fix or drop those rows"
            )
    users = pd.factorize(df["user"].astype(str))[0]
    return evaluate(
        users,
        _ordered_codes(df["item"]),
        pd.to_numeric(df["rating"]).to_numpy(np.float64),
        pd.to_numeric(df["prediction"]).to_numpy(np.float64),
        rating_min,
        rating_max,
        protocol="paper",
        ks=ks,
        threshold=threshold,
        min_test_ratings=min_test_ratings,
    )


def _user_list_order(users: np.ndarray, items: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Stable permutation sorting pairs by user, prediction descending, then item code ascending.

    Equivalent to ``np.lexsort((items, -preds, users))`` but about 3x faster: the predictions are
    replaced by their dense rank so the three keys pack into one int64 for a single sort.
    """
    uniq, pred_rank = torch.unique(torch.from_numpy(-preds), return_inverse=True)
    n_preds, n_items = uniq.numel(), int(items.max()) + 1
    if (int(users.max()) + 1) * n_preds * n_items >= 2**63:
        return np.lexsort((items, -preds, users))
    key = (torch.from_numpy(users) * n_preds + pred_rank) * n_items + torch.from_numpy(items)
    return torch.sort(key, stable=True).indices.numpy()


def _chunk_scores(
    score_fn: Callable[[torch.Tensor], torch.Tensor], chunk: np.ndarray, n_items: int
) -> torch.Tensor:
    scores = score_fn(torch.as_tensor(chunk, dtype=torch.long)).detach()
    if tuple(scores.shape) != (chunk.size, n_items):
        raise ValueError(
            f"full_ranking_metrics: score_fn returned shape {tuple(scores.shape)}, "
            f"expected ({chunk.size}, {n_items}) for a chunk of {chunk.size} users"
        )
    if torch.isnan(scores).any():
        raise ValueError(
            "full_ranking_metrics: score_fn returned NaN scores; the model diverged "
            "(check the training loss) or score_fn is broken"
        )
    return scores


def _dense_mask(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    mask = torch.zeros(n_rows, n_cols, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return mask


def _ordered_codes(ids: pd.Series) -> np.ndarray:
    """Integer codes whose order is numeric order if every id is a number, else string order."""
    numeric = pd.to_numeric(ids, errors="coerce")
    keys = numeric if not numeric.isna().any() else ids.astype(str)
    return pd.factorize(keys, sort=True)[0]


def _discounts(n: int) -> np.ndarray:
    """1 / log2(r + 1) for the 1-based positions r = 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _recall_ndcg(
    k: int, hits: np.ndarray, dcg: np.ndarray, n_rel: np.ndarray, disc: np.ndarray
) -> dict[str, float]:
    denom = np.minimum(k, n_rel)
    idcg = np.cumsum(disc[:k])[denom - 1]  # ideal: all relevant items first, cut at min(k, #rel)
    return {f"recall@{k}": float(np.mean(hits / denom)), f"ndcg@{k}": float(np.mean(dcg / idcg))}


def _empty_result(ks: Sequence[int], why: str) -> dict[str, Any]:
    log.warning("%s; ranking metrics are NaN", why)
    out: dict[str, Any] = {}
    for k in ks:
        out[f"recall@{k}"] = float("nan")
        out[f"ndcg@{k}"] = float("nan")
    out["n_users_ranked"] = 0
    return out


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive cut-offs N, got {ks}")
    return ks


def _as_float_arrays(**arrays: Any) -> tuple[np.ndarray, ...]:
    return tuple(_one_dim(name, np.asarray(a, dtype=np.float64)) for name, a in arrays.items())


def _as_int_arrays(**arrays: Any) -> tuple[np.ndarray, ...]:
    out = []
    for name, a in arrays.items():
        a = _one_dim(name, np.asarray(a))
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integer codes, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} must hold codes >= 0, got minimum {a.min()}")
        out.append(np.array(a, dtype=np.int64))  # a writable copy, as torch.from_numpy wants
    return tuple(out)


def _one_dim(name: str, a: np.ndarray) -> np.ndarray:
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    return a


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: a.size for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have equal lengths (one entry per test pair), got {lengths}")


def _check_no_nan(a: np.ndarray, name: str) -> None:
    n_nan = int(np.isnan(a).sum())
    if n_nan:
        raise ValueError(
            f"{name} has {n_nan} NaN value(s); the model diverged or wrote incomplete "
            "predictions, so the ranking is undefined"
        )
