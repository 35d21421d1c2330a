"""Optional: log the report's tables and figures to a W&B group, next to the training runs logged with
``logger=wandb``. Offline unless the user set ``WANDB_MODE`` (no network, no account needed;
``wandb sync`` uploads later)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd


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
