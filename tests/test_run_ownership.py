"""A run's files are written only by the run that owns its directory (issue 20, cases 1, 7, 8).

``B`` is the issue's command: ``python -m xfvae.train model=mf data=csv ... model.max_epochs=2
hydra.run.dir=RUN``, run here through Hydra's own entry point in this process.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests._tiny import csv_args, file_hashes, hydra_train, write_split
from tests.test_resume import Crash
from xfvae.report.collect import collect
from xfvae.runs.provenance import config_hash
from xfvae.runs.rundir import RunDir, RunDirConflict
from xfvae.train import train

OUTCOMES = ".outcomes"


def _unchanged(before: dict[str, str], run_dir) -> None:
    """Every file of the finished run byte-identical; anything new only an invocation record."""
    after = file_hashes(run_dir)
    changed = [f for f, h in before.items() if after.get(f) != h]
    assert not changed, f"files of the finished run changed: {changed}"
    new = [f for f in after if f not in before and not f.startswith(OUTCOMES + "/")]
    assert not new, f"files written into the finished run: {new}"


def _outcomes(run_dir) -> list[str]:
    files = sorted((run_dir / OUTCOMES).glob("*.json"))
    return [json.loads(f.read_text())["outcome"] for f in files]


def test_refused_and_skipped_runs_leave_the_finished_run_untouched(tmp_path, monkeypatch):
    run_dir = tmp_path / "RUN"
    b = [*csv_args(write_split(tmp_path)), "model.max_epochs=2", f"hydra.run.dir={run_dir}"]
    assert hydra_train(monkeypatch, *b) == 0
    before = file_hashes(run_dir)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "csv/metrics.csv"} <= set(
        before
    )
    assert hydra_train(monkeypatch, *b, "seed=1") != 0  # another configuration: refused
    _unchanged(before, run_dir)
    assert hydra_train(monkeypatch, *b, "resume=false") != 0  # complete, not resumed: refused
    _unchanged(before, run_dir)
    assert hydra_train(monkeypatch, *b) == 0  # complete: skipped
    _unchanged(before, run_dir)
    assert _outcomes(run_dir) == ["ran", "failed", "failed", "skipped"]
    row = collect(run_dir).iloc[0]
    assert row["status"] == "complete" and row["seed"] == 0


def test_a_process_that_finds_the_directory_locked_writes_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "RUN"
    b = [*csv_args(write_split(tmp_path)), "model.max_epochs=2", f"hydra.run.dir={run_dir}"]
    assert hydra_train(monkeypatch, *b) == 0
    before = file_hashes(run_dir)
    with RunDir(run_dir, "any").lock():  # a live process holds it
        assert hydra_train(monkeypatch, *b) != 0
    _unchanged(before, run_dir)
    assert _outcomes(run_dir)[-1] == "failed"


TINY = ["model=mf", "data=synthetic", "data.options.n_users=60", "data.options.n_items=40"]


def test_resume_removes_orphan_temp_files(tmp_path, cfg_factory):
    ov = [*TINY, "model.max_epochs=3"]
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg_factory(*ov), callbacks=[Crash(at=1)])
    # what kill -9 during atomic writes leaves behind
    orphans = [tmp_path / ".history.csv.x1.tmp", tmp_path / "checkpoints" / ".last.ckpt.x2.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    train(cfg_factory(*ov))
    assert not any(p.exists() for p in orphans)
    assert not list(tmp_path.rglob("*.tmp"))


def test_metrics_count_only_beside_a_complete_run_json(tmp_path, cfg_factory, monkeypatch):
    """Killed between metrics.json and run.json: collect must not call the run complete, and the
    next invocation finishes it."""
    ov = [*TINY, "model.max_epochs=2"]
    whole = train(cfg_factory(*ov, out=tmp_path / "whole"))
    real_mark = RunDir.mark

    def killed_before_complete(self, status, *args, **kwargs):
        if status == "complete":
            raise KeyboardInterrupt  # the process dies before its last write
        return real_mark(self, status, *args, **kwargs)

    monkeypatch.setattr(RunDir, "mark", killed_before_complete)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_factory(*ov, out=tmp_path / "run"))
    monkeypatch.setattr(RunDir, "mark", real_mark)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] != "complete"
    assert collect(tmp_path / "run").iloc[0]["status"] == "incomplete"
    again = train(cfg_factory(*ov, out=tmp_path / "run"))
    assert again["val/rmse"] == whole["val/rmse"] and again["test/rmse"] == whole["test/rmse"]
    assert collect(tmp_path / "run").iloc[0]["status"] == "complete"


def test_csv_logger_keeps_the_epochs_before_a_resume(tmp_path, cfg_factory):
    ov = [*TINY, "logger=csv", "model.max_epochs=4", "model.patience=100"]
    train(cfg_factory(*ov, out=tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg_factory(*ov, out=tmp_path / "run"), callbacks=[Crash(at=2)])
    train(cfg_factory(*ov, out=tmp_path / "run"))

    def val_curve(run):
        df = pd.read_csv(tmp_path / run / "csv" / "metrics.csv")
        return df.dropna(subset=["val/rmse", "epoch"])[["epoch", "val/rmse"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(val_curve("run"), val_curve("whole"))
    assert list(val_curve("run")["epoch"]) == [0, 1, 2, 3]


def test_identity_of_the_saved_config_matches_the_run(tmp_path, cfg_factory):
    cfg = cfg_factory(*TINY, "model.max_epochs=2")
    metrics = train(cfg)
    assert metrics["config_hash"] == config_hash(cfg, metrics["data_fingerprint"])
    with pytest.raises(RunDirConflict, match="already holds this configuration"):
        train(cfg_factory(*TINY, "model.max_epochs=2", "resume=false"))
