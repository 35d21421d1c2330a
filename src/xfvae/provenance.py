"""Where a result came from: git commit, machine, configuration hash, peak memory."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
from typing import Any

import torch

from xfvae import REPO_ROOT


def git_commit() -> str:
    """HEAD's hash, suffixed '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


#: Recorded beside ``config_hash`` in metrics.json; ``report collect`` verifies hashes of this scheme.
CONFIG_HASH_SCHEME = "identity-v1"
#: Top-level keys that never change a run's results (where files go, how it is logged or resumed).
NON_IDENTITY_KEYS = ("paths", "hydra", "logger", "resume", "overwrite", "task_name")
#: Deeper keys that only change how a run is displayed.
NON_IDENTITY_PATHS = (
    ("trainer", "enable_progress_bar"),
    ("trainer", "enable_model_summary"),
    ("trainer", "log_every_n_steps"),
)
#: A value interpolating one of these is a path, a timestamp or a runtime value: not identity.
_VOLATILE_REFS = ("${paths.", "${hydra:", "${now:", "${oc.env:")


def identity_config(cfg: Any) -> dict[str, Any]:
    """The resolved configuration without paths, timestamps, loggers and display settings.

    Works on the composed config of a running job and on a saved ``.hydra/config.yaml`` alike
    (values that interpolate paths or Hydra's runtime are dropped before resolving).
    """
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in NON_IDENTITY_KEYS:
        raw.pop(key, None)
    for path in NON_IDENTITY_PATHS:
        node = raw
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return OmegaConf.to_container(OmegaConf.create(_drop_volatile(raw)), resolve=True)


def _drop_volatile(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_volatile(v) for k, v in node.items() if not _is_volatile(v)}
    if isinstance(node, list):
        return [_drop_volatile(v) for v in node if not _is_volatile(v)]
    return node


def _is_volatile(value: Any) -> bool:
    return isinstance(value, str) and any(ref in value for ref in _VOLATILE_REFS)


def config_hash(cfg: Any) -> str:
    """The one identity of a run's configuration (16 hex digits): equal for equal configurations,
    wherever and whenever they run. Run directories, resume, tuning and ``report collect`` key on it.
    """
    text = json.dumps(identity_config(cfg), sort_keys=True, default=str, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
