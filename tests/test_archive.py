"""experiments/archive.py: the committed runs/ folder mirrors the runs the tables come from."""

from __future__ import annotations

import importlib.util

from xfvae import REPO_ROOT

spec = importlib.util.spec_from_file_location("archive", REPO_ROOT / "experiments" / "archive.py")
archive_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(archive_mod)


def make_run(folder, metrics: str = "{}") -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "metrics.json").write_text(metrics)
    (folder / "test_predictions.csv").write_text("u,i,r\n")


def test_archive_copies_provenance_and_drops_stale_runs(tmp_path):
    logs, dest = tmp_path / "logs" / "ml-100k", tmp_path / "results" / "runs" / "ml-100k"
    make_run(logs / "mf" / "seed0", '{"test/rmse": 0.9}')
    make_run(logs / "mf" / "seed1")
    make_run(dest / "mf" / "0")  # an earlier layout's run: not among the current runs
    assert archive_mod.archive(logs, dest) == 2
    runs = sorted(p.parent.parent.name for p in dest.rglob(".hydra/config.yaml"))
    assert runs == ["seed0", "seed1"]
    assert (dest / "mf" / "seed0" / "metrics.json").read_text() == '{"test/rmse": 0.9}'
    assert not list(dest.rglob("test_predictions.csv"))  # predictions stay in logs/
    assert not (dest.parent / "ml-100k.archiving").exists()
