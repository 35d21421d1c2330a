"""Minimum-count filters on users and items (paper 4.1: Amazon keeps those with >= 10 ratings).

Removing rare items can leave a user below the threshold and vice versa, so ``iterate=True`` (the
default) repeats the rule until nothing changes: the result is the k-core, in which the stated
property really holds. ``iterate=False`` applies the rule once, to the original counts.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def min_count_filter(
    df: pd.DataFrame, min_user: int, min_item: int, iterate: bool = True
) -> pd.DataFrame:
    """Ratings of users with >= ``min_user`` and items with >= ``min_item`` ratings (source order).

    The counts are in ``df.attrs["filter"]`` and the log: removed users/items/ratings and rounds
    (passes that removed something).
    """
    users, n_users = _codes(df["user"])
    items, n_items = _codes(df["item"])
    keep = np.ones(len(df), dtype=bool)
    rounds = 0
    while True:
        u_count = np.bincount(users[keep], minlength=n_users)
        i_count = np.bincount(items[keep], minlength=n_items)
        new = keep & (u_count[users] >= min_user) & (i_count[items] >= min_item)
        if new.sum() == keep.sum():
            break
        keep, rounds = new, rounds + 1
        if not iterate:
            break
    out = df.loc[keep].reset_index(drop=True)
    stats = {
        "min_user": int(min_user),
        "min_item": int(min_item),
        "iterate": bool(iterate),
        "rounds": rounds,
        "removed_users": n_users - int(np.unique(users[keep]).size),
        "removed_items": n_items - int(np.unique(items[keep]).size),
        "removed_ratings": int(len(df) - keep.sum()),
    }
    out.attrs["filter"] = stats
    log.info(
        "min-count filter (users >= %d, items >= %d, %s): removed %d users, %d items, "
        "%d of %d ratings in %d round(s)",
        min_user,
        min_item,
        "iterated to a fixed point" if iterate else "single pass",
        stats["removed_users"],
        stats["removed_items"],
        stats["removed_ratings"],
        len(df),
        rounds,
    )
    return out


def _codes(ids: pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(ids)
    return codes, len(uniques)
