"""What a sweep (Hydra multirun) did: each job's outcome, and one summary at the end.

Every job records its outcome (:func:`record_outcome`): ``ran``, ``resumed``, ``skipped``
(complete for the same configuration), ``failed`` (with the error line) or ``interrupted``. The
record is the invocation's, not the run's: a new file ``<run dir>/.outcomes/<time>-<pid>.json``
each time, so a skipped or refused invocation changes no file of the run it found there. :class:`SweepSummary`, a Hydra callback (``conf/hydra/default.yaml``), reads the
outcomes this invocation wrote under the sweep directory, prints the counts and the failures,
writes ``sweep_summary.json`` there and exits non-zero when a job failed. Launchers that run jobs
in other processes or on other machines (submitit, SLURM) are covered: only files are exchanged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from xfvae.runs.atomic import atomic_write_json

log = logging.getLogger(__name__)

OUTCOME_DIR = ".outcomes"
OUTCOMES = ("ran", "resumed", "skipped", "failed", "interrupted")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def record_outcome(run_dir: str | Path, outcome: str, error: str | None = None) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    at = now()
    name = f"{at.replace(':', '')}-{os.getpid()}.json"
    atomic_write_json(
        Path(run_dir) / OUTCOME_DIR / name, {"outcome": outcome, "error": error, "at": at}
    )


def read_outcomes(sweep_dir: str | Path, since: str | None = None) -> list[dict[str, Any]]:
    """The latest outcome of each run dir under ``sweep_dir`` among those written at or after
    ``since`` (ISO time), sorted by run dir."""
    latest: dict[str, dict[str, Any]] = {}
    for f in Path(sweep_dir).rglob(f"{OUTCOME_DIR}/*.json"):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        run_dir = str(f.parent.parent)
        at = data.get("at", "")
        if (since is None or at >= since) and at >= latest.get(run_dir, {}).get("at", ""):
            latest[run_dir] = {"run_dir": run_dir, **data}
    return [latest[k] for k in sorted(latest)]


def summarize(rows: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    counts = {k: sum(r["outcome"] == k for r in rows) for k in OUTCOMES}
    lines = [
        "sweep summary: "
        + ", ".join(f"{counts[k]} {k}" for k in OUTCOMES if counts[k] or k != "interrupted")
    ]
    lines += [
        f"  FAILED {r['run_dir']}: {r.get('error')}" for r in rows if r["outcome"] == "failed"
    ]
    return counts, "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: the summary of a multirun, and a non-zero exit when a job failed."""

    def __init__(self) -> None:
        self.started: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = now()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = read_outcomes(sweep_dir, since=self.started)
        counts, text = summarize(rows)
        atomic_write_json(
            sweep_dir / "sweep_summary.json",
            {"started_at": self.started, "ended_at": now(), "counts": counts, "jobs": rows},
        )
        print(text, flush=True)
        if counts["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    """``python -m xfvae.runs.sweep ROOT... [--since ISO]``: one summary of every job under ROOT (the
    experiment scripts call it after their sweeps); exit 1 when a job failed."""
    p = argparse.ArgumentParser(prog="python -m xfvae.runs.sweep", description=main.__doc__)
    p.add_argument("roots", nargs="+", help="folders holding sweeps (e.g. logs/table3/ml-100k)")
    p.add_argument("--since", default=None, help="only outcomes written at or after this time")
    args = p.parse_args(argv)
    rows = [r for root in args.roots for r in read_outcomes(root, since=args.since)]
    if not rows:
        print(
            f"no job outcomes under {args.roots}" + (f" since {args.since}" if args.since else "")
        )
        return 1
    counts, text = summarize(rows)
    print(text)
    return 1 if counts["failed"] or counts["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
