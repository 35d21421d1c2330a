"""A run killed at each of its writes resumes to the result of an uninterrupted run (issue 20).

The atomic writer (:mod:`xfvae.runs.atomic`) is made to die at its n-th rename, for every n of a
small MF run: the process stops there as a kill -9 would (its temp file left behind, nothing
written after), then the same run is started again. Each time: no half file at any moment, no
orphan temp file after the resume, and the final metrics and history equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import xfvae.runs.atomic as atomic
from tests.test_rundir import TINY as RUNDIR_TINY
from xfvae.train import train

TINY = [*RUNDIR_TINY, "model.patience=100"]  # MF, 60 x 40 synthetic ratings, 3 epochs
SAME = ["val/rmse", "test/rmse", "test/ndcg@20", "best_epoch", "epochs", "config_hash"]
EXACT = ["epoch", "train_loss", "val_rmse", "test_rmse"]


class Killed(BaseException):
    """The process died (not an Exception: nothing should handle it)."""


class RenameFault:
    """``os.replace`` of the atomic writer that dies at call ``at`` (and stays dead after)."""

    def __init__(self, at: int | None):
        self.at, self.calls, self.dead = at, 0, False
        self.real = os.replace

    def __call__(self, src, dst):
        ours = Path(src).name.startswith(".") and str(src).endswith(".tmp")
        if not ours:
            return self.real(src, dst)
        self.calls += 1
        if self.dead or self.calls == self.at:
            self.dead = True
            shutil.copy(src, str(src)[: -len(".tmp")] + "k.tmp")  # what the kill leaves behind
            raise Killed(f"killed at rename {self.calls} ({Path(dst).name})")
        return self.real(src, dst)


def _no_half_file(run_dir: Path) -> None:
    for p in run_dir.rglob("*.json"):
        json.loads(p.read_text())
    for p in run_dir.rglob("*.csv"):
        pd.read_csv(p)


def _run(cfg_factory, out: Path, extra: list[str], monkeypatch, at: int | None):
    fault = RenameFault(at)
    monkeypatch.setattr(atomic.os, "replace", fault)
    try:
        return train(cfg_factory(*TINY, *extra, out=out)), fault
    finally:
        monkeypatch.setattr(atomic.os, "replace", fault.real)


def _kill_at_each_write(tmp_path, cfg_factory, monkeypatch, extra, pick) -> int:
    whole, count = _run(cfg_factory, tmp_path / "whole", extra, monkeypatch, None)
    n_writes = count.calls
    assert n_writes >= 8
    history = pd.read_csv(tmp_path / "whole" / "history.csv")[EXACT]
    for n in pick(n_writes):
        run_dir = tmp_path / f"killed-at-{n}"
        with pytest.raises(Killed):
            _run(cfg_factory, run_dir, extra, monkeypatch, n)
        assert list(run_dir.rglob("*.tmp")), "the kill should leave its temp file"
        _no_half_file(run_dir)
        resumed, _ = _run(cfg_factory, run_dir, extra, monkeypatch, None)
        assert not list(run_dir.rglob("*.tmp")), f"orphan temp files after resuming (n={n})"
        _no_half_file(run_dir)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
        for key in SAME:
            a, b = resumed[key], whole[key]
            assert a == b or (a != a and b != b), f"{key} differs after a kill at write {n}"
        again = pd.read_csv(run_dir / "history.csv")[EXACT]
        pd.testing.assert_frame_equal(again, history, check_exact=True)
        if (tmp_path / "whole" / "csv").is_dir():  # the CSV logger's curve is complete too
            pd.testing.assert_frame_equal(_val_curve(run_dir), _val_curve(tmp_path / "whole"))
    return n_writes


def _val_curve(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["epoch", "val/rmse"])
    return df[["epoch", "val/rmse"]].reset_index(drop=True)


def test_killed_at_every_write(tmp_path, cfg_factory, monkeypatch):
    n_writes = _kill_at_each_write(
        tmp_path, cfg_factory, monkeypatch, [], lambda n: range(1, n + 1)
    )
    print(f"{n_writes} writes, each killed in turn")


def test_killed_at_every_write_with_the_csv_logger(tmp_path, cfg_factory, monkeypatch):
    """Every write in turn, with the CSV logger's writes too (csv/metrics.csv at every row)."""
    _kill_at_each_write(
        tmp_path, cfg_factory, monkeypatch, ["logger=csv"], lambda n: range(1, n + 1)
    )
