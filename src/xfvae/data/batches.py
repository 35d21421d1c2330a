"""Training batches in the shapes documented in :mod:`xfvae.models.base`.

Each ``iter_*`` function yields the batches of one epoch; :class:`EpochBatches` wraps one of them
as an ``IterableDataset`` whose order is a pure function of (seed, epoch), so runs are reproducible.

The cross-feedback VAE's blocks (Algorithm 1) come from a :class:`BlockPlan` built once per run:
it holds, as flat arrays, the block ratings and the sparse rows of every user batch and item batch
(with their transposes, for the backward pass). A :class:`Block` is a pair of batch indices into
the plan; moving it to a device copies the plan there once (cached), so a training step copies
nothing and reads no size from device data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
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


# ----- sparse rows of a batch --------------------------------------------------------------------
@dataclass(frozen=True)
class RowSlice:
    """The observed entries of a batch of rows, flattened in CSR order: what the sparse paths need.

    The transposed fields (``ucols`` ... ``t_offsets``) are optional: with them, the gradient of a
    bag sum over the rows is itself a bag sum (a gather) over the distinct columns, instead of a
    scatter into a table of all N columns.
    """

    n_rows: int
    # positions are int64, or int32 in a BlockPlan (same dtype for all of them); ucols is int64
    cols: Tensor  # [nnz], column of each entry
    vals: Tensor  # float32 [nnz], rating of each entry
    offsets: Tensor  # [n_rows], start of each row in cols (EmbeddingBag offsets)
    seg: Tensor  # [nnz], row (0..n_rows-1) of each entry
    ucols: Tensor | None = None  # int64 [U], the distinct columns of the batch, ascending
    inv: Tensor | None = None  # [nnz], position of each entry's column in ucols
    t_seg: Tensor | None = None  # [nnz], seg of the entries ordered by (column, row)
    t_vals: Tensor | None = None  # float32 [nnz], vals in that order
    t_offsets: Tensor | None = None  # [U], start of each distinct column in that order
    # structures derived from the above by the model (e.g. attention's sparsity pattern), kept
    # with the slice: the plan hands out the same RowSlice for a batch every epoch
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def has_transpose(self) -> bool:
        return self.ucols is not None


def csr_batch_arrays(csr: sp.csr_matrix, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The RowSlice fields (numpy, with transposes) of ``rows`` of a CSR matrix with sorted columns."""
    rows = np.asarray(rows, dtype=np.int64)
    indptr = csr.indptr.astype(np.int64)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    offsets = np.cumsum(lengths) - lengths
    seg = np.repeat(np.arange(rows.size, dtype=np.int64), lengths)
    pos = np.repeat(starts - offsets, lengths) + np.arange(seg.size, dtype=np.int64)
    cols = csr.indices[pos].astype(np.int64)
    vals = csr.data[pos].astype(np.float32)
    order = np.argsort(cols, kind="stable")  # by column, rows ascending within a column
    sorted_cols = cols[order]
    first = np.r_[True, sorted_cols[1:] != sorted_cols[:-1]] if cols.size else np.zeros(0, bool)
    run = np.cumsum(first) - 1  # distinct-column index of each sorted entry
    inv = np.empty_like(cols)
    inv[order] = run
    return {
        "cols": cols,
        "vals": vals,
        "offsets": offsets.astype(np.int64),
        "seg": seg,
        "ucols": sorted_cols[first],
        "inv": inv,
        "t_seg": seg[order],
        "t_vals": vals[order],
        "t_offsets": np.flatnonzero(first).astype(np.int64),
    }


def csr_row_slice(csr: sp.csr_matrix, rows, device: torch.device | str | None = None) -> RowSlice:
    """A RowSlice with transposes for ``rows`` of ``csr`` (built on the host)."""
    arr = csr_batch_arrays(csr, np.asarray(rows))
    return RowSlice(
        len(arr["offsets"]), **{k: torch.from_numpy(v).to(device) for k, v in arr.items()}
    )


_PER_ENTRY = ("cols", "vals", "seg", "inv", "t_seg", "t_vals")
_POSITIONS = ("cols", "seg", "inv", "t_seg", "offsets", "t_offsets")


class SideBatches:
    """The rows of every batch of one side (user batches of X, or item batches of X^T), as flat
    arrays sliced by host-side bounds: ``batch(k)`` is a RowSlice without any computation."""

    def __init__(self, csr: sp.csr_matrix, perm: Tensor, size: int):
        self.size = int(size)
        perm_np = perm.numpy()
        starts = range(0, len(perm_np), self.size)
        lengths = np.diff(csr.indptr)[perm_np]
        self.n_rows = [min(self.size, len(perm_np) - s) for s in starts]
        self.row_bounds = np.cumsum([0] + self.n_rows).tolist()
        self.entry_bounds = [0] + np.cumsum(lengths)[np.array(self.row_bounds[1:]) - 1].tolist()
        # 32-bit positions (all but ucols, which index tables and sparse gradients) halve the
        # plan's memory on large data (ML-20M: 20 M entries per side); the arrays are filled
        # batch by batch, so building them never holds more than one batch's temporaries
        small = self.entry_bounds[-1] < 2**31 and csr.shape[1] < 2**31
        pos = np.int32 if small else np.int64
        n, rows = self.entry_bounds[-1], len(perm_np)
        dtypes = {k: pos for k in _POSITIONS} | {"vals": np.float32, "t_vals": np.float32}
        sizes = {k: n for k in _PER_ENTRY} | {"offsets": rows}
        self.arrays = {k: np.empty(sizes[k], dtypes[k]) for k in sizes}
        ucols, t_offsets, self.col_bounds = [], [], [0]
        for k, s in enumerate(starts):
            part = csr_batch_arrays(csr, perm_np[s : s + self.size])
            e0, e1 = self.entry_bounds[k], self.entry_bounds[k + 1]
            for name in _PER_ENTRY:
                self.arrays[name][e0:e1] = part[name]
            self.arrays["offsets"][self.row_bounds[k] : self.row_bounds[k + 1]] = part["offsets"]
            ucols.append(part["ucols"])
            t_offsets.append(part["t_offsets"].astype(pos))
            self.col_bounds.append(self.col_bounds[-1] + len(part["ucols"]))
        self.arrays["ucols"] = np.concatenate(ucols)
        self.arrays["t_offsets"] = np.concatenate(t_offsets)
        self.arrays = {k: torch.from_numpy(v) for k, v in self.arrays.items()}
        self._slices: dict[int, RowSlice] = {}

    def to(self, device: torch.device) -> SideBatches:
        out = object.__new__(SideBatches)
        out.__dict__.update(self.__dict__)
        out.arrays = {k: v.to(device) for k, v in self.arrays.items()}
        out._slices = {}
        return out

    def batch(self, k: int) -> RowSlice:
        """Batch k's rows (views into the flat arrays; the same object on every call)."""
        if k not in self._slices:
            self._slices[k] = self._slice(k)
        return self._slices[k]

    def _slice(self, k: int) -> RowSlice:
        a = self.arrays
        e0, e1 = self.entry_bounds[k], self.entry_bounds[k + 1]
        c0, c1 = self.col_bounds[k], self.col_bounds[k + 1]
        r0, r1 = self.row_bounds[k], self.row_bounds[k + 1]
        fields = {n: a[n][e0:e1] for n in _PER_ENTRY}
        return RowSlice(
            self.n_rows[k],
            offsets=a["offsets"][r0:r1],
            ucols=a["ucols"][c0:c1],
            t_offsets=a["t_offsets"][c0:c1],
            **fields,
        )


# ----- Algorithm 1's blocks ----------------------------------------------------------------------
class BlockPlan:
    """Algorithm 1, step 3: user batches of size B_U and item batches of size B_V, drawn once per run.

    The training ratings are sorted by (user batch, item batch) once, so an epoch only slices them;
    the sparse rows of each user batch (of X) and item batch (of X^T) are also built once.
    ``on(device)`` gives the plan's copy on a device (made once, then cached).
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
        small = max(data.n_users, data.n_items) < 2**31  # 32-bit positions: half the memory
        pos = torch.int32 if small else torch.int64
        self.local_u = (pu % self.b_u)[order].to(pos)
        self.local_i = (pi % self.b_v)[order].to(pos)
        self.obs_users = data.users[order].to(pos)
        self.obs_items = data.items[order].to(pos)
        self.ratings = data.ratings[order]
        bounds = torch.searchsorted(block[order], torch.arange(self.n_ub * self.n_ib + 1))
        self.bounds = bounds.tolist()  # host ints: slicing a block reads nothing from the device
        self.user_rows = SideBatches(data.csr, self.user_perm, self.b_u)
        self.item_rows = SideBatches(data.csr_t, self.item_perm, self.b_v)
        self.device = torch.device("cpu")
        self._copies: dict[torch.device, BlockPlan] = {self.device: self}

    def on(self, device: torch.device | str) -> BlockPlan:
        """This plan with its arrays on ``device`` (copied on the first call only)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._copies:
            copy = object.__new__(BlockPlan)
            copy.__dict__.update(self.__dict__)
            for name in ("user_perm", "item_perm", "local_u", "local_i", "obs_users",
                         "obs_items", "ratings"):  # fmt: skip
                setattr(copy, name, getattr(self, name).to(device))
            copy.user_rows, copy.item_rows = self.user_rows.to(device), self.item_rows.to(device)
            copy.device = device
            self._copies[device] = copy
        return self._copies[device]

    def block(self, ub: int, ib: int) -> Block:
        return Block(self, int(ub), int(ib))


class Block:
    """One (user batch x item batch) block: read it as a dict (``users``, ``items``, ``obs_u``,
    ``obs_i``, ``ratings``, as documented in :mod:`xfvae.models.base`) or through the attributes,
    which add the batches' sparse rows (``user_rows``, ``item_rows``) and the global indices of the
    block's ratings (``obs_users``, ``obs_items``). ``to(device)`` is what the training loop calls:
    it re-points the block at the plan's copy on that device."""

    __slots__ = ("plan", "ub", "ib")
    KEYS = ("users", "items", "obs_u", "obs_i", "ratings")

    def __init__(self, plan: BlockPlan, ub: int, ib: int):
        self.plan, self.ub, self.ib = plan, ub, ib

    def to(self, device: torch.device | str, **_: object) -> Block:
        return Block(self.plan.on(device), self.ub, self.ib)

    @property
    def _span(self) -> slice:
        k = self.ub * self.plan.n_ib + self.ib
        return slice(self.plan.bounds[k], self.plan.bounds[k + 1])

    @property
    def users(self) -> Tensor:
        return self.plan.user_perm[self.ub * self.plan.b_u : (self.ub + 1) * self.plan.b_u]

    @property
    def items(self) -> Tensor:
        return self.plan.item_perm[self.ib * self.plan.b_v : (self.ib + 1) * self.plan.b_v]

    @property
    def obs_u(self) -> Tensor:
        return self.plan.local_u[self._span]

    @property
    def obs_i(self) -> Tensor:
        return self.plan.local_i[self._span]

    @property
    def obs_users(self) -> Tensor:
        return self.plan.obs_users[self._span]

    @property
    def obs_items(self) -> Tensor:
        return self.plan.obs_items[self._span]

    @property
    def ratings(self) -> Tensor:
        return self.plan.ratings[self._span]

    @property
    def user_rows(self) -> RowSlice:
        return self.plan.user_rows.batch(self.ub)

    @property
    def item_rows(self) -> RowSlice:
        return self.plan.item_rows.batch(self.ib)

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        return self.KEYS


def iter_blocks(plan: BlockPlan, g: torch.Generator, shuffle: bool) -> Iterator[Block]:
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
        self.users = torch.tensor(users, dtype=torch.long)  # a copy: pandas arrays may be read-only
        self.items = torch.tensor(items, dtype=torch.long)
        self.ratings = torch.tensor(ratings, dtype=torch.float32)
        self.size = int(size)

    def __iter__(self) -> Iterator[Batch]:
        for s in range(0, self.users.numel(), self.size):
            sl = slice(s, s + self.size)
            yield {"users": self.users[sl], "items": self.items[sl], "ratings": self.ratings[sl]}
