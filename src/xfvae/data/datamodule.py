"""The shared LightningDataModule: raw ratings -> encoded split -> batches for any model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from xfvae.data.batches import (
    BlockPlan,
    EpochBatches,
    PairChunks,
    iter_blocks,
    iter_rows,
    iter_triples,
)
from xfvae.data.split import random_split
from xfvae.data.train_data import TrainData

log = logging.getLogger(__name__)


def _encode(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..n-1 in ascending id order (numeric order for numeric ids, else string order)."""
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


class RatingsDataModule(pl.LightningDataModule):
    """Loads a data set by name (or a user-supplied csv split), splits it and serves batches.

    Users and items are encoded over all splits; entities absent from training keep an index
    (their count is reported) and are handled by the evaluation's ``cold_start`` policy.
    """

    def __init__(
        self,
        name: str,
        data_dir: str,
        options: dict[str, Any] | None = None,
        split: dict[str, float] | None = None,
        seed: int = 0,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
    ):
        super().__init__()
        self.name, self.data_dir, self.seed = name, data_dir, int(seed)
        self.options = dict(options or {})
        self.split_cfg = dict(split or {"train_frac": 0.7, "val_share": 0.5})
        self.csv_paths = (train, val, test)
        self.frames: dict[str, pd.DataFrame] | None = None
        self.train_loader_factory = None
        self.test_curve = True  # trace test RMSE per epoch (train() sets it from the config)

    # -- loading and splitting ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.frames is not None:
            return
        from xfvae.data.loading import load_csv_split, load_ratings, rating_scale

        if self.name == "csv":
            train, val, test = load_csv_split(*self.csv_paths, **self.options)
            parts = {"train": train, "val": val, "test": test}
            self.rating_min = float(self.options.get("rating_min", 1.0))
            self.rating_max = float(self.options.get("rating_max", 5.0))
        else:
            df = load_ratings(self.name, self.data_dir, **self.options)
            idx = random_split(len(df), self.seed, **self.split_cfg)
            parts = {k: df.iloc[getattr(idx, k)] for k in ("train", "val", "test")}
            self.rating_min, self.rating_max = rating_scale(self.name, **self.options)
        all_df = pd.concat(parts.values(), ignore_index=True)
        u_codes, self.user_ids = _encode(all_df["user"])
        i_codes, self.item_ids = _encode(all_df["item"])
        bounds = np.cumsum([0] + [len(p) for p in parts.values()])
        self.frames = {}
        for (k, frame), lo, hi in zip(parts.items(), bounds[:-1], bounds[1:], strict=True):
            frame = frame[["user", "item", "rating"]].reset_index(drop=True)
            self.frames[k] = frame.assign(u=u_codes[lo:hi], i=i_codes[lo:hi])
        tr = self.frames["train"]
        self.train_data = TrainData(
            n_users=len(self.user_ids),
            n_items=len(self.item_ids),
            users=torch.tensor(tr["u"].to_numpy()),
            items=torch.tensor(tr["i"].to_numpy()),
            ratings=torch.tensor(tr["rating"].to_numpy(np.float32)),
            rating_min=self.rating_min,
            rating_max=self.rating_max,
        )
        log.info("%s: %s", self.name, self.summary())

    def summary(self) -> dict[str, int]:
        td = self.train_data
        out = {"users": td.n_users, "items": td.n_items}
        for k, f in self.frames.items():
            out[f"{k}_ratings"] = len(f)
        for k in ("val", "test"):
            f = self.frames[k]
            u, i = torch.tensor(f["u"].to_numpy()), torch.tensor(f["i"].to_numpy())
            cold = ~(td.user_seen[u] & td.item_seen[i]).numpy()
            out[f"{k}_cold_pairs"] = int(cold.sum())
        return out

    def split_frames(self) -> dict[str, pd.DataFrame]:
        """The three splits with original ids (columns user, item, rating)."""
        return {k: f[["user", "item", "rating"]] for k, f in self.frames.items()}

    def pairs(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = self.frames[part]
        return f["u"].to_numpy(), f["i"].to_numpy(), f["rating"].to_numpy(np.float32)

    # -- batches ------------------------------------------------------------------------------
    def configure_batches(
        self, kind: str, batch_size: int | Sequence[int], shuffle_blocks: bool = True
    ) -> None:
        """Choose the training batch shape a model asked for (see xfvae.models.base)."""
        td = self.train_data
        if kind == "triples":
            make = lambda g: iter_triples(td, int(batch_size), g)  # noqa: E731
            n = -(-td.n_ratings // int(batch_size))
        elif kind in ("user_rows", "item_rows"):
            make = lambda g: iter_rows(td, int(batch_size), g, kind == "item_rows")  # noqa: E731
            seen = td.item_seen if kind == "item_rows" else td.user_seen
            n = -(-int(seen.sum()) // int(batch_size))
        elif kind == "blocks":
            if isinstance(batch_size, int) or len(batch_size) != 2:
                raise ValueError(f"blocks need model.batch_size: [B_U, B_V], got {batch_size}")
            plan = BlockPlan(td, batch_size[0], batch_size[1], self.seed)
            make = lambda g: iter_blocks(plan, g, shuffle_blocks)  # noqa: E731
            n = plan.n_ub * plan.n_ib
        elif kind == "none":
            make, n = (lambda g: iter([{}])), 1
        else:
            raise ValueError(f"unknown batch kind {kind!r}; see xfvae.models.base.BATCH_KINDS")
        self.train_loader_factory = EpochBatches(make, n, self.seed)

    def train_dataloader(self) -> DataLoader:
        if self.train_loader_factory is None:
            raise RuntimeError("call configure_batches(model.batch_kind, ...) before training")
        if self.trainer is not None:  # batch order = f(seed, epoch), also when resuming
            # epochs processed so far: the epoch about to run, also while Lightning resumes from
            # an end-of-epoch checkpoint (where current_epoch is not yet advanced)
            progress = self.trainer.fit_loop.epoch_progress.current
            self.train_loader_factory.epoch_source = lambda: progress.processed
        return DataLoader(self.train_loader_factory, batch_size=None)

    def _pairs_loader(self, part: str, size: int = 65536, own_rng: bool = False) -> DataLoader:
        # Every iterator over a DataLoader draws a base seed from its generator, the global torch
        # RNG when it has none. The optional test loaders get their own generator: whether a run
        # traces or evaluates the test split must not change the random numbers training draws
        # (dropout, Gibbs sampling), or a tuning trial (no test) would not replay in its final run.
        gen = torch.Generator().manual_seed(self.seed) if own_rng else None
        return DataLoader(PairChunks(*self.pairs(part), size=size), batch_size=None, generator=gen)

    def val_dataloader(self) -> list[DataLoader]:
        # Index 0 selects the model (val/rmse); index 1 traces test RMSE per epoch (paper Fig. 4),
        # unless test_curve is off (tuning never touches the test split).
        loaders = [self._pairs_loader("val")]
        return loaders + [self._pairs_loader("test", own_rng=True)] if self.test_curve else loaders

    def test_dataloader(self) -> DataLoader:
        return self._pairs_loader("test", own_rng=True)
