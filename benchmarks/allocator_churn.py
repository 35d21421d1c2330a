"""System-time share and seconds per epoch with and without the entry point's allocator setting.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/allocator_churn.py [case[:epochs] ...]

Each case runs ``python -m xfvae.train <overrides>`` twice, one after the other, as a child
process: "before" with :func:`xfvae.runs.allocator.keep_freed_memory` replaced by a no-op (glibc's
defaults: large blocks unmapped on free), "after" as the entry point runs. Printed per run: wall,
user and system seconds (the child's rusage), system share of wall, minor page faults, and the
median seconds per epoch from the run's history.csv. The runs write to a temporary folder.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

LARGEST = [  # the largest configuration of conf/hparams_search/xfvae.yaml (13.6 M parameters)
    "model=xfvae",
    "model.batch_size=[50,50]",
    "model.net.dim=50",
    "model.net.inter_dim=50",
    "model.net.input_layers=2",
    "model.net.input_width=100",
    "model.net.output_layers=2",
    "model.net.output_width=100",
    "model.net.separate_variance=true",
]
CASES = {
    "xfvae-default": (["model=xfvae"], 3),
    "xfvae-largest": (LARGEST, 1),
    "cnncf": (["model=cnncf"], 1),
    "mf": (["model=mf"], 3),
}
BEFORE = (
    "import runpy, sys, xfvae.runs.allocator as a; a.keep_freed_memory = lambda: False; "
    "sys.argv = ['xfvae.train', *sys.argv[1:]]; runpy.run_module('xfvae.train', run_name='__main__')"
)


def run(mode: str, overrides: list[str], epochs: int, out: Path) -> dict:
    args = [
        *overrides,
        "data=ml-100k",
        f"model.max_epochs={epochs}",
        "evaluation.test=false",
        "evaluation.test_curve=false",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    ]
    cmd = (
        [sys.executable, "-c", BEFORE, *args]
        if mode == "before"
        else [
            sys.executable,
            "-m",
            "xfvae.train",
            *args,
        ]
    )
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    sys_s = r1.ru_stime - r0.ru_stime
    hist = pd.read_csv(out / "history.csv")
    return {
        "run": mode,
        "wall_s": round(wall, 1),
        "user_s": round(r1.ru_utime - r0.ru_utime, 1),
        "sys_s": round(sys_s, 1),
        "sys_share": f"{sys_s / wall:.1%}",
        "minor_faults": r1.ru_minflt - r0.ru_minflt,
        "s_per_epoch": round(float(hist["seconds"].median()), 2),
        "epochs": len(hist),
    }


def main() -> None:
    names = sys.argv[1:] or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        for arg in names:  # "case" or "case:epochs" (more epochs dilute start-up's system time)
            name, _, n = arg.partition(":")
            overrides, epochs = CASES[name]
            epochs = int(n) if n else epochs
            print(f"{name}: python -m xfvae.train {' '.join(overrides)} model.max_epochs={epochs}")
            rows = [
                run(m, overrides, epochs, Path(tmp) / f"{name}-{m}") for m in ("before", "after")
            ]
            print(pd.DataFrame(rows).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
