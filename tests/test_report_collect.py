"""`collect` on fake run directories in the training loop's schema (single runs, multirun jobs,
crashed and corrupt runs), and `select` (experiment filter, duplicates)."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest

from xfvae.report.__main__ import main
from xfvae.report.collect import (
    METRIC_KEYS,
    ReportWarning,
    collect,
    find_run_dirs,
    load_results,
    resolve_run_dir,
    select,
)

FIXTURES = Path(__file__).parent / "fixtures" / "report"
_spec = importlib.util.spec_from_file_location("report_fixture", FIXTURES / "make_fixture.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

SCORES = {"rmse": 0.91, "ndcg@20": 0.8, "ndcg@50": 0.79, "recall@20": 0.77, "recall@50": 0.76}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "logs" / "train"
    single = root / "runs" / "2024-05-01_10-00-00"
    fx.write_run(
        single,
        fx.run_config("mf", "ml-100k", 0, experiment="main"),
        fx.run_metrics("mf", "ml-100k", 0, SCORES, experiment="main"),
    )
    for job, seed in enumerate((1, 2)):
        fx.write_run(
            root / "multirun" / "2024-05-01_11-00-00" / str(job),
            fx.run_config("mf", "ml-100k", seed, experiment="main", setting="frac=0.05"),
            fx.run_metrics(
                "mf", "ml-100k", seed, SCORES | {"rmse": 0.9 + seed / 100}, "main", "frac=0.05"
            ),
        )
    # crashed: config only, no metrics.json
    fx.write_run(root / "runs" / "2024-05-01_12-00-00", fx.run_config("ncf", "ml-100k", 7, "main"))
    # corrupt metrics.json
    bad = fx.write_run(
        root / "runs" / "2024-05-01_13-00-00", fx.run_config("irec", "ml-100k", 3, "main")
    )
    (bad / "metrics.json").write_text("{not json")
    # not a run (no .hydra/config.yaml)
    (root / "runs" / "notes").mkdir(parents=True)
    return root


def test_find_run_dirs_sees_single_and_multirun_jobs(runs):
    found = [p.relative_to(runs).as_posix() for p in find_run_dirs(runs)]
    assert found == [
        "multirun/2024-05-01_11-00-00/0",
        "multirun/2024-05-01_11-00-00/1",
        "runs/2024-05-01_10-00-00",
        "runs/2024-05-01_12-00-00",
        "runs/2024-05-01_13-00-00",
    ]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_run_dirs(runs / "missing")


def test_collect_rows_columns_and_status(runs):
    df = collect(runs)
    assert len(df) == 5
    assert list(df.columns[:8]) == [
        "run_dir",
        "status",
        "experiment",
        "model",
        "data",
        "seed",
        "setting",
        "train_frac",
    ]
    for key in METRIC_KEYS + ["epochs", "train_seconds", "git_commit", "config_hash"]:
        assert key in df.columns
    by_seed = df.set_index("seed")
    assert by_seed.loc[0, "status"] == "complete"
    assert by_seed.loc[0, "test/rmse"] == pytest.approx(0.91)
    assert by_seed.loc[2, "test/rmse"] == pytest.approx(0.92)
    assert by_seed.loc[1, "setting"] == "frac=0.05"
    assert by_seed.loc[0, "git_commit"] == "0123abc"
    # incomplete and invalid runs are listed, their identity taken from the config
    assert by_seed.loc[7, "status"] == "incomplete" and by_seed.loc[7, "model"] == "ncf"
    assert "metrics.json: missing" in by_seed.loc[7, "error"]
    assert pd.isna(by_seed.loc[7, "test/rmse"]) and isinstance(by_seed.loc[7, "config_hash"], str)
    assert by_seed.loc[3, "status"] == "invalid" and "unreadable" in by_seed.loc[3, "error"]
    assert by_seed.loc[3, "data"] == "ml-100k"


def test_cli_collect_writes_csv_and_lists_incomplete_runs(runs, tmp_path, capsys):
    out = tmp_path / "results" / "results.csv"
    assert main(["collect", str(runs), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "incomplete: " in err and "2024-05-01_12-00-00" in err and "invalid: " in err
    df = load_results(out)
    assert len(df) == 5 and (df["status"] == "complete").sum() == 3
    # run_dir is relative to the CSV's folder and resolves back to the run
    run_dir = df.loc[df["seed"] == 0, "run_dir"].item()
    assert not os.path.isabs(run_dir)
    assert (resolve_run_dir(run_dir, df.attrs["base_dir"]) / "metrics.json").is_file()


def test_cli_collect_on_an_empty_tree_fails(tmp_path, capsys):
    assert main(["collect", str(tmp_path), "--out", str(tmp_path / "r.csv")]) == 1
    assert "no run directories" in capsys.readouterr().err


def test_select_filters_and_deduplicates(runs, tmp_path):
    fx.write_run(  # seed 0 run again, finishing later: it replaces the first
        runs / "runs" / "2024-05-02_09-00-00",
        fx.run_config("mf", "ml-100k", 0, "main"),
        fx.run_metrics("mf", "ml-100k", 0, SCORES | {"rmse": 0.5}, "main"),
    )
    first = runs / "runs" / "2024-05-01_10-00-00" / "metrics.json"
    os.utime(first, (first.stat().st_atime, first.stat().st_mtime - 100))
    df = collect(runs)
    with pytest.warns(ReportWarning, match="1 duplicate run"):
        sel = select(df, "main")
    assert len(sel) == 3 and set(sel["status"]) == {"complete"}
    assert sel.loc[sel["seed"] == 0, "test/rmse"].item() == pytest.approx(0.5)


def test_select_requires_an_experiment_when_mixed(runs):
    fx.write_run(
        runs / "runs" / "2024-05-03_09-00-00",
        fx.run_config("mf", "ml-100k", 0, "ablation"),
        fx.run_metrics("mf", "ml-100k", 0, SCORES, "ablation"),
    )
    df = collect(runs)
    with pytest.raises(ValueError, match="mix experiments"):
        select(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(select(df, "ablation")) == 1
    with pytest.raises(ValueError, match="no complete runs"):
        select(df, "main", models=["vaecf"])


def test_load_results_names_missing_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: missing column\(s\) \['model', 'data'\]"):
        load_results(path)
    with pytest.raises(FileNotFoundError, match="no such results file"):
        load_results(tmp_path / "none.csv")


def test_metrics_json_values_override_config(tmp_path):
    run = fx.write_run(
        tmp_path / "r",
        fx.run_config("mf", "ml-100k", 0, "main"),
        json.loads(json.dumps(fx.run_metrics("mf", "ml-1m", 5, SCORES, "main"))),
    )
    row = collect(run).iloc[0]
    assert (row["data"], row["seed"]) == ("ml-1m", 5)


def test_tuning_runs_are_validation_only_and_never_enter_a_report(tmp_path):
    """A tuning trial (evaluation.test=false) has metrics but no test result: collect marks it,
    select leaves it out and says why when nothing else is there."""
    cfg = fx.run_config("mf", "ml-100k", 0) | {"evaluation": {"test": False}}
    metrics = fx.run_metrics("mf", "ml-100k", 0, SCORES)
    fx.write_run(tmp_path / "logs" / "tune" / "0", cfg, metrics)
    ncf = fx.run_metrics("ncf", "ml-100k", 0, SCORES)
    fx.write_run(tmp_path / "logs" / "train" / "0", fx.run_config("ncf", "ml-100k", 0), ncf)
    df = collect(tmp_path / "logs")
    assert sorted(df["status"]) == ["complete", "validation_only"]
    assert "evaluation.test=false" in df.loc[df["status"] == "validation_only", "error"].item()
    assert list(select(df)["model"]) == ["ncf"]
    with pytest.raises(ValueError, match="validation_only"):
        select(df[df["status"] == "validation_only"])


def test_stats_refuses_one_model_name_for_two_configurations(runs, tmp_path, capsys):
    """Issue 20, case 6: two configurations labelled with one model name were reduced to one with
    only a warning; `report stats` must refuse, naming both configurations and their runs."""
    other = fx.run_config("mf", "ml-100k", 0, "main")
    other["model"]["net"]["dim"] = 32  # another configuration, the same model name and seed
    fx.write_run(
        runs / "runs" / "2024-05-02_09-00-00",
        other,
        fx.run_metrics("mf", "ml-100k", 0, SCORES | {"rmse": 0.5}, "main")
        | {"config_hash": "mf-ml-100k-0-dim32"},
    )
    df = collect(runs)
    hashes = set(df.loc[(df["seed"] == 0) & (df["model"] == "mf"), "config_hash"])
    assert len(hashes) == 2
    with pytest.raises(ValueError, match="more than one configuration") as err:
        select(df, "main")
    assert all(h in str(err.value) for h in hashes)
    assert "2024-05-01_10-00-00" in str(err.value) and "2024-05-02_09-00-00" in str(err.value)
    csv = tmp_path / "results.csv"
    assert main(["collect", str(runs), "--out", str(csv)]) == 0
    capsys.readouterr()
    out = tmp_path / "stats"
    rc = main(["stats", str(csv), "--experiment", "main", "--no-figures", "--out", str(out)])
    assert rc == 2
    message = capsys.readouterr().err
    assert "more than one configuration" in message and all(h in message for h in hashes)
    assert not out.exists()
