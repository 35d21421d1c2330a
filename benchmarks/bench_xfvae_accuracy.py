"""Accuracy of the cross-feedback VAE on ML-100K through the real CLI (issue 3, acceptance 1-3).

    python benchmarks/bench_xfvae_accuracy.py default        # model=xfvae, seeds 0-2
    python benchmarks/bench_xfvae_accuracy.py table4         # Table 4's four rows, seeds 0-2
    python benchmarks/bench_xfvae_accuracy.py attention_norm # ratio vs softmax (Eq. 9), seed 0

Every run is ``python -m xfvae.train model=<m> data=ml-100k seed=<s> logger=none`` in a
subprocess (``--jobs`` at a time, one torch thread each); its metrics.json and history.csv are
collected into ``benchmarks/results/bench_xfvae_accuracy_<part>.json`` (atomic) with the command
lines, per-seed numbers and their means. Not part of the test suite; never asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xfvae.report.names import SCORE_KEYS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "logs" / "bench_xfvae_accuracy"
KEYS = (
    *SCORE_KEYS,
    "best_epoch",
    "epochs",
    "seconds_per_epoch",
    "train_seconds",
    "peak_rss_mb",
)

PARTS = {
    "default": [("xfvae", [])],
    "table4": [
        ("xfvae_no_data_input", []),
        ("xfvae_no_cross_feedback", []),
        ("xfvae_no_attention", []),
        ("xfvae", []),
    ],
    "attention_norm": [
        ("xfvae", ["model.net.attention_norm=softmax"]),
        ("xfvae", ["model.net.attention_norm=ratio"]),
    ],
}


def run_one(model: str, extra: list[str], seed: int, rerun: bool) -> dict:
    """One training run; an earlier run with the same command is reused unless ``rerun``
    (runs are deterministic for a fixed seed: trainer.deterministic and seeded blocks)."""
    tag = "_".join([model, *[e.split("=")[-1] for e in extra], f"s{seed}"])
    out_dir = RUNS / tag
    cmd = [
        sys.executable,
        "-m",
        "xfvae.train",
        f"model={model}",
        "data=ml-100k",
        f"seed={seed}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out_dir}",
        *extra,
    ]
    metrics = out_dir / "metrics.json"
    stamp = out_dir / "command.txt"
    reuse = (
        not rerun and metrics.exists() and stamp.exists() and stamp.read_text() == " ".join(cmd[1:])
    )
    returncode = 0
    if not reuse:
        metrics.unlink(missing_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        returncode = proc.returncode
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(" ".join(cmd[1:]))
    res: dict = {
        "model": model,
        "overrides": extra,
        "seed": seed,
        "returncode": returncode,
        "command": " ".join(cmd[2:]),
        "reused": reuse,
    }
    if returncode == 0 and metrics.exists():
        m = json.loads(metrics.read_text())
        res.update({k: m.get(k) for k in KEYS})
    else:
        log = out_dir / "train.log"
        res["error"] = log.read_text().strip().splitlines()[-1:] if log.exists() else ["no log"]
    hist = out_dir / "history.csv"
    if hist.exists():
        with hist.open() as fh:
            res["val_curve"] = [round(float(r["val_rmse"]), 4) for r in csv.DictReader(fh)]
    print(json.dumps({k: v for k, v in res.items() if k != "val_curve"}), flush=True)
    return res


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], tuple(r["overrides"])), []).append(r)
    rows = []
    for (model, extra), rs in groups.items():
        row = {"model": model, "overrides": list(extra), "seeds": [r["seed"] for r in rs]}
        for k in (*SCORE_KEYS, "seconds_per_epoch", "best_epoch"):
            vals = [r[k] for r in rs if isinstance(r.get(k), int | float)]
            row[f"mean {k}"] = statistics.fmean(vals) if len(vals) == len(rs) else None
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--rerun",
        action="store_true",
        help="train again even if a run with the same command exists",
    )
    a = p.parse_args()
    seeds = a.seeds or ([0] if a.part == "attention_norm" else [0, 1, 2])
    jobs = [(m, e, s) for m, e in PARTS[a.part] for s in seeds]
    load_start = [round(x, 2) for x in os.getloadavg()]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        runs = list(pool.map(lambda j: run_one(*j, a.rerun), jobs))
    sys.path.insert(0, str(ROOT / "src"))
    from xfvae.runs.atomic import atomic_write_json

    out = {
        "part": a.part,
        "jobs": a.jobs,
        "load_avg_start": load_start,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        "summary": summarise(runs),
    }
    path = atomic_write_json(RESULTS / f"bench_xfvae_accuracy_{a.part}.json", out)
    print(json.dumps(out["summary"], indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
