"""Copy the provenance of every run under ROOT (resolved config, overrides, metrics, history) into
DEST, mirroring the folder layout; predictions and checkpoints stay in logs/ (too big for git)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "history.csv", "run.json")


def archive(root: Path, dest: Path) -> int:
    n = 0
    for cfg in sorted(root.rglob(".hydra/config.yaml")):
        run = cfg.parent.parent
        for rel in KEEP:
            src = run / rel
            if src.exists():
                target = dest / run.relative_to(root) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
        n += 1
    return n


if __name__ == "__main__":
    root, dest = Path(sys.argv[1]), Path(sys.argv[2])
    print(f"archived {archive(root, dest)} run(s) from {root} to {dest}")
