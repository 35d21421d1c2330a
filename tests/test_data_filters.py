"""min_count_filter against a hand-made case and a brute-force reference."""

from __future__ import annotations

import logging
from collections import Counter

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from xfvae.data.filters import min_count_filter

# Item z has one rating: dropping it leaves user C with one rating, which only a second round sees.
HAND = pd.DataFrame(
    [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y"), ("C", "x"), ("C", "z")],
    columns=["user", "item"],
).assign(rating=[5.0, 4.0, 3.0, 2.0, 1.0, 5.0], timestamp=range(6))


def _pairs(df):
    return list(zip(df["user"], df["item"], strict=True))


def test_single_pass_and_fixed_point_differ_on_the_hand_made_case(caplog):
    once = min_count_filter(HAND, 2, 2, iterate=False)
    assert _pairs(once) == [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y"), ("C", "x")]
    assert once.attrs["filter"]["rounds"] == 1
    with caplog.at_level(logging.INFO):
        core = min_count_filter(HAND, 2, 2)
    assert _pairs(core) == [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y")]
    assert core["rating"].tolist() == [5.0, 4.0, 3.0, 2.0] and core.index.tolist() == [0, 1, 2, 3]
    assert core.attrs["filter"] == {
        "min_user": 2, "min_item": 2, "iterate": True, "rounds": 2,
        "removed_users": 1, "removed_items": 1, "removed_ratings": 2,
    }  # fmt: skip
    assert "removed 1 users, 1 items, 2 of 6 ratings in 2 round(s)" in caplog.text


def test_nothing_to_remove_takes_zero_rounds():
    out = min_count_filter(HAND, 1, 1)
    assert len(out) == 6 and out.attrs["filter"]["rounds"] == 0


def _reference(pairs, min_user, min_item, iterate):
    keep = list(pairs)
    while True:
        uc, ic = Counter(u for u, _ in keep), Counter(i for _, i in keep)
        new = [(u, i) for u, i in keep if uc[u] >= min_user and ic[i] >= min_item]
        if len(new) == len(keep):
            return new
        keep = new
        if not iterate:
            return keep


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 7)), unique=True, min_size=0, max_size=50
    ),
    min_user=st.integers(0, 4),
    min_item=st.integers(0, 4),
    iterate=st.booleans(),
)
def test_matches_brute_force_reference(pairs, min_user, min_item, iterate):
    df = pd.DataFrame(pairs, columns=["user", "item"], dtype="int64").assign(rating=1.0)
    out = min_count_filter(df, min_user, min_item, iterate=iterate)
    assert _pairs(out) == _reference(pairs, min_user, min_item, iterate)
    if iterate:  # the k-core property holds in the result
        assert (out["user"].value_counts() >= min_user).all()
        assert (out["item"].value_counts() >= min_item).all()
