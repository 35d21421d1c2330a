"""Results follow the data's contents: the run identity covers the data files (issue 20, case 2)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

import xfvae.data.download as download
import xfvae.data.fingerprint as fp
from tests._tiny import csv_args, hydra_train, write_split
from xfvae.report.collect import collect
from xfvae.runs.provenance import config_hash
from xfvae.runs.rundir import RunDirConflict
from xfvae.train import train


def test_replacing_a_data_file_refuses_the_same_command(tmp_path, cfg_factory):
    paths = write_split(tmp_path / "data")
    ov = [*csv_args(paths), "model.max_epochs=2"]
    first = train(cfg_factory(*ov, out=tmp_path / "run"))
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["data_fingerprint"]
    assert set(recorded) == {"train", "val", "test"}
    assert recorded["train"]["size"] == paths["train"].stat().st_size
    assert first["data_fingerprint"] == recorded
    # a smaller training file under the same name
    lines = paths["train"].read_text().splitlines()
    paths["train"].write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(RunDirConflict, match=r"other data: the data file\(s\) train \(size"):
        train(cfg_factory(*ov, out=tmp_path / "run"))
    kept = json.loads((tmp_path / "run" / "metrics.json").read_text())  # the old run, untouched
    assert kept["data_fingerprint"] == recorded and kept["val/rmse"] == first["val/rmse"]
    again = train(cfg_factory(*ov, "overwrite=true", out=tmp_path / "run"))
    assert again["data_fingerprint"]["train"] != recorded["train"]
    assert again["config_hash"] != first["config_hash"]


def test_the_command_line_refuses_too_and_collect_verifies_the_new_scheme(tmp_path, monkeypatch):
    paths = write_split(tmp_path / "data")
    run_dir = tmp_path / "RUN"
    b = [*csv_args(paths), "model.max_epochs=2", "logger=none", f"hydra.run.dir={run_dir}"]
    assert hydra_train(monkeypatch, *b) == 0
    row = collect(run_dir).iloc[0]
    assert row["status"] == "complete"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config_hash_scheme"] == "identity-v2"
    assert row["config_hash"] == metrics["config_hash"]
    paths["val"].write_text(paths["val"].read_text() + "999,999,3\n")
    assert hydra_train(monkeypatch, *b) != 0  # refused, not skipped
    assert collect(run_dir).iloc[0]["status"] == "complete"  # the old run is kept as it was


def test_collect_still_checks_identity_v1_runs(tmp_path, cfg_factory):
    """Runs written under the config-only scheme (the committed results) are kept when their
    config matches, and flagged stale when it does not."""
    for name, seed in (("ok", 0), ("stale", 1)):
        cfg = cfg_factory("model=mf", "data=synthetic", f"seed={seed}")
        d = tmp_path / name
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        v1 = config_hash(cfg_factory("model=mf", "data=synthetic", "seed=0"))
        metrics = {"config_hash": v1, "config_hash_scheme": "identity-v1", "val/rmse": 1.0}
        (d / "metrics.json").write_text(json.dumps(metrics))
    rows = collect(tmp_path).set_index("run_dir")
    assert rows.loc[str(tmp_path / "ok"), "status"] == "complete"
    assert rows.loc[str(tmp_path / "stale"), "status"] == "stale"


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    paths = write_split(tmp_path / "data")
    data_cfg = {
        "name": "csv",
        "data_dir": str(tmp_path / "cache"),
        **{k: str(v) for k, v in paths.items()},
    }
    calls = []
    original = download.file_hashes

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(download, "file_hashes", counting)
    first = fp.data_fingerprint(data_cfg)
    assert len(calls) == 3
    assert fp.data_fingerprint(data_cfg) == first and len(calls) == 3  # cached: no re-hash
    paths["test"].write_text(paths["test"].read_text() + "1,2,3\n")
    changed = fp.data_fingerprint(data_cfg)
    assert (
        len(calls) == 4 and changed["test"] != first["test"] and changed["train"] == first["train"]
    )


def test_a_run_from_before_fingerprints_is_still_skipped(tmp_path, cfg_factory):
    """Run directories written under identity-v1 (config-only hash, no fingerprint) are this
    configuration's: a make target run again over old logs/ skips them instead of refusing."""
    paths = write_split(tmp_path / "data")
    cfg = cfg_factory(*csv_args(paths), "model.max_epochs=2", out=tmp_path / "run")
    first = train(cfg)
    for name in ("run.json", "metrics.json"):  # rewrite as the old scheme wrote them
        f = tmp_path / "run" / name
        data = json.loads(f.read_text())
        data.pop("data_fingerprint")
        data["config_hash"] = config_hash(cfg)
        if name == "metrics.json":
            data["config_hash_scheme"] = "identity-v1"
        f.write_text(json.dumps(data))
    again = train(cfg_factory(*csv_args(paths), "model.max_epochs=2", out=tmp_path / "run"))
    assert again["val/rmse"] == first["val/rmse"] and "data_fingerprint" not in again
    assert collect(tmp_path / "run").iloc[0]["status"] == "complete"
