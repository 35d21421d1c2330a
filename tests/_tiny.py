"""Tiny data and run helpers shared by the fault, ownership and fingerprint tests."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra


def write_split(folder: Path, n_users: int = 40, n_items: int = 15) -> dict[str, Path]:
    """A small deterministic train/val/test split as three csv files (header user,item,rating)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        (u, i, 1 + (u * 7 + i * 3) % 5)
        for u in range(n_users)
        for i in range(n_items)
        if (u + i) % 3
    ]
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    part = (df["user"] * 5 + df["item"]) % 10
    paths = {}
    for name, frame in {
        "train": df[part < 7],
        "val": df[part.isin([7, 8])],
        "test": df[part == 9],
    }.items():
        paths[name] = folder / f"{name[:2]}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


def csv_args(paths: dict[str, Path]) -> list[str]:
    return ["model=mf", "data=csv"] + [f"data.{k}={v}" for k, v in paths.items()]


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def hydra_train(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``python -m xfvae.train ARGS`` in this process (Hydra's own entry point); its exit code."""
    from xfvae.train import main

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["xfvae.train", *args, "trainer.enable_progress_bar=false"])
    try:
        main()
    except SystemExit as e:
        return 0 if e.code is None else (e.code if isinstance(e.code, int) else 1)
    finally:
        GlobalHydra.instance().clear()
    return 0
