"""Sweeps through hydra-submitit-launcher (the `slurm` extra) with this project's configs.

`hydra/launcher=submitit_local` runs a real 2-job sweep in submitit's own subprocesses;
`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml) is composed, and submitted to a stand-in
`sbatch` that keeps the job script, so the flags a cluster would receive are checked without SLURM.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xfvae import REPO_ROOT

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")

TINY = [
    "model=mf",
    "data=synthetic",
    "data.options.n_users=60",
    "data.options.n_items=40",
    "debug=fast",
]


def _train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xfvae.train", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sweep_dir", ["given", "default"])
def test_submitit_local_runs_a_two_job_sweep_inside_the_sweep_dir(tmp_path, sweep_dir):
    """Each job runs in its own submitit process; its run directory and submitit's files land in
    the one sweep dir, whether given (as the experiment scripts do) or the default
    logs/train/multirun/<time>-<uid> (the uid resolver reaches the jobs with Hydra's state)."""
    if sweep_dir == "given":
        where = [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    else:
        where = [f"paths.log_dir={tmp_path / 'logs'}"]
    proc = _train("-m", "hydra/launcher=submitit_local", *TINY, "seed=0,1", *where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if sweep_dir == "given":
        sweep = tmp_path / "sweep"
    else:
        (sweep,) = (tmp_path / "logs" / "train" / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [".submitit", "0", "1"]
    for num, seed in ((0, 0), (1, 1)):
        job = sweep / str(num)
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["seed"] == seed
        assert f"seed={seed}" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert metrics["test/rmse"] > 0
    # submitit's job pickles, results and logs: one folder per job, inside the sweep dir.
    results = sorted((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    logs = [p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out")]
    assert len(logs) == 2 and all("completed successfully" in t for t in logs)


def test_slurm_launcher_config_composes_with_overrides(tmp_path, monkeypatch, capsys):
    """`python -m xfvae.train hydra/launcher=slurm ... --cfg hydra`, run in this process (the
    entry point is the real one; a subprocess would only add torch's import time)."""
    from hydra.core.global_hydra import GlobalHydra

    from xfvae.train import main

    argv = [
        "xfvae.train",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_task=1",
        "hydra.launcher.timeout_min=600",
        "hydra.launcher.array_parallelism=8",
        f"hydra.sweep.dir={tmp_path}",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
        "--resolve",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    GlobalHydra.instance().clear()
    try:
        main()
    finally:
        GlobalHydra.instance().clear()
    launcher = yaml.safe_load(capsys.readouterr().out)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu"
    assert launcher["gpus_per_task"] == 1
    assert launcher["timeout_min"] == 600
    assert launcher["array_parallelism"] == 8
    # Not overridden: this project's values, not the plugin's (60 min, no requeue, 256 at once).
    assert launcher["cpus_per_task"] == 4 and launcher["mem_gb"] == 32
    assert launcher["signal_delay_s"] == 120 and launcher["max_num_timeout"] == 3
    assert launcher["submitit_folder"] == f"{tmp_path}/.submitit/%j"
    assert not list(tmp_path.iterdir())  # --cfg composes only: no job, no folder written


def _fake_slurm(bin_dir: Path) -> None:
    """`srun` (submitit looks for it) and an `sbatch` that keeps the script and refuses the job."""
    bin_dir.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": '#!/bin/sh\ncp "$1" "$FAKE_SBATCH_COPY"\necho "sbatch: fake, not submitted" >&2\n'
        "exit 1\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_slurm_launcher_submits_one_array_with_the_configured_flags(tmp_path):
    _fake_slurm(tmp_path / "bin")
    script = tmp_path / "job.sbatch"
    sweep = tmp_path / "sweep"
    proc = _train(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=600",
        "hydra.launcher.array_parallelism=1",
        "experiment=table3",
        *TINY,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        env={
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_SBATCH_COPY": str(script),
        },
    )
    assert proc.returncode != 0 and "sbatch: fake, not submitted" in proc.stderr
    flags = {
        line.split("=", 1)[0][len("#SBATCH --") :]: line.split("=", 1)[1] if "=" in line else True
        for line in script.read_text().splitlines()
        if line.startswith("#SBATCH --")
    }
    assert flags["partition"] == "gpu"
    assert flags["time"] == "600"
    assert flags["array"] == "0-1%1"  # both seeds in one array, one task at a time
    assert flags["gpus-per-task"] == "1" and flags["cpus-per-task"] == "4"
    assert flags["mem"] == "32GB"
    assert flags["signal"] == "USR2@120"  # submitit's requeue signal, 120 s before the limit
    assert flags["job-name"] == "xfvae-train"
    assert flags["output"].startswith(f"{sweep}/.submitit/")
    assert not list(sweep.glob("*/metrics.json"))  # nothing ran
