"""Regenerate every table and figure from the committed results, without training (`make figures`).

For each experiment of ``xfvae.report.experiments.EXPERIMENTS`` and each of its results tables
(``results/<experiment>/<data sets>/results.csv``), runs the report commands its make target runs,
in one process, then rewrites the generated blocks of the docs (``experiments/doc_blocks.py``).
The files are byte-identical from one run to the next when the results did not
change: the script runs with PYTHONHASHSEED=0 and SOURCE_DATE_EPOCH=0 (PDFs carry a fixed creation
date, PNGs no date at all). Restyle the figures in ``xfvae.report.plots`` and run this again.

    python experiments/figures.py [RESULTS_ROOT]   (default: results/ of this checkout)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Reproducible bytes: string hashing fixed (scikit-posthocs draws the CD diagrams' bars in set
# order, which follows the per-process hash seed), PDF creation date fixed (read by matplotlib).
if os.environ.get("PYTHONHASHSEED") != "0" or "SOURCE_DATE_EPOCH" not in os.environ:
    env = {**os.environ, "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "0"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import matplotlib  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "xfvae"

import doc_blocks  # noqa: E402  (experiments/, this script's folder)

from xfvae.report.__main__ import main as report  # noqa: E402
from xfvae.report.experiments import EXPERIMENTS, results_csvs  # noqa: E402

#: Experiment -> the report commands of its make target; "{csv}" is one of its results tables,
#: "{out}" that table's folder.
COMMANDS = {
    "table3": [
        ["table", "3", "{csv}", "--out", "{out}"],
        ["stats", "{csv}", "--blocks", "auto", "--out", "{out}/stats"],
        ["stats", "{csv}", "--blocks", "auto", "--top", "4", "--out", "{out}/stats"],
    ],
    "table4": [["table", "4", "{csv}", "--out", "{out}"]],
    "figure3": [["fig3", "{csv}", "--out", "{out}"]],
    "figure4": [["fig4", "{csv}", "--out", "{out}"]],
    "protocols": [["protocols", "{csv}", "--out", "{out}"]],
}


def regenerate(root: Path) -> int:
    failed = 0
    for name in EXPERIMENTS:
        commands = COMMANDS.get(name)
        csvs = results_csvs(root, name)
        if commands is None:
            print(f"{name}: no tables or figures defined (COMMANDS in experiments/figures.py)")
            continue
        if not csvs:
            print(f"{name}: no results under {root}/{name}/ (its make target writes them)")
        for csv in csvs:
            for command in commands:
                argv = [a.format(csv=csv, out=csv.parent) for a in command]
                argv += ["--experiment", name]
                print(f"$ python -m xfvae.report {' '.join(argv)}", flush=True)
                rc = report(argv)
                failed += rc != 0
    return failed


if __name__ == "__main__":
    start = time.perf_counter()
    # This checkout's results (not those of wherever the xfvae package was installed from).
    root = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "results"
    )
    failed = regenerate(root)
    if len(sys.argv) == 1:  # this checkout's results: the numbers in its docs follow them
        stale = doc_blocks.update()
        print(f"doc blocks rewritten: {', '.join(stale) or 'none (already up to date)'}")
    print(f"figures: {time.perf_counter() - start:.1f} s, {failed} command(s) failed")
    sys.exit(1 if failed else 0)
