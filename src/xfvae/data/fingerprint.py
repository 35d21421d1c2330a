"""What a run's data files hold: size and sha256 of every file the datamodule will read.

A run's identity (:func:`xfvae.runs.provenance.config_hash`) covers these, so a data file replaced in
place (a new ``tr.csv``, a re-downloaded raw file) makes a different configuration: the run
directory of the old data refuses the run instead of skipping it as complete. Hashes are cached in
``<data_dir>/.fingerprints.json`` by path, size, inode and modification time, so a large file is
hashed once, not at every start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xfvae.data.parsers import check_ratings_file
from xfvae.runs.atomic import atomic_write_json

log = logging.getLogger(__name__)

CACHE_FILE = ".fingerprints.json"
CSV_ROLES = ("train", "val", "test")


def data_files(data_cfg: Mapping[str, Any]) -> dict[str, Path]:
    """The files the datamodule of ``data_cfg`` (the ``data`` config group) reads, by role.

    ``csv``: its train/val/test files; synthetic data sets: none; a named data set: the local copy
    (``options.path``) or the cached raw file (downloaded first when absent, as loading would).
    """
    from xfvae.data.download import fetch
    from xfvae.data.loading import _spec_with_options, is_synthetic

    name = str(data_cfg.get("name"))
    if name == "csv":
        return {r: Path(str(data_cfg[r])) for r in CSV_ROLES if data_cfg.get(r) not in (None, "")}
    if is_synthetic(name):
        return {}
    options = dict(data_cfg.get("options") or {})
    spec, path = _spec_with_options(name, options)
    return {"raw": Path(path) if path is not None else fetch(spec, data_cfg["data_dir"])}


def data_fingerprint(data_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{role: {"size": bytes, "sha256": hex}}`` of :func:`data_files` (empty for generated data).

    A path that is not a readable regular file raises the data layer's error before anything runs.
    """
    files = data_files(data_cfg)
    if not files:
        return {}
    cache_path = Path(str(data_cfg.get("data_dir") or ".")) / CACHE_FILE
    cache = _read_cache(cache_path)
    out, changed = {}, False
    for role, path in files.items():
        key = f"data.{role}" if role in CSV_ROLES else "data.options.path"
        check_ratings_file(path, key)
        st = path.stat()
        entry_key = str(path.resolve())
        stamp = [st.st_size, st.st_ino, st.st_mtime_ns]
        entry = cache.get(entry_key)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            from xfvae.data.download import file_hashes

            entry = {"stamp": stamp, "sha256": file_hashes(path)[0]}
            cache[entry_key], changed = entry, True
        out[role] = {"size": st.st_size, "sha256": entry["sha256"]}
    if changed:
        try:
            atomic_write_json(cache_path, cache)
        except OSError as exc:  # a read-only data folder: hash again next time
            log.debug("cannot write %s (%s); file hashes not cached", cache_path, exc)
    return out


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
