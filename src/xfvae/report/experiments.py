"""The experiments of this reproduction and where their committed results live.

An experiment is a ``conf/experiment/<name>.yaml`` (its ``experiment:`` value names the runs); its
make target writes ``results/<name>/<data sets>/results.csv`` plus the runs' provenance under
``runs/`` beside it. :data:`EXPERIMENTS` is the one list of names, used by the report CLI, the
``figures`` script and the results notebook.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from xfvae import CONF_DIR, REPO_ROOT
from xfvae.report.collect import DEDUP_KEYS, collect, load_results, resolve_run_dir

#: The paper's artefacts first, in the paper's order; other experiments follow alphabetically.
PAPER_ORDER = ("table3", "table4", "figure3", "figure4")
RESULTS_DIR = REPO_ROOT / "results"


def experiment_names(conf_dir: str | os.PathLike = CONF_DIR) -> list[str]:
    """The ``experiment:`` value of every ``conf/experiment/*.yaml`` (the file name without one)."""
    names = []
    for path in sorted(Path(conf_dir, "experiment").glob("*.yaml")):
        value = OmegaConf.load(path).get("experiment")
        names.append(str(value) if value else path.stem)
    rank = {n: i for i, n in enumerate(PAPER_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


EXPERIMENTS: tuple[str, ...] = tuple(experiment_names())


def reproduce_command(name: str, repo: str | os.PathLike = REPO_ROOT) -> str:
    """The command that produces experiment ``name``'s results: its make target, else its script."""
    makefile = Path(repo, "Makefile")
    if makefile.is_file() and re.search(
        rf"^reproduce-{re.escape(name)}:", makefile.read_text(), re.M
    ):
        return f"make reproduce-{name}"
    if Path(repo, "experiments", f"{name}.sh").is_file():
        return f"bash experiments/{name}.sh"
    return f"python -m xfvae.train -m experiment={name} model=<model> data=<data> seed=0,1,2"


def user_path(path: str | os.PathLike) -> Path:
    """``path`` resolved from the directory the user started in (``$PWD``; a notebook kernel's own
    working directory is the notebook's folder), not from the current working directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(os.environ.get("PWD") or os.getcwd()) / path


def results_csvs(root: str | os.PathLike, name: str) -> list[Path]:
    """The results tables of experiment ``name`` under a results root (one per data set group)."""
    root = Path(root)
    return sorted({*root.glob(f"{name}/results.csv"), *root.glob(f"{name}/*/results.csv")})


def load_experiment(source: str | os.PathLike, name: str) -> pd.DataFrame:
    """Runs of experiment ``name``: from every ``results.csv`` of it under a results root, or from
    one results CSV (its rows of that experiment). ``run_dir`` becomes an absolute path, the
    archived copy under ``runs/`` where the original run folder is gone (e.g. a fresh clone).
    Empty (with the columns of a results table) when there are no runs."""
    source = Path(source)
    paths = [source] if source.is_file() else results_csvs(source, name)
    frames = []
    for path in paths:
        df = load_results(path)
        df = df[df["experiment"].astype("string").fillna("") == name]
        if not df.empty:
            frames.append(with_run_dirs(df, path.parent))
    if not frames:
        return pd.DataFrame(columns=["run_dir", "status", "experiment", "model", "data", "seed"])
    out = pd.concat(frames, ignore_index=True)
    out.attrs["base_dir"] = None  # run_dir is absolute
    out.attrs["sources"] = [str(p) for p in paths]
    return out


def with_run_dirs(df: pd.DataFrame, base: Path) -> pd.DataFrame:
    """``run_dir`` made absolute; where it does not exist, the archived run with the same
    experiment, model, data, seed and setting under ``base/runs`` (when there is exactly one)."""
    dirs = [resolve_run_dir(str(d), base).resolve() for d in df["run_dir"]]
    gone = [not d.is_dir() for d in dirs]
    archive = base / "runs"
    if any(gone) and archive.is_dir():
        runs = collect(archive)
        runs = runs[runs["status"] == "complete"]
        if runs.empty:
            return df.assign(run_dir=[str(d) for d in dirs])
        keys = _identity(runs)
        unique = keys[~keys.duplicated(keep=False)]
        where = dict(zip(unique, runs.loc[unique.index, "run_dir"], strict=True))
        for i, key in enumerate(_identity(df)):
            if gone[i] and key in where:
                dirs[i] = Path(where[key]).resolve()
    return df.assign(run_dir=[str(d) for d in dirs])


def _identity(df: pd.DataFrame) -> pd.Series:
    cols = df[DEDUP_KEYS].astype("string").fillna("<none>")
    return cols.agg("|".join, axis=1)
