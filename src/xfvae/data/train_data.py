"""What a model sees of the training split: encoded (user, item, rating) triples and their shape.

Users and items are encoded to ``0..n-1`` over *all* splits, ordered by original id (numerically
when every id is a number), so an entity that only appears in validation/test still has an index;
``user_seen``/``item_seen`` tell which ones occur in training.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch


class TrainData:
    """Not a dataclass on purpose: Hydra would turn a dataclass kwarg into a config node."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        users: torch.Tensor,  # int64 [n], encoded user index of each training rating
        items: torch.Tensor,  # int64 [n]
        ratings: torch.Tensor,  # float32 [n]
        rating_min: float,
        rating_max: float,
    ):
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.users, self.items, self.ratings = users.long(), items.long(), ratings.float()
        self.rating_min, self.rating_max = float(rating_min), float(rating_max)

    @property
    def n_ratings(self) -> int:
        return int(self.ratings.numel())

    @cached_property
    def global_mean(self) -> float:
        return float(self.ratings.double().mean()) if self.n_ratings else 0.0

    @cached_property
    def density(self) -> float:
        return self.n_ratings / max(1, self.n_users * self.n_items)

    @cached_property
    def user_seen(self) -> torch.Tensor:
        return torch.bincount(self.users, minlength=self.n_users) > 0

    @cached_property
    def item_seen(self) -> torch.Tensor:
        return torch.bincount(self.items, minlength=self.n_items) > 0

    @cached_property
    def csr(self) -> sp.csr_matrix:
        """Training matrix X (n_users x n_items), float32, rows sorted by column."""
        m = sp.csr_matrix(
            (self.ratings.numpy(), (self.users.numpy(), self.items.numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sort_indices()
        return m

    @cached_property
    def csr_t(self) -> sp.csr_matrix:
        """X^T (n_items x n_users) in CSR form: the item rows."""
        m = self.csr.T.tocsr()
        m.sort_indices()
        return m

    def rows(self, index: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """Sparse CSR tensor of the given user rows of X (or item rows of X^T when ``transpose``)."""
        return csr_rows_to_torch(self.csr_t if transpose else self.csr, index)


def csr_rows_to_torch(m: sp.csr_matrix, index: torch.Tensor) -> torch.Tensor:
    sub = m[index.numpy()]
    return torch.sparse_csr_tensor(
        torch.from_numpy(sub.indptr.astype(np.int64)),
        torch.from_numpy(sub.indices.astype(np.int64)),
        torch.from_numpy(sub.data),
        size=sub.shape,
    )
