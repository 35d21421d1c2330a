"""Input checks of the statistics: missing/NaN scores, unequal or duplicated replicates and blocks
that would pool data sets are errors naming what is wrong (never NaN ranks read as p = 0); the
opt-in drop warns and is recorded in every output; replicates are counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xfvae.report.block_tables import resolve_blocks
from xfvae.report.collect import ReportWarning
from xfvae.report.comparison import compare, compare_scores

FIXTURES = Path(__file__).parent / "fixtures" / "report"
pytestmark = pytest.mark.filterwarnings("ignore:.*no pair can be significant:UserWarning")


@pytest.fixture
def auc() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "demsar2006_table6.csv", index_col="data")


def tidy(data=("d1", "d2", "d3"), seeds=(0, 1, 2), models=("m1", "m2", "m3")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {
            "run_dir": f"runs/{d}/{m}/{s}",
            "model": m,
            "data": d,
            "seed": s,
            "setting": None,
            "test/rmse": 1.0 + 0.1 * i + 0.2 * j + rng.normal(0, 0.01),
        }
        for j, d in enumerate(data)
        for s in seeds
        for i, m in enumerate(models)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_score_in_a_table_is_an_error_naming_model_and_block(auc, bad):
    auc = auc.copy()
    auc.loc["iris", "C4.5+m"] = bad
    with pytest.raises(ValueError, match=r"auc: block 'iris': .*model\(s\) 'C4.5\+m'"):
        compare_scores(auc, "auc")


def test_missing_and_non_numeric_scores_are_errors_too(auc):
    auc = auc.astype(object)
    auc.loc["wine", "C4.5"] = None
    auc.loc["rheum", "C4.5+cf"] = "n/a"
    with pytest.raises(ValueError, match="block 'rheum'.*'C4.5\\+cf'.*block 'wine'.*'C4.5'"):
        compare_scores(auc, "auc")


def test_drop_incomplete_warns_and_the_outputs_say_what_was_dropped(auc):
    auc = auc.copy()
    auc.loc["voting", "C4.5+cf"] = np.nan
    with pytest.warns(ReportWarning, match="dropped 1 incomplete block"):
        c = compare_scores(auc, "auc", blocks=("data",), drop_incomplete=True)
    assert c.friedman.n_blocks == 13 and "voting" not in c.scores.index
    header = c.summary().splitlines()[0]
    assert "blocks = data (N = 13; dropped 1 incomplete: voting)" in header
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["n_blocks"] == 13 and list(d["dropped_blocks"]) == ["voting"]
    assert "C4.5+cf" in d["dropped_blocks"]["voting"]


def test_duplicate_block_names_in_a_table_are_an_error(auc):
    doubled = pd.concat([auc, auc.loc[["iris"]]])
    with pytest.raises(ValueError, match=r"block\(s\) \['iris'\] appear more than once"):
        compare_scores(doubled, "auc")


def test_nan_seed_is_an_error_naming_model_data_set_seed_and_run():
    df = tidy()
    df.loc[(df["model"] == "m2") & (df["data"] == "d3") & (df["seed"] == 1), "test/rmse"] = np.nan
    with pytest.raises(
        ValueError, match=r"block 'd3': model 'm2' lacks seed \['1'\] \(NaN/inf score in \['runs/d3"
    ):
        compare(df, "rmse")


def test_unequal_replicates_are_an_error_not_a_silent_average():
    df = tidy()
    df = df[~((df["model"] == "m1") & (df["data"] == "d2") & (df["seed"] == 2))]
    with pytest.raises(ValueError, match=r"block 'd2': model 'm1' lacks seed \['2'\]"):
        compare(df, "rmse", blocks="data")
    with pytest.warns(ReportWarning, match="dropped 1 incomplete block"):
        c = compare(df, "rmse", blocks="data", drop_incomplete=True)
    assert list(c.scores.index) == ["d1", "d3"] and list(c.dropped) == ["d2"]
    assert c.to_dict()["dropped_blocks"] == {"d2": "model 'm1' lacks seed ['2']"}
    assert "dropped 1 incomplete: d2" in c.summary().splitlines()[0]


def test_a_model_missing_from_a_block_is_an_error():
    df = tidy()
    df = df[~((df["model"] == "m3") & (df["data"] == "d1"))]
    with pytest.raises(ValueError, match="block 'd1': model 'm3' has no runs"):
        compare(df, "rmse")


def test_duplicate_rows_are_an_error_not_averaged():
    df = tidy()
    extra = df[(df["model"] == "m2") & (df["data"] == "d1") & (df["seed"] == 0)].assign(
        run_dir="runs/copy", **{"test/rmse": 9.0}
    )
    with pytest.raises(
        ValueError, match=r"block 'd1', model 'm2', seed 0: 2 rows \['runs/d1/m2/0', 'runs/copy'\]"
    ):
        compare(pd.concat([df, extra]), "rmse")


def test_replicates_are_counted_and_reported():
    c = compare(tidy(), "rmse")
    assert c.blocks == ("data",) and c.replicates.to_dict() == {"d1": 3, "d2": 3, "d3": 3}
    assert "replicates per block and model: 3 (seeds, averaged)" in c.summary()
    d = c.to_dict()
    assert d["replicates"] == {"d1": 3, "d2": 3, "d3": 3} and d["replicate_column"] == "seed"
    per_seed = compare(tidy(data=("d1",)), "rmse")
    assert per_seed.blocks == ("data", "seed")
    assert "replicates per block and model: 1" in per_seed.summary()


@pytest.mark.parametrize("blocks", ["seed", "seed+setting", ("seed",)])
def test_blocks_without_data_on_several_data_sets_are_an_error(blocks):
    with pytest.raises(ValueError, match=r"3 data sets \['d1', 'd2', 'd3'\].*Use --blocks data"):
        compare(tidy(), "rmse", blocks=blocks)
    # one data set: seeds as blocks are allowed (robustness to the seed)
    assert compare(tidy(data=("d1",)), "rmse", blocks=blocks).blocks == tuple(
        blocks if isinstance(blocks, tuple) else blocks.split("+")
    )


def test_resolve_blocks_refuses_seed_on_several_data_sets():
    with pytest.raises(ValueError, match="average a model over data sets"):
        resolve_blocks(tidy(), "seed")
    assert resolve_blocks(tidy(), "data+seed") == ("data", "seed")
    assert resolve_blocks(tidy(), "auto") == ("data",)
