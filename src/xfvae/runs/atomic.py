"""Atomic result files: write to a temp file in the same folder, then rename, so a killed run never
leaves half a file behind. JSON is strict (RFC 8259): NaN and infinities are written as null."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Temp files of the writers below: ``.<target name>.<random>.tmp`` beside the target.
TEMP_GLOB = ".*.tmp"


def remove_orphan_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed writer left in ``folder`` (call only while no writer of
    this folder runs, e.g. holding its run directory's lock); returns what was removed."""
    removed = []
    for tmp in sorted(Path(folder).glob(TEMP_GLOB)):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual umask-based mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf, numpy's included) replaced by None."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON that strict parsers (jq, node, browsers) accept: no NaN/Infinity tokens."""
    return json.dumps(strict_json(obj), allow_nan=False, default=str, **kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_strict(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: str | os.PathLike, df: pd.DataFrame, **kwargs: Any) -> Path:
    return atomic_write_text(path, df.to_csv(index=False, lineterminator="\n", **kwargs))
