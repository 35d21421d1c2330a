"""Metrics against hand-computed examples and brute-force references written from the protocol text."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xfvae.scoring.evaluation import metrics_from_predictions
from xfvae.scoring.metrics import (
    _user_list_order,
    clip,
    full_ranking_metrics,
    paper_ranking_metrics,
    rmse,
)

# 1 / log2(3): the discount of rank 2.
D2 = 0.6309297535714575


# --- brute-force references: one user at a time, straight from the protocol text -------------------


def _recall_ndcg(ranked_rel: list[int], n_rel: int, k: int) -> tuple[float, float]:
    top = ranked_rel[:k]
    recall = sum(top) / min(k, n_rel)
    dcg = sum(rel / math.log2(r + 1) for r, rel in enumerate(top, start=1))
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, n_rel) + 1))
    return recall, dcg / idcg


def _average(per_user: list[dict], ks) -> dict:
    out = {}
    for k in ks:
        for name in (f"recall@{k}", f"ndcg@{k}"):
            out[name] = sum(m[name] for m in per_user) / len(per_user) if per_user else math.nan
    out["n_users_ranked"] = len(per_user)
    return out


def brute_paper(users, items, ratings, preds, ks, threshold, min_test_ratings) -> dict:
    lists = defaultdict(list)
    for u, i, r, p in zip(users, items, ratings, preds, strict=True):
        lists[int(u)].append((int(i), float(r), float(p)))
    per_user = []
    for rows in lists.values():
        if len(rows) < min_test_ratings:
            continue
        ranked = sorted(rows, key=lambda t: (-t[2], t[0]))  # prediction desc, item code asc
        rel = [int(r > threshold) for _, r, _ in ranked]
        if sum(rel) == 0:
            continue
        m = {}
        for k in ks:
            m[f"recall@{k}"], m[f"ndcg@{k}"] = _recall_ndcg(rel, sum(rel), k)
        per_user.append(m)
    return _average(per_user, ks)


def brute_full(scores, train_pairs, test_triples, ks, threshold) -> dict:
    n_users, n_items = scores.shape
    per_user = []
    for u in range(n_users):
        relevant = {i for uu, i, r in test_triples if uu == u and r > threshold}
        if not relevant:
            continue
        seen = {i for uu, i in train_pairs if uu == u}
        candidates = [i for i in range(n_items) if i not in seen]
        ranked = sorted(candidates, key=lambda i: (-scores[u, i], i))
        rel = [int(i in relevant) for i in ranked]
        m = {}
        for k in ks:
            m[f"recall@{k}"], m[f"ndcg@{k}"] = _recall_ndcg(rel, len(relevant), k)
        per_user.append(m)
    return _average(per_user, ks)


def assert_same(got: dict, want: dict) -> None:
    assert got["n_users_ranked"] == want["n_users_ranked"]
    for key, value in want.items():
        if key != "n_users_ranked":
            assert got[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


# --- hand-computed examples ---------------------------------------------------------------------------


def test_paper_protocol_hand_example():
    # User 0: items 0, 1, 2 with predictions 4, 4, 3 and ratings 2, 5, 4 (relevant: 1 and 2).
    # Tie 0/1 broken by item code -> ranking 0, 1, 2 -> relevance [0, 1, 1], #relevant = 2.
    #   @20: recall 2/2 = 1; DCG = 1/log2(3) + 1/log2(4) = D2 + 0.5; IDCG = 1 + D2 -> 0.69342640...
    #   @2:  recall 1/2;     DCG = D2;                   IDCG = 1 + D2 -> 0.38685280...
    #   @1:  recall 0/1 = 0; DCG = 0 -> 0.
    # User 1 has a single test item (below min_test_ratings=2); user 2 has no relevant item.
    users = np.array([0, 0, 0, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2])
    ratings = np.array([2.0, 5.0, 4.0, 5.0, 3.0, 1.0])
    preds = np.array([4.0, 4.0, 3.0, 5.0, 4.0, 2.0])
    m = paper_ranking_metrics(users, items, ratings, preds, ks=(1, 2, 20))
    assert m["n_users_ranked"] == 1
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["ndcg@20"] == pytest.approx((D2 + 0.5) / (1 + D2))
    assert m["ndcg@20"] == pytest.approx(0.6934264036172708)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(0.38685280723454163)
    assert m["recall@1"] == 0.0
    assert m["ndcg@1"] == 0.0


def test_paper_protocol_averages_users_and_uses_min_of_n_and_relevant():
    # User 0 as above (ndcg@1 0, recall@1 0). User 5: items 3, 4 ranked [rel, not rel]:
    # recall@1 = 1/min(1, 1) = 1, ndcg@1 = 1. Mean over the two users: 0.5 each.
    users = np.array([0, 0, 0, 5, 5])
    items = np.array([0, 1, 2, 4, 3])
    ratings = np.array([2.0, 5.0, 4.0, 1.0, 4.0])
    preds = np.array([4.0, 4.0, 3.0, 2.0, 4.5])
    m = paper_ranking_metrics(users, items, ratings, preds, ks=(1,))
    assert m == {"recall@1": 0.5, "ndcg@1": 0.5, "n_users_ranked": 2}


def test_relevance_is_strictly_above_threshold():
    users, items = np.array([0, 0]), np.array([0, 1])
    preds = np.array([5.0, 1.0])
    m = paper_ranking_metrics(users, items, np.array([3.0, 4.0]), preds, ks=(1,), threshold=3.0)
    assert m["recall@1"] == 0.0  # the top item is rated exactly 3: not relevant
    m = paper_ranking_metrics(users, items, np.array([3.0, 4.0]), preds, ks=(1,), threshold=2.5)
    assert m["recall@1"] == 1.0


def test_full_protocol_hand_example():
    # User 0 trained on item 0 (its top score, so it must be skipped); candidates 1, 2, 3 with
    # scores 1, 5, 5 rank as 2, 3, 1 (tie by item code); relevant test items 3 and 1
    # -> relevance [0, 1, 1]: the same numbers as the paper-protocol hand example.
    # User 1 has only an irrelevant test item: not averaged.
    scores = torch.tensor([[9.0, 1.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    m = full_ranking_metrics(
        lambda u: scores[u],
        n_items=4,
        train_users=np.array([0, 1]),
        train_items=np.array([0, 3]),
        test_users=np.array([0, 0, 1]),
        test_items=np.array([3, 1, 2]),
        test_ratings=np.array([5.0, 4.0, 2.0]),
        ks=(1, 2, 20),
    )
    assert m["n_users_ranked"] == 1
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["ndcg@20"] == pytest.approx(0.6934264036172708)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(0.38685280723454163)
    assert m["recall@1"] == 0.0


# --- brute-force comparisons on random inputs -----------------------------------------------------


@st.composite
def paper_inputs(draw):
    n = draw(st.integers(0, 60))
    ints = lambda hi: st.lists(st.integers(0, hi), min_size=n, max_size=n)  # noqa: E731
    users = np.array(draw(ints(7)), dtype=np.int64)
    items = np.array(draw(ints(12)), dtype=np.int64)
    ratings = np.array(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)), dtype=float)
    # A tiny value set forces many ties; free floats check the plain ordering.
    value = st.one_of(
        st.sampled_from([1.0, 2.5, 3.0, 5.0]), st.floats(1, 5, allow_nan=False, width=32)
    )
    preds = np.array(draw(st.lists(value, min_size=n, max_size=n)), dtype=float)
    ks = tuple(draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True)))
    return users, items, ratings, preds, ks, draw(st.integers(1, 3))


@settings(max_examples=250, deadline=None)
@given(paper_inputs(), st.sampled_from([3.0, 3.5]))
def test_paper_protocol_matches_brute_force(inputs, threshold):
    users, items, ratings, preds, ks, min_test = inputs
    got = paper_ranking_metrics(users, items, ratings, preds, ks, threshold, min_test)
    want = brute_paper(users, items, ratings, preds, ks, threshold, min_test)
    assert set(got) == {f"{m}@{k}" for k in ks for m in ("recall", "ndcg")} | {"n_users_ranked"}
    if want["n_users_ranked"] == 0:
        assert got["n_users_ranked"] == 0
        assert all(math.isnan(v) for key, v in got.items() if key != "n_users_ranked")
    else:
        assert_same(got, want)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_full_protocol_matches_brute_force(data):
    n_users, n_items = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 10))
    values = st.sampled_from([-math.inf, 0.0, 1.0, 1.5, 4.0])  # tiny set: many ties
    scores = np.array(
        data.draw(st.lists(values, min_size=n_users * n_items, max_size=n_users * n_items))
    ).reshape(n_users, n_items)
    pair = st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1))
    train = data.draw(st.lists(pair, max_size=25))
    test = data.draw(
        st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1),
                           st.integers(1, 5)), max_size=25)
    )  # fmt: skip
    ks = tuple(data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True)))
    chunk = data.draw(st.integers(1, 4))
    calls = []

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        calls.append(users.numel())
        return torch.from_numpy(scores[users.numpy()])

    arr = lambda rows, j: np.array([r[j] for r in rows], dtype=np.int64)  # noqa: E731
    got = full_ranking_metrics(
        score_fn, n_items, arr(train, 0), arr(train, 1), arr(test, 0), arr(test, 1),
        np.array([r[2] for r in test], dtype=float), ks=ks, user_chunk=chunk, min_test_ratings=1,
    )  # fmt: skip
    want = brute_full(scores, train, test, ks, 3.0)
    if want["n_users_ranked"] == 0:
        assert got["n_users_ranked"] == 0 and math.isnan(got[f"ndcg@{ks[0]}"])
    else:
        assert_same(got, want)
        assert max(calls) <= chunk and sum(calls) == want["n_users_ranked"]


@settings(max_examples=100, deadline=None)
@given(paper_inputs())
def test_packed_sort_equals_lexsort(inputs):
    users, items, _, preds, _, _ = inputs
    if users.size:
        want = np.lexsort((items, -preds, users))
        np.testing.assert_array_equal(_user_list_order(users, items, preds), want)
        # Codes too large to pack into one int64 take the lexsort fallback.
        big = users * 2**40
        np.testing.assert_array_equal(_user_list_order(big, items * 2**20, preds), want)


# --- RMSE, clip, evaluate ---------------------------------------------------------------------------


def test_rmse_matches_numpy_and_hand_value():
    rng = np.random.default_rng(0)
    r, p = rng.integers(1, 6, 1000).astype(float), rng.uniform(0, 6, 1000)
    assert rmse(r, p) == pytest.approx(np.sqrt(np.mean((r - p) ** 2)), rel=1e-12)
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert math.isnan(rmse([], []))


def test_clip_bounds_predictions_to_the_rating_scale():
    np.testing.assert_array_equal(clip(np.array([-1.0, 0.5, 3.2, 7.0]), 1, 5), [1, 1, 3.2, 5])


def test_metrics_clip_before_rmse_and_report_the_protocol():
    df = pd.DataFrame(  # both predictions exact once clipped to [1, 5]
        {"user": [0, 0], "item": [0, 1], "rating": [5.0, 1.0], "prediction": [6.5, -2.0]}
    )
    m = metrics_from_predictions(df, 1, 5, ks=(20, 50))
    assert m["test/rmse"] == 0.0
    assert m["test/protocol"] == "paper"
    assert m["test/recall@20"] == 1.0 and m["test/ndcg@50"] == 1.0
    assert m["test/n_users_ranked"] == 1


def test_metrics_reject_an_unknown_protocol():
    df = pd.DataFrame({"user": [0], "item": [0], "rating": [4.0], "prediction": [4.0]})
    with pytest.raises(ValueError, match="unknown protocol 'topn'"):
        metrics_from_predictions(df, 1, 5, protocol="topn")


def test_no_qualifying_user_gives_nan_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="xfvae.scoring.metrics"):
        m = paper_ranking_metrics(np.array([0, 1]), np.array([0, 0]), np.array([5.0, 5.0]),
                                  np.array([4.0, 4.0]), ks=(20,))  # fmt: skip
    assert m["n_users_ranked"] == 0 and math.isnan(m["recall@20"]) and math.isnan(m["ndcg@20"])
    assert "no user has >= 2 test ratings" in caplog.text
    empty = paper_ranking_metrics(np.array([], int), np.array([], int), [], [], ks=(20,))
    assert empty["n_users_ranked"] == 0 and math.isnan(empty["ndcg@20"])


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="equal lengths"):
        paper_ranking_metrics(np.array([0, 1]), np.array([0]), [5.0], [4.0])
    with pytest.raises(ValueError, match="NaN"):
        paper_ranking_metrics(np.array([0, 0]), np.array([0, 1]), [5.0, 4.0], [np.nan, 4.0])
    with pytest.raises(ValueError, match="shape"):
        full_ranking_metrics(lambda u: torch.zeros(1, 3), 4, np.array([0]), np.array([0]),
                             np.array([0]), np.array([1]), np.array([5.0]),
                             min_test_ratings=1)  # fmt: skip
    with pytest.raises(ValueError, match="n_items=4"):
        full_ranking_metrics(lambda u: torch.zeros(1, 4), 4, np.array([0]), np.array([0]),
                             np.array([0]), np.array([4]), np.array([5.0]))  # fmt: skip
    with pytest.raises(ValueError, match="NaN scores"):
        full_ranking_metrics(lambda u: torch.full((1, 4), np.nan), 4, np.array([0]),
                             np.array([0]), np.array([0]), np.array([1]), np.array([5.0]),
                             min_test_ratings=1)  # fmt: skip


# --- metrics_from_predictions -----------------------------------------------------------------------


def test_numeric_string_ids_sort_numerically():
    # Tied predictions: item 9 must rank before item 10 (numeric order; "10" < "9" as strings).
    df = pd.DataFrame(
        {"user": ["u1", "u1"], "item": ["10", "9"], "rating": [1.0, 5.0], "prediction": [4.0, 4.0]}
    )
    m = metrics_from_predictions(df, 1, 5, ks=(1,))
    assert m["test/recall@1"] == 1.0 and m["test/ndcg@1"] == 1.0
    assert metrics_from_predictions(df.assign(item=[10, 9]), 1, 5, ks=(1,))["test/ndcg@1"] == 1.0
    # One non-numeric id: every id compares as a string, so "10" comes first.
    m = metrics_from_predictions(df.assign(item=["10", "x9"]), 1, 5, ks=(1,))
    assert m["test/recall@1"] == 0.0 and m["test/ndcg@1"] == 0.0


def test_metrics_from_predictions_match_brute_force_on_a_csv(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    df = pd.DataFrame(
        {
            "user": rng.integers(0, 30, n) * 7,
            "item": rng.integers(0, 50, n) * 3,  # codes keep numeric order
            "rating": rng.integers(1, 6, n).astype(float),
            "prediction": rng.choice([0.5, 2.0, 3.5, 4.0, 5.5], n),  # ties, and out of range
        }
    )
    path = tmp_path / "test_predictions.csv"
    df.to_csv(path, index=False)
    got = metrics_from_predictions(pd.read_csv(path), 1, 5)
    want = brute_paper(df.user, df["item"], df.rating, df.prediction.clip(1, 5), (20, 50), 3.0, 2)
    assert_same({k.removeprefix("test/"): v for k, v in got.items()}, want)
    assert got["test/rmse"] == pytest.approx(
        np.sqrt(((df.prediction.clip(1, 5) - df.rating) ** 2).mean())
    )


def test_metrics_from_predictions_names_bad_rows():
    df = pd.DataFrame({"user": [1, 1], "item": [1, 2], "rating": [5.0, None], "prediction": [4, 4]})
    with pytest.raises(ValueError, match="line 3 of the CSV"):
        metrics_from_predictions(df, 1, 5)
    with pytest.raises(ValueError, match=r"missing columns \['prediction'\]"):
        metrics_from_predictions(df.drop(columns="prediction"), 1, 5)


@pytest.mark.slow
def test_three_million_pairs_take_about_a_second():
    rng = np.random.default_rng(0)
    n = 3_000_000
    users, items = rng.integers(0, 140_000, n), rng.integers(0, 27_000, n)
    ratings = rng.integers(1, 6, n).astype(float)
    preds = np.clip(ratings + rng.normal(0, 1, n), 1, 5).astype(np.float32).astype(float)
    start = time.perf_counter()
    m = paper_ranking_metrics(users, items, ratings, preds)
    assert time.perf_counter() - start < 4.0  # ~0.5 s on an idle core, ~2 s at load 6 on 2 cores
    assert m["n_users_ranked"] > 130_000
