"""Training batches in the shapes documented in :mod:`xfvae.models.base`.

Each ``iter_*`` function yields the batches of one epoch; :class:`EpochBatches` wraps one of them
as an ``IterableDataset`` whose order is a pure function of (seed, epoch), so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from xfvae.data.train_data import TrainData

Batch = dict[str, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def iter_triples(data: TrainData, batch_size: int, g: torch.Generator) -> Iterator[Batch]:
    perm = torch.randperm(data.n_ratings, generator=g)
    for start in range(0, data.n_ratings, batch_size):
        idx = perm[start : start + batch_size]
        yield {"users": data.users[idx], "items": data.items[idx], "ratings": data.ratings[idx]}


def iter_rows(
    data: TrainData, batch_size: int, g: torch.Generator, transpose: bool
) -> Iterator[Batch]:
    """Shuffled rows of X (users) or X^T (items) that hold at least one training rating."""
    seen = data.item_seen if transpose else data.user_seen
    candidates = torch.nonzero(seen).squeeze(1)
    order = candidates[torch.randperm(candidates.numel(), generator=g)]
    for start in range(0, order.numel(), batch_size):
        idx = order[start : start + batch_size]
        yield {"index": idx, "rows": data.rows(idx, transpose=transpose)}


class BlockPlan:
    """Algorithm 1, step 3: user batches of size B_U and item batches of size B_V, drawn once per run.

    The training ratings are sorted by (user batch, item batch) once, so an epoch only slices them.
    """

    def __init__(self, data: TrainData, b_u: int, b_v: int, seed: int):
        g = torch.Generator().manual_seed(int(seed))
        self.user_perm = torch.randperm(data.n_users, generator=g)
        self.item_perm = torch.randperm(data.n_items, generator=g)
        self.b_u, self.b_v = int(b_u), int(b_v)
        self.n_ub = -(-data.n_users // self.b_u)
        self.n_ib = -(-data.n_items // self.b_v)
        pos_u = torch.empty_like(self.user_perm)
        pos_u[self.user_perm] = torch.arange(data.n_users)
        pos_i = torch.empty_like(self.item_perm)
        pos_i[self.item_perm] = torch.arange(data.n_items)
        pu, pi = pos_u[data.users], pos_i[data.items]
        block = (pu // self.b_u) * self.n_ib + pi // self.b_v
        order = torch.argsort(block, stable=True)
        self.local_u = (pu % self.b_u)[order]
        self.local_i = (pi % self.b_v)[order]
        self.ratings = data.ratings[order]
        self.bounds = torch.searchsorted(block[order], torch.arange(self.n_ub * self.n_ib + 1))

    def block(self, ub: int, ib: int) -> Batch:
        k = ub * self.n_ib + ib
        lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
        return {
            "users": self.user_perm[ub * self.b_u : (ub + 1) * self.b_u],
            "items": self.item_perm[ib * self.b_v : (ib + 1) * self.b_v],
            "obs_u": self.local_u[lo:hi],
            "obs_i": self.local_i[lo:hi],
            "ratings": self.ratings[lo:hi],
        }


def iter_blocks(plan: BlockPlan, g: torch.Generator, shuffle: bool) -> Iterator[Batch]:
    """Nested order (Algorithm 1, steps 7-9): all item batches of one user batch, then the next."""
    user_order = torch.randperm(plan.n_ub, generator=g) if shuffle else torch.arange(plan.n_ub)
    for ub in user_order.tolist():
        item_order = torch.randperm(plan.n_ib, generator=g) if shuffle else torch.arange(plan.n_ib)
        for ib in item_order.tolist():
            yield plan.block(ub, ib)


class EpochBatches(IterableDataset):
    """One pass = one epoch; ``make(generator)`` yields its batches, seeded by (seed, epoch).

    ``epoch_source`` (the trainer's current epoch, set by the datamodule) makes the order a
    function of the epoch number itself, so a run resumed at epoch k sees epoch k's batches.
    """

    def __init__(
        self, make: Callable[[torch.Generator], Iterator[Batch]], n_batches: int, seed: int
    ):
        super().__init__()
        self.make, self.n_batches, self.seed, self.epoch = make, int(n_batches), seed, 0
        self.epoch_source: Callable[[], int] | None = None

    def __len__(self) -> int:  # lets the progress bar show the epoch's length
        return self.n_batches

    def __iter__(self) -> Iterator[Batch]:
        if self.epoch_source is not None:
            self.epoch = self.epoch_source()
        g = epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        return self.make(g)


class PairChunks(IterableDataset):
    """Evaluation pairs (users, items, ratings) in fixed-size chunks, in order."""

    def __init__(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, size: int):
        super().__init__()
        self.users = torch.as_tensor(users, dtype=torch.long)
        self.items = torch.as_tensor(items, dtype=torch.long)
        self.ratings = torch.as_tensor(ratings, dtype=torch.float32)
        self.size = int(size)

    def __iter__(self) -> Iterator[Batch]:
        for s in range(0, self.users.numel(), self.size):
            sl = slice(s, s + self.size)
            yield {"users": self.users[sl], "items": self.items[sl], "ratings": self.ratings[sl]}
