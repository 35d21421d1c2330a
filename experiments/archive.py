"""Copy the provenance of every run under ROOT (resolved config, overrides, metrics, history) into
DEST, mirroring the folder layout; predictions and checkpoints stay in logs/ (too big for git).
DEST is replaced as a whole, so it holds exactly the runs the regenerated tables come from (no
stale folders of earlier runs or layouts)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "history.csv", "run.json")


def archive(root: Path, dest: Path) -> int:
    staging = dest.with_name(dest.name + ".archiving")
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed call
    staging.mkdir(parents=True)
    n = 0
    for cfg in sorted(root.rglob(".hydra/config.yaml")):
        run = cfg.parent.parent
        for rel in KEEP:
            src = run / rel
            if src.exists():
                target = staging / run.relative_to(root) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
        n += 1
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return n


if __name__ == "__main__":
    root, dest = Path(sys.argv[1]), Path(sys.argv[2])
    print(f"archived {archive(root, dest)} run(s) from {root} to {dest}")
