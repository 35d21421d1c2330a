"""Run directories a reader can trust: one configuration per directory, stale results flagged,
no collisions, atomic files, strict JSON (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from xfvae.report.collect import collect
from xfvae.runs.atomic import atomic_write_bytes, atomic_write_json
from xfvae.runs.checkpointing import AtomicCheckpointIO
from xfvae.runs.provenance import config_hash
from xfvae.runs.rundir import Plan, RunDir, RunDirConflict
from xfvae.train import train

TINY = [
    "model=mf",
    "data=synthetic",
    "data.options.n_users=60",
    "data.options.n_items=40",
    "model.max_epochs=3",
]


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_identical_configurations_have_identical_hashes(tmp_path, cfg_factory):
    a = cfg_factory(*TINY, out=tmp_path / "a")
    b = cfg_factory(*TINY, "trainer.enable_progress_bar=true", "logger=csv", out=tmp_path / "b")
    assert config_hash(a) == config_hash(b)  # paths, loggers, progress bars are not identity
    assert config_hash(cfg_factory(*TINY, "seed=1")) != config_hash(a)
    assert config_hash(cfg_factory(*TINY, "model.net.dim=7")) != config_hash(a)
    # the saved config (unresolved, as Hydra writes it) hashes the same as the live one
    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(a))
    assert config_hash(OmegaConf.load(saved)) == config_hash(a)


def test_complete_run_is_skipped_and_returns_its_metrics(tmp_path, cfg_factory):
    first = train(cfg_factory(*TINY, out=tmp_path))
    stamp = (tmp_path / "metrics.json").stat().st_mtime_ns
    again = train(cfg_factory(*TINY, out=tmp_path))
    assert again == json.loads((tmp_path / "metrics.json").read_text())
    assert again["val/rmse"] == first["val/rmse"]
    assert (tmp_path / "metrics.json").stat().st_mtime_ns == stamp  # not rewritten
    state = json.loads((tmp_path / "run.json").read_text())  # the finished run's, not rewritten
    assert state["status"] == "complete" and state["started"] == "fresh"


def test_other_configuration_is_refused_unless_overwrite(tmp_path, cfg_factory):
    train(cfg_factory(*TINY, "seed=0", out=tmp_path))
    with pytest.raises(RunDirConflict, match="another configuration.*overwrite=true"):
        train(cfg_factory(*TINY, "seed=1", out=tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["seed"] == 0  # untouched
    metrics = train(cfg_factory(*TINY, "seed=1", "overwrite=true", out=tmp_path))
    assert metrics["seed"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["seed"] == 1


def test_directory_in_use_is_refused(tmp_path, cfg_factory):
    cfg = cfg_factory(*TINY, out=tmp_path)
    with RunDir(tmp_path, config_hash(cfg)).lock() as run:
        run.claim(Plan("fresh"))  # the owner of a running run notes its pid in .lock
        with pytest.raises(RunDirConflict, match="in use by pid"):
            train(cfg)
    assert not (tmp_path / "metrics.json").exists()


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "xfvae.train", *args, "logger=none", "debug=fast"]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_failing_config_into_a_complete_dir_leaves_no_stale_result(tmp_path):
    run_dir = tmp_path / "run"
    ok = _cli(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert ok.wait(timeout=300) == 0, ok.stdout.read()
    # Another configuration into the same directory: refused, naming the directory and the choices.
    bad = _cli(*TINY, "seed=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    out = bad.communicate(timeout=300)[0]
    assert bad.returncode != 0
    assert str(run_dir) in out and "overwrite=true" in out and "another configuration" in out
    # The refused invocation wrote nothing there: the config is still seed 0's, the run is kept.
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").seed == 0
    assert "another configuration" not in (run_dir / "train.log").read_text()
    row = collect(run_dir).iloc[0]
    assert row["status"] == "complete" and row["seed"] == 0


def test_runs_started_in_the_same_second_do_not_collide(tmp_path):
    procs = [
        _cli(*TINY, f"seed={s}", "paths.log_dir=" + str(tmp_path), cwd=tmp_path) for s in (0, 1)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stdout.read()
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2
    seeds = sorted(json.loads((r / "metrics.json").read_text())["seed"] for r in runs)
    assert seeds == [0, 1]
    for r in runs:  # each directory holds its own run's config and results
        metrics = json.loads((r / "metrics.json").read_text())
        assert OmegaConf.load(r / ".hydra" / "config.yaml").seed == metrics["seed"]
        assert config_hash(OmegaConf.load(r / ".hydra" / "config.yaml")) == metrics["config_hash"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "best.ckpt"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"x" * 1_000_000)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, target)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file is left


def test_trainer_writes_checkpoints_atomically(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    cfg = cfg_factory(*TINY, out=tmp_path)
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_every_json_output_is_strict(tmp_path, cfg_factory):
    # One test rating per user: ranking metrics are undefined (NaN) and must be written as null.
    rows = [(u, i, 1 + (u * 7 + i) % 5) for u in range(30) for i in range(12)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    paths = {}
    for part, frame in {
        "train": df[df["item"] < 10],
        "val": df[df["item"] == 10],
        "test": df[df["item"] == 11],
    }.items():
        paths[part] = tmp_path / f"{part}.csv"
        frame.to_csv(paths[part], index=False)
    cfg = cfg_factory(
        "model=mf",
        "data=csv",
        f"data.train={paths['train']}",
        f"data.val={paths['val']}",
        f"data.test={paths['test']}",
        "model.max_epochs=2",
        out=tmp_path / "run",
    )
    metrics = train(cfg)
    assert metrics["test/recall@20"] != metrics["test/recall@20"]  # NaN in Python ...
    written = _strict_loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/recall@20"] is None  # ... null on disk
    jsons = list((tmp_path / "run").rglob("*.json"))
    assert {p.name for p in jsons} >= {"metrics.json", "run.json"}
    for p in jsons:
        _strict_loads(p.read_text())


def test_saved_config_is_written_for_runs_outside_hydra(tmp_path, cfg_factory):
    train(cfg_factory(*TINY, out=tmp_path))
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config_hash(saved) == json.loads((tmp_path / "metrics.json").read_text())["config_hash"]
    assert collect(tmp_path).iloc[0]["status"] == "complete"


def test_git_commit_is_dirty_for_code_changes_not_for_regenerated_results(tmp_path, monkeypatch):
    """A reproduce-* step rewrites committed results/ files: runs of the next step must still
    name the clean commit, while an edited source file marks them '-dirty'."""
    import xfvae.runs.provenance as prov

    def git(*args: str) -> str:
        cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    outputs = ("results/table3/t.md", "benchmarks/results/b.json", "conf/tuned/d/m.yaml")
    for rel in ("src/model.py", "conf/model/m.yaml", *outputs):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    head = git("rev-parse", "HEAD").strip()
    monkeypatch.setattr(prov, "REPO_ROOT", tmp_path)
    assert prov.git_commit() == head
    for rel in outputs:  # what reproduce-* and the tuner write
        (tmp_path / rel).write_text("v2\n")
    assert prov.git_commit() == head
    (tmp_path / "conf/model/m.yaml").write_text("v2\n")  # a config edit is code
    assert prov.git_commit() == head + "-dirty"
    (tmp_path / "conf/model/m.yaml").write_text("v1\n")
    (tmp_path / "src/model.py").write_text("v2\n")
    assert prov.git_commit() == head + "-dirty"
