"""Every ranking protocol of xfvae.scoring.metrics against a brute-force reference written from its
definition (one user at a time, plain Python), on a hand-made case and on random ones."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xfvae.scoring.evaluation import metrics_from_predictions
from xfvae.scoring.metrics import PROTOCOLS, ranking_metrics

D2 = 1 / math.log2(3)  # discount of rank 2
D3 = 0.5  # discount of rank 3

# The readings, restated here independently of the implementation:
# (ranked items, relevant items, scores, binarised, Recall normaliser, NDCG normaliser)
DEFINITIONS = {
    "paper": ("test", "test", "model", False, "relevant", "relevant"),
    "paper_heldout": ("test", "test", "model", False, "heldout", "heldout"),
    "liang_nnz": ("test", "test", "model", False, "relevant", "heldout"),
    "binary": ("test", "test", "model", True, "relevant", "relevant"),
    "binary_heldout": ("test", "test", "model", True, "heldout", "heldout"),
    "liang_binary": ("unrated", "test", "test_predictions", True, "relevant", "relevant"),
    "full": ("unrated", "test", "model", False, "relevant", "relevant"),
    "rated": ("rated", "test", "model", False, "relevant", "relevant"),
    "rated_all": ("rated", "rated", "model", False, "relevant", "relevant"),
}


def brute(name, scores, train, val, test, ks, threshold=3.0, min_test=2) -> dict:
    """``scores[u][i]``: the model's score; ``train``/``val``/``test``: lists of (user, item,
    rating); a test pair's prediction is the model's score of that pair."""
    ranked_kind, relevant_kind, source, binarise, recall_norm, ndcg_norm = DEFINITIONS[name]
    n_users, n_items = len(scores), len(scores[0])
    per_user = []
    for u in range(n_users):
        tests = [(i, r) for uu, i, r in test if uu == u]
        if len(tests) < min_test:
            continue
        trained = {i for uu, i, _ in train if uu == u}
        rated = trained | {i for uu, i, _ in val + test if uu == u}
        splits = test if relevant_kind == "test" else train + val + test
        relevant = {i for uu, i, r in splits if uu == u and r > threshold}
        if ranked_kind == "test":
            entries = [(i, scores[u][i], r > threshold) for i, r in tests]
            n_rel = sum(rel for _, _, rel in entries)  # list entries, duplicates included
        else:
            candidates = [i for i in range(n_items) if i not in trained]
            if ranked_kind == "rated":
                candidates = sorted(rated)
            test_items = {i for i, _ in tests}
            score = {
                i: scores[u][i] if source == "model" or i in test_items else 0.0 for i in candidates
            }
            entries = [(i, score[i], i in relevant) for i in candidates]
            n_rel = len(relevant)
        if binarise:
            entries = [(i, float(s > threshold), rel) for i, s, rel in entries]
        ranking = [rel for _, _, rel in sorted(entries, key=lambda e: (-e[1], e[0]))]
        norm = {"relevant": n_rel, "heldout": len(tests)}
        if norm[recall_norm] == 0 or norm[ndcg_norm] == 0:
            continue
        m = {}
        for k in ks:
            top = ranking[:k]
            m[f"recall@{k}"] = sum(top) / min(k, norm[recall_norm])
            dcg = sum(rel / math.log2(r + 1) for r, rel in enumerate(top, start=1))
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, norm[ndcg_norm]) + 1))
            m[f"ndcg@{k}"] = dcg / idcg
        per_user.append(m)
    out = {key: float(np.mean([m[key] for m in per_user])) for key in (per_user or [{}])[0]}
    out["n_users_ranked"] = len(per_user)
    return out


def compute(name, scores, train, val, test, ks, threshold=3.0, min_test=2, chunk=1024) -> dict:
    score_matrix = torch.tensor(scores, dtype=torch.float64)
    arrays = lambda rows: tuple(np.array([r[j] for r in rows]).astype(t) for j, t in  # noqa: E731
                                enumerate((np.int64, np.int64, np.float64)))  # fmt: skip
    u, i, r = arrays(test)
    preds = score_matrix[u, i].numpy() if len(test) else np.zeros(0)
    return ranking_metrics(
        name, u, i, r, preds, ks, threshold, min_test, score_fn=lambda users: score_matrix[users],
        n_items=score_matrix.shape[1], train=arrays(train), val=arrays(val), user_chunk=chunk,
    )  # fmt: skip


def assert_same(got: dict, want: dict) -> None:
    assert got["n_users_ranked"] == want["n_users_ranked"]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


# --- the hand-made case -------------------------------------------------------------------------
# User 0 trained on items 0 (5) and 1 (2), validated on 2 (4), tested on 3 (5), 4 (2), 5 (4).
# User 1 has one test rating (below min_test_ratings = 2). User 2's two test ratings are not
# relevant: only the protocols normalising by #test items average it (scoring 0).
SCORES = [
    [5.0, 1.0, 4.0, 3.5, 4.5, 3.0],  # 3.0: exactly the threshold, binarised to 0
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 2.0, 4.0, 1.0, 1.0, 1.0],
]
TRAIN = [(0, 0, 5.0), (0, 1, 2.0), (1, 3, 4.0)]
VAL = [(0, 2, 4.0)]
TEST = [(0, 3, 5.0), (0, 4, 2.0), (0, 5, 4.0), (1, 0, 3.0), (2, 1, 1.0), (2, 2, 3.0)]
KS = (1, 2, 3, 4)

# Hand-computed (user 0's ranking in comments; rel = relevant test item, or any split for
# rated_all). User 2 contributes 0 to the *_heldout protocols, so they halve user 0's values.
HAND = {
    # test items by prediction: 4 (4.5), 3 (3.5), 5 (3.0) -> [0, 1, 1], 2 relevant
    "paper": {"recall@1": 0.0, "recall@2": 0.5, "ndcg@2": D2 / (1 + D2), "recall@3": 1.0},
    # same ranking, normalised by 3 test items
    "paper_heldout": {"recall@2": 0.25, "recall@3": 1 / 3, "ndcg@3": (D2 + D3) / (1 + D2 + D3) / 2},
    "liang_nnz": {"recall@3": 1.0, "ndcg@3": (D2 + D3) / (1 + D2 + D3)},
    # binarised: 3 (1), 4 (1), 5 (0) -> [1, 0, 1]
    "binary": {"recall@1": 1.0, "recall@2": 0.5, "ndcg@2": 1 / (1 + D2), "recall@3": 1.0},
    "binary_heldout": {"recall@1": 0.5, "recall@3": 1 / 3},
    # unrated items 2..5 with binarised test predictions, 0 elsewhere: 3, 4, 2, 5 -> [1, 0, 0, 1]
    "liang_binary": {"recall@2": 0.5, "recall@3": 0.5, "ndcg@3": 1 / (1 + D2), "recall@4": 1.0},
    # unrated items by model score: 4 (4.5), 2 (4.0), 3 (3.5), 5 (3.0) -> [0, 0, 1, 1]
    "full": {"recall@2": 0.0, "recall@3": 0.5, "ndcg@3": D3 / (1 + D2)},
    # every rated item by score: 0, 4, 2, 3, 5, 1 -> [0, 0, 0, 1, 1, 0]
    "rated": {"recall@3": 0.0, "recall@4": 0.5, "ndcg@4": (1 / math.log2(5)) / (1 + D2)},
    # relevant in any split: 0, 2, 3, 5 -> [1, 0, 1, 1, 1, 0], 4 relevant
    "rated_all": {"recall@1": 1.0, "recall@2": 0.5, "recall@3": 2 / 3,
                  "ndcg@3": (1 + D3) / (1 + D2 + D3)},
}  # fmt: skip


def test_every_protocol_has_a_reference_definition():
    assert set(DEFINITIONS) == set(PROTOCOLS) == set(HAND)


@pytest.mark.parametrize("name", list(DEFINITIONS))
def test_hand_made_case(name):
    got = compute(name, SCORES, TRAIN, VAL, TEST, KS)
    assert_same(got, brute(name, SCORES, TRAIN, VAL, TEST, KS))
    heldout = DEFINITIONS[name][4] == "heldout"
    assert got["n_users_ranked"] == (2 if heldout else 1)
    for key, value in HAND[name].items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_readings_differ_on_the_hand_made_case():
    # Each protocol is a different number somewhere: no two readings collapse into one.
    results = {n: compute(n, SCORES, TRAIN, VAL, TEST, KS) for n in DEFINITIONS}
    keys = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    signatures = {n: tuple(round(r[k], 9) for k in keys) for n, r in results.items()}
    assert len(set(signatures.values())) == len(signatures)


@st.composite
def cases(draw):
    n_users, n_items = draw(st.integers(1, 6)), draw(st.integers(1, 9))
    pairs = [(u, i) for u in range(n_users) for i in range(n_items)]
    split = draw(st.lists(st.sampled_from("-rvt"), min_size=len(pairs), max_size=len(pairs)))
    rating = st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0])
    rows = {
        s: [(u, i, draw(rating)) for (u, i), t in zip(pairs, split, strict=True) if t == s]
        for s in "rvt"
    }
    values = st.sampled_from([1.0, 2.5, 3.0, 3.5, 5.0])  # few values: many ties
    scores = [[draw(values) for _ in range(n_items)] for _ in range(n_users)]
    ks = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3, unique=True)))
    return scores, rows["r"], rows["v"], rows["t"], ks, draw(st.integers(1, 3))


@pytest.mark.parametrize("name", list(DEFINITIONS))
@settings(max_examples=30, deadline=None)
@given(case=cases(), chunk=st.integers(1, 3))
def test_matches_brute_force_on_random_cases(name, case, chunk):
    scores, train, val, test, ks, min_test = case
    got = compute(name, scores, train, val, test, ks, min_test=min_test, chunk=chunk)
    want = brute(name, scores, train, val, test, ks, min_test=min_test)
    if want["n_users_ranked"] == 0:
        assert got["n_users_ranked"] == 0 and math.isnan(got[f"recall@{ks[0]}"])
    else:
        assert_same(got, want)


def test_protocols_needing_more_than_the_test_pairs_say_what_is_missing():
    u, i, r = np.array([0, 0]), np.array([0, 1]), np.array([4.0, 2.0])
    with pytest.raises(ValueError, match=r"needs the train pairs"):
        ranking_metrics("full", u, i, r, r, n_items=2, score_fn=lambda x: torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"needs the val pairs \(val=\(users, items, ratings\)\)"):
        ranking_metrics("rated_all", u, i, r, r, n_items=2, train=(u, i, r))
    with pytest.raises(ValueError, match="pass score_fn"):
        ranking_metrics("rated", u, i, r, r, n_items=2, train=(u, i), val=(u, i))
    with pytest.raises(ValueError, match="pass n_items"):
        ranking_metrics("liang_binary", u, i, r, r, train=(u, i))
    with pytest.raises(ValueError, match=r"unknown protocol 'top'.*paper, paper_heldout"):
        ranking_metrics("top", u, i, r, r)


def test_metrics_report_rmse_and_the_protocol():
    df = pd.DataFrame(
        {"user": [0, 0], "item": [3, 1], "rating": [5.0, 4.0], "prediction": [6.0, 4.0]}
    )
    m = metrics_from_predictions(df, 1, 5, protocol="paper_heldout", ks=(1,))
    assert m["test/rmse"] == 0.0 and m["test/protocol"] == "paper_heldout"
    assert m["test/recall@1"] == 1.0


def test_metrics_from_predictions_takes_test_only_protocols():
    df = pd.DataFrame(
        {
            "user": [1, 1, 1],
            "item": [3, 4, 5],
            "rating": [5.0, 2.0, 4.0],
            "prediction": [3.5, 4.5, 2],
        }
    )
    assert metrics_from_predictions(df, 1, 5, ks=(2,), protocol="binary")["test/ndcg@2"] == (
        pytest.approx(1 / (1 + D2))
    )
    with pytest.raises(ValueError, match="ranks items beyond the test pairs"):
        metrics_from_predictions(df, 1, 5, protocol="full")
