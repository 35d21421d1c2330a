"""Resuming runs and sweeps, stopping on signals, isolating failures (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from xfvae.train import train

TINY = ["data=synthetic", "data.options.n_users=60", "data.options.n_items=40"]
EXACT = ["epoch", "train_loss", "val_rmse", "test_rmse"]


class Crash(pl.Callback):
    """Kills the run in the middle of epoch ``at`` (a stand-in for SIGKILL)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == self.at:
            raise RuntimeError("crash")


@pytest.mark.parametrize(
    "overrides",
    [
        # the cross-feedback VAE's recipe: Algorithm 1 state, EMA weights, ExponentialLR
        [
            "model=xfvae",
            "model.batch_size=[30,20]",
            "++model.scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:0.8}",
            "++model.callbacks.ema={_target_:xfvae.training.callbacks.EMAWeights,decay:0.9}",
        ],
        # ReduceLROnPlateau is stepped after the checkpoint: the resumed run must replay that step
        [
            "model=mf",
            "model.optimizer.lr=0.05",
            "++model.scheduler={_target_:torch.optim.lr_scheduler.ReduceLROnPlateau,_partial_:true,factor:0.5,patience:0}",
        ],
    ],
    ids=["xfvae-ema-exponential", "mf-plateau"],
)
def test_killed_run_resumes_to_the_same_result(tmp_path, cfg_factory, overrides):
    ov = [*TINY, *overrides, "model.max_epochs=6", "model.patience=100"]
    whole = train(cfg_factory(*ov, out=tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg_factory(*ov, out=tmp_path / "killed"), callbacks=[Crash(at=3)])
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").is_file()
    resumed = train(cfg_factory(*ov, out=tmp_path / "killed"))
    assert resumed["resumed_from"] == "checkpoints/last.ckpt"
    a = pd.read_csv(tmp_path / "whole" / "history.csv")[EXACT]
    b = pd.read_csv(tmp_path / "killed" / "history.csv")[EXACT]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for key in ("val/rmse", "test/rmse", "test/ndcg@20", "best_epoch", "epochs"):
        assert _same(resumed[key], whole[key]), key


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN (undefined ranking metric) equals NaN


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "xfvae.train", *args, "logger=none"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(path_fn, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.time()
    while not path_fn():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_sigterm_saves_last_checkpoint_exits_143_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "model=mf",
        *TINY,
        "model.max_epochs=400",
        "model.patience=400",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = _popen(args, tmp_path)
    _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM" in out and "resume" in out
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "interrupted" and state["signal"] == "SIGTERM"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stopped_at = ckpt["epoch"]
    assert stopped_at < 399 and "state_dict" in ckpt
    again = _popen(args, tmp_path)
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    from xfvae.runs.sweep import read_outcomes

    assert [r["outcome"] for r in read_outcomes(run_dir)] == ["resumed"]
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(len(history))) and len(history) > stopped_at + 1


def test_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _popen(
        ["-m", "model=mf", *TINY, "model.net.dim=4,-1,8", "debug=fast", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out
    assert "sweep summary: 2 ran, 0 resumed, 0 skipped, 1 failed" in out
    assert f"FAILED {sweep / '1'}" in out and "negative dimension" in out
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "2" / "metrics.json").is_file()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["counts"]["failed"] == 1
    assert "negative dimension" in (sweep / "1" / "train.log").read_text()


@pytest.mark.slow
def test_killed_sweep_reruns_skipping_resuming_and_running(tmp_path):
    """A 3-job sweep SIGKILLed after job 0 finished and job 1 started: the same command again
    skips job 0, resumes job 1 from its last.ckpt and runs job 2; results equal an uninterrupted
    sweep's."""
    args = [
        "-m",
        "model=mf",
        *TINY,
        "seed=0,1,2",
        "model.max_epochs=60",
        "model.patience=60",
        "trainer.enable_progress_bar=false",
    ]
    whole = _popen([*args, f"hydra.sweep.dir={tmp_path / 'whole'}"], tmp_path)
    assert whole.wait(timeout=900) == 0, whole.stdout.read()

    sweep = tmp_path / "sweep"
    proc = _popen([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    _wait_for(lambda: (sweep / "1" / "checkpoints" / "last.ckpt").is_file(), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()

    again = _popen([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    out = again.communicate(timeout=900)[0]
    assert again.returncode == 0, out
    assert "sweep summary: 1 ran, 1 resumed, 1 skipped, 0 failed" in out
    for job in ("0", "1", "2"):
        a = json.loads((tmp_path / "whole" / job / "metrics.json").read_text())
        b = json.loads((sweep / job / "metrics.json").read_text())
        for key in ("val/rmse", "test/rmse", "test/recall@20", "best_epoch", "epochs", "seed"):
            assert _same(a[key], b[key]), (job, key)
