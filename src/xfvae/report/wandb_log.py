"""W&B helpers. ``run_group``/``run_tags`` label the training runs of ``logger=wandb``
(conf/logger/wandb.yaml); ``log_report`` logs the report's tables and figures to a W&B group,
next to those runs. Offline unless the user set ``WANDB_MODE`` (no network, no account needed;
``wandb sync`` uploads later)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd


def run_group(experiment: str | None, model: str, data: str) -> str:
    """The W&B group of a training run: its experiment (table3, figure3, ...), else model-data."""
    return experiment or f"{model}-{data}"


def run_tags(
    model: str, data: str, seed: int, setting: str | None = None, experiment: str | None = None
) -> list[str]:
    """W&B tags of a training run: model, data set, ``seed=<n>``, then the setting (e.g.
    ``frac=0.05``) and the experiment where they are set; unset ones give no tag (no "None").
    Each tag is cut to W&B's limit of 64 characters."""
    tags = [str(model), str(data), f"seed={seed}"]
    tags += [str(v) for v in (setting, experiment) if v is not None and str(v) != ""]
    return [t[:64] for t in tags]


def log_report(
    group: str,
    tables: dict[str, pd.DataFrame] | None = None,
    figures: dict[str, str | os.PathLike] | None = None,
    texts: dict[str, str] | None = None,
    project: str = "xfvae",
    directory: str | os.PathLike = ".",
) -> Path:
    """Log tables (DataFrames), figures (PNG paths) and texts as one ``job_type=report`` run of
    ``group``; returns the run's local folder."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb  # imported here: W&B stays optional for everything else

    Path(directory).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        dir=str(directory),
        settings=wandb.Settings(init_timeout=60, silent=True),
    )
    try:
        payload = {
            f"table/{k}": wandb.Table(dataframe=v.reset_index(drop=True))
            for k, v in (tables or {}).items()
        }
        payload |= {f"figure/{k}": wandb.Image(str(v)) for k, v in (figures or {}).items()}
        payload |= {
            f"text/{k}": wandb.Html(f"<pre>{html.escape(v)}</pre>")
            for k, v in (texts or {}).items()
        }
        run.log(payload)
        return Path(run.dir).parent
    finally:
        run.finish()
