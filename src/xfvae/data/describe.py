"""Counts of a data set beside the paper's Table 1, to check a download against what it used.

    python -m xfvae.data.describe data=ml-1m [paths.data_dir=DIR] [data.options.version=2018]

Arguments are Hydra overrides of ``conf/train.yaml``. Where that config (or ``conf/data/<name>``)
is absent, a small parser accepts ``data=``, ``paths.data_dir=``, ``data.data_dir=``,
``data.options.KEY=VALUE`` and ``data.train|val|test=`` instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import yaml

from xfvae import CONF_DIR, REPO_ROOT
from xfvae.data.loading import is_synthetic, load_csv_split, load_ratings
from xfvae.data.registry import NAMES, get_spec


def counts(df: pd.DataFrame) -> dict[str, float]:
    users, items, ratings = df["user"].nunique(), df["item"].nunique(), len(df)
    return {
        "users": users,
        "items": items,
        "ratings": ratings,
        "density": ratings / (users * items),
    }


def table(name: str, df: pd.DataFrame, options: dict[str, Any] | None = None) -> str:
    """An aligned table of this copy's counts and the paper's Table 1 figures (where given)."""
    here = counts(df)
    paper = None
    if name != "csv" and not is_synthetic(name):
        paper = get_spec(name, (options or {}).get("version")).paper
    ref = (
        {"users": paper.users, "items": paper.items, "ratings": paper.ratings}
        if paper is not None
        else {}
    )
    if ref:
        ref["density"] = ref["ratings"] / (ref["users"] * ref["items"])

    def fmt(key: str, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.4%}" if key == "density" else f"{int(value):,}"

    rows = [("", "this copy", "paper Table 1")]
    rows += [(k, fmt(k, here[k]), fmt(k, ref.get(k))) for k in here]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    return "\n".join([name, *lines])


def _from_hydra(argv: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(argv))
    options = cfg.data.get("options")
    out = {
        "name": cfg.data.name,
        "data_dir": str(cfg.data.data_dir),
        "options": {} if options is None else OmegaConf.to_container(options, resolve=True),
    }
    for key in ("train", "val", "test"):  # csv only; "???" when not given
        out[key] = OmegaConf.select(cfg, f"data.{key}", throw_on_missing=False)
    return out


def _from_argv(argv: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": None,
        "data_dir": os.environ.get("XFVAE_DATA_DIR", str(REPO_ROOT / "data")),
        "options": {},
    }
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"argument {arg!r} is not KEY=VALUE (e.g. data=ml-1m)")
        if key == "data":
            out["name"] = value
        elif key in ("paths.data_dir", "data.data_dir"):
            out["data_dir"] = value
        elif key.startswith("data.options."):
            out["options"][key.removeprefix("data.options.")] = yaml.safe_load(value)
        elif key in ("data.train", "data.val", "data.test"):
            out[key.removeprefix("data.")] = value
        else:
            raise SystemExit(
                f"unknown argument {key!r}; use data=NAME, paths.data_dir=DIR, "
                "data.options.KEY=VALUE, data.train|val|test=PATH"
            )
    return out


def _config(argv: Sequence[str]) -> dict[str, Any]:
    name = next((a.partition("=")[2] for a in argv if a.startswith("data=")), "ml-100k")
    if name not in NAMES and not is_synthetic(name):
        raise SystemExit(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
    if (CONF_DIR / "train.yaml").is_file() and (CONF_DIR / "data" / f"{name}.yaml").is_file():
        return _from_hydra(argv)
    cfg = _from_argv(argv)
    cfg["name"] = cfg["name"] or name
    return cfg


def main(argv: Sequence[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = _config(sys.argv[1:] if argv is None else argv)
    name, options = cfg["name"], dict(cfg["options"])
    if name == "csv":
        opts = {k: options[k] for k in ("rating_min", "rating_max", "duplicates") if k in options}
        parts = load_csv_split(cfg.get("train"), cfg.get("val"), cfg.get("test"), **opts)
        df = pd.concat(parts, ignore_index=True)
    else:
        df = load_ratings(name, cfg["data_dir"], **options)
    out = table(name, df, options)
    print(out)
    return out


if __name__ == "__main__":
    main()
