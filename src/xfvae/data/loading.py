"""From a data set's name to its ratings: raw file -> parser and validation -> filters.

This is all the datamodule calls. Options override fields of the data set's spec, so a config
can say ``options: {duplicates: mean, min_user_ratings: 5, version: 2018}``; unknown options are
errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xfvae.data.download import fetch
from xfvae.data.errors import DataFormatError
from xfvae.data.filters import min_count_filter
from xfvae.data.parsers import parse_ratings
from xfvae.data.registry import RATING_COLUMNS, DatasetSpec, get_spec
from xfvae.data.synthetic import make_synthetic

log = logging.getLogger(__name__)

SPEC_OPTIONS = (
    "duplicates",
    "min_user_ratings",
    "min_item_ratings",
    "filter_iterate",
    "rating_min",
    "rating_max",
)
#: Options of load_ratings for a downloaded data set: spec overrides, the Amazon dump version, and
#: ``path`` to a local raw file (the zip, or the extracted ratings file) that bypasses download.
OPTIONS = (*SPEC_OPTIONS, "version", "path")
SYNTHETIC_OPTIONS = tuple(
    p for p in inspect.signature(make_synthetic).parameters if p != "with_truth"
)


def is_synthetic(name: str) -> bool:
    """``synthetic`` and its named shapes (``synthetic-dense``, ``synthetic-sparse``, ...)."""
    return name == "synthetic" or name.startswith("synthetic-")


def load_ratings(name: str, data_dir: str | os.PathLike, **options: Any) -> pd.DataFrame:
    """The full data set ``name`` (columns user, item, rating, timestamp; source order)."""
    if name == "csv":
        raise ValueError(
            "data set 'csv' is a user-supplied split: call load_csv_split(train, val, test) "
            "(on the command line: data=csv data.train=PATH data.val=PATH data.test=PATH)"
        )
    if is_synthetic(name):
        _check_options(name, options, SYNTHETIC_OPTIONS)
        return make_synthetic(**options)
    spec, path = _spec_with_options(name, options)
    raw = Path(path) if path is not None else fetch(spec, data_dir)
    fmt, member, columns = _format_of(spec, raw)
    df = parse_ratings(
        raw,
        fmt,
        member=member,
        columns=columns,
        rating_min=spec.rating_min,
        rating_max=spec.rating_max,
        duplicates=spec.duplicates,
        key=None if path is None else "data.options.path",
    )
    if spec.min_user_ratings > 1 or spec.min_item_ratings > 1:
        df = min_count_filter(
            df, spec.min_user_ratings, spec.min_item_ratings, iterate=spec.filter_iterate
        )
    df.attrs.update(dataset=name, source=str(raw))
    return df


def rating_scale(name: str, **options: Any) -> tuple[float, float]:
    """(min, max) of the ratings of data set ``name`` under ``options``."""
    if name == "csv" or is_synthetic(name):
        defaults = inspect.signature(make_synthetic).parameters
        lo = options.get("rating_min", defaults["rating_min"].default)
        hi = options.get("rating_max", defaults["rating_max"].default)
        return float(lo), float(hi)
    spec, _ = _spec_with_options(name, options)
    return float(spec.rating_min), float(spec.rating_max)


def load_csv_split(
    train: str | os.PathLike,
    val: str | os.PathLike,
    test: str | os.PathLike,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    duplicates: str = "error",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A user-supplied split, each file validated; a (user, item) pair in two files is an error."""
    paths = {"train": train, "val": val, "test": test}
    absent = [k for k, p in paths.items() if p in (None, "", "???")]
    if absent:
        raise ValueError(
            f"the csv data set needs three files; missing {', '.join(absent)} "
            "(data=csv data.train=PATH data.val=PATH data.test=PATH)"
        )
    frames = [
        parse_ratings(
            p,
            "csv",
            rating_min=rating_min,
            rating_max=rating_max,
            duplicates=duplicates,
            line_index=True,
            key=f"data.{name}",
        )
        for name, p in paths.items()
    ]
    frames = _common_id_types(frames)
    _cross_file_duplicates(frames, [str(p) for p in paths.values()])
    return tuple(f.reset_index(drop=True) for f in frames)  # type: ignore[return-value]


# -- helpers ------------------------------------------------------------------------------------
def _check_options(name: str, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for data set {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )


def _spec_with_options(name: str, options: dict) -> tuple[DatasetSpec, str | None]:
    _check_options(name, options, OPTIONS)
    spec = get_spec(name, options.get("version"))
    overrides = {k: options[k] for k in SPEC_OPTIONS if k in options}
    return dataclasses.replace(spec, **overrides), options.get("path")


def _format_of(spec: DatasetSpec, raw: Path) -> tuple[str, str | None, tuple[str, ...]]:
    """Parser format, archive member and field order of a raw file of ``spec``."""
    fb = spec.fallback
    if fb is not None and raw.suffix == Path(fb.filename).suffix:
        return fb.format, None, RATING_COLUMNS
    if spec.format is None:
        raise ValueError(f"data set {spec.name!r} has no file format")
    member = spec.member if spec.member and zipfile.is_zipfile(raw) else None
    return spec.format, member, spec.columns


def _common_id_types(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Ids numeric in one file and text in another become text everywhere (else they never match)."""
    for col in ("user", "item"):
        kinds = {pd.api.types.is_integer_dtype(f[col].dtype) for f in frames}
        if len(kinds) > 1:
            log.info("csv split: %s ids are numeric in some files only; reading all as text", col)
            frames = [f.assign(**{col: f[col].astype(str)}) for f in frames]
    return frames


def _cross_file_duplicates(frames: list[pd.DataFrame], labels: list[str]) -> None:
    both = pd.concat([f[["user", "item"]] for f in frames], ignore_index=True)
    dup = both.duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    file_of = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    line_of = np.concatenate([f.index.to_numpy() for f in frames])
    pos = int(np.argmax(dup))
    u, i = both["user"].iat[pos], both["item"].iat[pos]
    first = int(np.argmax(((both["user"] == u) & (both["item"] == i)).to_numpy()))
    raise DataFormatError(
        labels[file_of[pos]],
        int(line_of[pos]),
        f"user {str(u)!r} rates item {str(i)!r} again (already on line {line_of[first]} of "
        f"{labels[file_of[first]]})",
        "A (user, item) pair may be in only one of train/val/test: remove one of the lines",
    )
