"""Collect training run directories into one tidy table (one row per run), the single input of every
statistic, table and figure of the report.

A run is any directory holding ``.hydra/config.yaml`` (single runs and Hydra multirun jobs alike). A
run without ``metrics.json`` is kept with ``status = "incomplete"`` (crashed or still running), one
whose ``metrics.json`` belongs to another configuration than the config beside it (same
:func:`xfvae.runs.provenance.config_hash`) with ``status = "stale"``, and one whose files cannot be read
with ``status = "invalid"``, one whose ``run.json`` does not say ``complete`` (killed after writing
``metrics.json``, before its last file) with ``status = "incomplete"``, and a tuning run (``evaluation.test=false``: it never evaluated the test
split) with ``status = "validation_only"``, so nothing disappears or passes as new silently. The hash
is checked for runs of the current scheme (``identity-v2``: the config and the data fingerprint
recorded in metrics.json) and of ``identity-v1`` (the config alone); runs written before
``config_hash_scheme`` existed are not checked.

``run_dir`` is written relative to the folder of the results CSV, so the CSV and the runs can move
together; :func:`resolve_run_dir` turns it back into a path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from xfvae.report.names import SCORE_KEYS
from xfvae.runs.atomic import atomic_write_csv
from xfvae.runs.provenance import CONFIG_HASH_SCHEME, config_hash

ID_COLUMNS = ["run_dir", "status", "experiment", "model", "data", "seed", "setting", "train_frac"]
METRIC_KEYS = [
    *SCORE_KEYS,
    "test/protocol",
    "test/n_users_ranked",
    "test/n_cold_pairs",
    "best_epoch",
    "seconds_per_epoch",
    "peak_rss_mb",
    "n_params",
    "machine",
]
TAIL_COLUMNS = ["epochs", "train_seconds", "git_commit", "config_hash", "finished_at", "error"]
#: Keys of metrics.json that are run identity, not metrics (they fill the ID columns).
_ID_KEYS = {"model", "data", "seed", "experiment", "setting"}
DEDUP_KEYS = ["experiment", "model", "data", "seed", "setting"]


class ReportWarning(UserWarning):
    """Something in the results the reader should know about (dropped blocks, duplicates...)."""


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds ``.hydra/config.yaml``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such directory (pass the folder holding the runs, e.g. logs/train)"
        )
    found = {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    return sorted(found, key=lambda p: str(p))


def _config_value(cfg, key: str):
    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception:  # an interpolation that needs Hydra's runtime resolvers
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


#: Earlier hash schemes that can still be checked: identity-v1 hashed the config alone.
_V1_SCHEME = "identity-v1"


def _config_hash(cfg, data_fingerprint=None) -> str | None:
    try:
        return config_hash(cfg, data_fingerprint)
    except Exception:  # e.g. an interpolation to a key the config lacks
        return None


def read_run(run_dir: str | os.PathLike) -> dict:
    """One tidy row for ``run_dir``: identity from metrics.json, falling back to the config."""
    run_dir = Path(run_dir)
    row: dict = {"status": "complete", "error": None}
    config_path = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(config_path)
    except Exception as exc:
        cfg = OmegaConf.create({})
        row.update(status="invalid", error=f"{config_path}: unreadable config ({exc})")
    row.update(
        experiment=_config_value(cfg, "experiment"),
        model=_config_value(cfg, "model.name"),
        data=_config_value(cfg, "data.name"),
        seed=_config_value(cfg, "seed"),
        setting=_config_value(cfg, "setting"),
        train_frac=_config_value(cfg, "data.split.train_frac"),
        config_hash=_config_hash(cfg),
    )
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        if row["status"] == "complete":
            row.update(status="incomplete", error=_incomplete_reason(run_dir, metrics_path))
        return row
    try:
        metrics = json.loads(metrics_path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("top level is not a JSON object")
    except Exception as exc:
        row.update(status="invalid", error=f"{metrics_path}: unreadable ({exc})")
        return row
    scheme = metrics.get("config_hash_scheme")
    if scheme == CONFIG_HASH_SCHEME:
        row["config_hash"] = _config_hash(cfg, metrics.get("data_fingerprint"))
    if (
        scheme in (CONFIG_HASH_SCHEME, _V1_SCHEME)
        and metrics.get("config_hash") != row["config_hash"]
    ):
        row.update(
            status="stale",
            error=(
                f"{metrics_path}: belongs to another configuration (config_hash "
                f"{metrics.get('config_hash')}) than {config_path} ({row['config_hash']}); "
                "re-run that configuration or remove the directory"
            ),
        )
        return row
    state = _run_state(run_dir)
    if state is not None and state.get("status") != "complete":
        row.update(
            status="incomplete",
            error=f"{run_dir / 'run.json'}: status {state.get('status')!r}; its metrics.json is "
            "not final (re-run the same command to finish the run)",
        )
        return row
    if _config_value(cfg, "evaluation.test") is False:  # a tuning trial: never saw the test split
        row.update(
            status="validation_only",
            error=(
                f"{run_dir}: evaluation.test=false (a tuning trial or re-run): validation metrics "
                "only, no test result"
            ),
        )
    for key, value in metrics.items():
        if key in _ID_KEYS:
            if value is not None:
                row[key] = value
        elif not isinstance(value, dict | list):
            row[key] = value
    mtime = metrics_path.stat().st_mtime
    row["finished_at"] = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).isoformat(
        timespec="seconds"
    )
    return row


def _run_state(run_dir: Path) -> dict | None:
    """``run.json`` (None when absent or unreadable: runs written before it existed)."""
    try:
        state = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _incomplete_reason(run_dir: Path, metrics_path: Path) -> str:
    """Why a run has no metrics: its run.json's status and error when it has one."""
    state = _run_state(run_dir)
    if state is None:
        return f"{metrics_path}: missing (crashed or still running)"
    reason = f"{metrics_path}: missing; run.json status {state.get('status')!r}"
    return reason + (f": {state['error']}" if state.get("error") else "")


def collect(roots, relative_to: str | os.PathLike | None = None) -> pd.DataFrame:
    """Tidy table of every run under ``roots``; ``run_dir`` relative to ``relative_to`` when given."""
    roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    rows = []
    for root in roots:
        for run_dir in find_run_dirs(root):
            row = read_run(run_dir)
            row["run_dir"] = _relative(run_dir, relative_to)
            rows.append(row)
    df = pd.DataFrame(rows)
    extra = sorted(c for c in df.columns if c not in ID_COLUMNS + METRIC_KEYS + TAIL_COLUMNS)
    columns = ID_COLUMNS + METRIC_KEYS + extra + TAIL_COLUMNS
    return df.reindex(columns=columns)


def _relative(path: Path, base) -> str:
    if base is None:
        return str(path)
    try:
        return os.path.relpath(Path(path).resolve(), Path(base).resolve())
    except ValueError:  # different drives on Windows
        return str(Path(path).resolve())


def write_results(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    return atomic_write_csv(out, df)


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results CSV written by :func:`collect` (or any CSV with model and data columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such results file (write one with `python -m xfvae.report collect`)"
        )
    df = pd.read_csv(path)
    missing = [c for c in ("model", "data") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; is this a results CSV from `collect`?"
        )
    if "status" not in df.columns:
        df["status"] = "complete"
    for col in ("experiment", "setting", "seed", "run_dir"):
        if col not in df.columns:
            df[col] = None
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.notna().any() and (seeds.dropna() % 1 == 0).all():
        df["seed"] = seeds.astype("Int64")  # "seed=0", not "seed=0.0", when a crashed run has none
    df.attrs["base_dir"] = str(path.parent)
    return df


def resolve_run_dir(run_dir: str, base_dir: str | os.PathLike | None) -> Path:
    p = Path(run_dir)
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def select(
    df: pd.DataFrame,
    experiment: str | None = None,
    data=None,
    models=None,
) -> pd.DataFrame:
    """Complete runs of one experiment (all when None), optionally some data sets / models; when a
    configuration was run twice, the run that finished last is kept (with a warning). Two different
    configurations under one (experiment, model, data, seed, setting) are an error: which one a
    table or test should use cannot be guessed."""
    out = df[df["status"].fillna("complete") == "complete"]
    experiments = out["experiment"].astype("string").fillna("")
    if experiment is None and experiments.nunique() > 1:
        raise ValueError(
            f"the results mix experiments {sorted(experiments.unique())}; pick one (--experiment NAME, "
            f"'' for runs without one)"
        )
    if experiment is not None:
        out = out[experiments == experiment]
    if data:
        out = out[out["data"].isin(list(data))]
    if models:
        out = out[out["model"].isin(list(models))]
    if out.empty:
        states = df["status"].fillna("complete").value_counts().to_dict()
        raise ValueError(
            f"no complete runs for experiment={experiment!r} data={data} models={models}; "
            f"experiments present: {sorted(experiments.unique())}; runs by status: {states} "
            "(validation_only runs are tuning trials; train runs or a make reproduce-* target "
            "produce test results)"
        )
    if "finished_at" in out:
        out = out.sort_values("finished_at", kind="stable", na_position="first")
    keys = out[DEDUP_KEYS].astype("string").fillna("<none>")
    _refuse_ambiguous_names(out, keys)
    dup = keys.duplicated(keep="last").to_numpy()
    if dup.any():
        shown = keys[dup].drop_duplicates().head(5).to_dict("records")
        warnings.warn(
            f"{int(dup.sum())} duplicate run(s) dropped, keeping the latest of each configuration: "
            f"{shown}{' ...' if dup.sum() > 5 else ''}",
            ReportWarning,
            stacklevel=2,
        )
    out = out[~dup].copy()
    out.attrs = dict(df.attrs)
    return out


def _refuse_ambiguous_names(runs: pd.DataFrame, keys: pd.DataFrame) -> None:
    """Raise when one (experiment, model, data, seed, setting) holds runs of different
    configurations (different ``config_hash``), naming both configurations and their runs."""
    if "config_hash" not in runs:
        return
    hashes = runs["config_hash"].astype("string")
    clashes = []
    for key, idx in keys.groupby(list(keys.columns), sort=True).groups.items():
        distinct = hashes.loc[idx].dropna().unique()
        if len(idx) > 1 and len(distinct) > 1:
            named = dict(zip(DEDUP_KEYS, key, strict=True))
            runs_by_hash = "; ".join(
                f"config_hash {h}: {runs.loc[idx][hashes.loc[idx] == h]['run_dir'].tolist()}"
                for h in distinct
            )
            clashes.append(f"{named}: {runs_by_hash}")
    if clashes:
        raise ValueError(
            f"{len(clashes)} model name(s) stand for more than one configuration, so the results "
            f"cannot say which one a score belongs to: {' | '.join(clashes[:5])}"
            f"{' ...' if len(clashes) > 5 else ''}. Give each configuration its own model name "
            "or setting, or remove the runs you do not mean from the results CSV"
        )
