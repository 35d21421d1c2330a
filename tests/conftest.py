"""Shared fixtures: compose the real Hydra configs with tiny overrides (lightning-hydra-template style)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from xfvae import CONF_DIR, REPO_ROOT

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def make_cfg(tmp_path: Path, overrides: list[str] | None = None) -> DictConfig:
    """The real train config with quiet, fast defaults and outputs under tmp_path."""
    GlobalHydra.instance().clear()
    base = ["logger=none", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=base + list(overrides or []), return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, out: Path | None = None) -> DictConfig:
        return make_cfg(out or tmp_path, list(overrides))

    return factory


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The data cache `make data` fills (XFVAE_DATA_DIR overrides), shared by every test."""
    return os.environ.get("XFVAE_DATA_DIR", str(REPO_ROOT / "data"))
