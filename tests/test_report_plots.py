"""Figures 2-4: what is drawn matches the statistics (CD bar, non-significance bars, error bars,
mean lines), lines are told apart without colour, and PNG + PDF are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from xfvae.report import plots
from xfvae.report.collect import load_results, select
from xfvae.report.comparison import compare_scores

FIXTURES = Path(__file__).parent / "fixtures" / "report"


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return load_results(FIXTURES / "results.csv")


def test_cd_diagram_of_demsar_example_at_alpha_010():
    auc = pd.read_csv(FIXTURES / "demsar2006_table6.csv", index_col="data")
    c = compare_scores(auc, "auc", alpha=0.10)
    fig = plots.cd_diagram(c)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert f"CD = {c.cd:.2f}" in texts and "CD = 1.12" in texts
    assert "alpha = 0.1" in ax.get_title() and "N = 14" in ax.get_title()
    assert ax.get_xlabel() == "average rank (1 = best)"
    assert "C4.5 (3.14)" in " ".join(texts) or "(3.14) C4.5" in texts
    # The CD bar spans exactly CD rank units, starting at the best rank.
    cd_line = next(
        line
        for line in ax.lines
        if line.get_transform() is not ax.transData
        and len(line.get_xdata()) == 2
        and line.get_linewidth() == 2
    )
    x = np.asarray(cd_line.get_xdata(), dtype=float)
    assert x[1] - x[0] == pytest.approx(c.cd) and x[0] == pytest.approx(c.average_ranks.min())
    # Non-significance bars (below the axis): {C4.5+m+cf, C4.5+m, C4.5+cf} and {C4.5+cf, C4.5},
    # Demsar's two groups at alpha 0.10.
    ranks = c.average_ranks
    bars = [
        sorted(np.round(line.get_xdata(), 6))
        for line in ax.lines
        if line.get_transform() is ax.transData
        and len(set(line.get_ydata())) == 1
        and line.get_ydata()[0] < 0
        and line.get_linewidth() == 2
    ]
    groups = sorted(sorted(ranks.index[np.isin(np.round(ranks.to_numpy(), 6), b)]) for b in bars)
    assert groups == [["C4.5", "C4.5+cf"], ["C4.5+cf", "C4.5+m", "C4.5+m+cf"]]


def test_cd_axis_spans_every_rank_from_1_to_k():
    # Demsar's average ranks lie between 1.96 and 3.14; the axis still shows ranks 1 to 4, with the
    # model names outside it.
    auc = pd.read_csv(FIXTURES / "demsar2006_table6.csv", index_col="data")
    c = compare_scores(auc, "auc", alpha=0.10)
    ax = plots.cd_diagram(c).axes[0]
    assert ax.get_xlim() == (1.0, 4.0)
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    names = [t for t in ax.texts if "C4.5" in t.get_text()]
    assert len(names) == 4 and all(
        t.get_position()[0] < 1 or t.get_position()[0] > 4 for t in names
    )


def test_save_figure_writes_png_and_pdf(tmp_path):
    auc = pd.read_csv(FIXTURES / "demsar2006_table6.csv", index_col="data")
    paths = plots.save_figure(plots.cd_diagram(compare_scores(auc, "auc")), tmp_path / "sub" / "cd")
    assert [p.name for p in paths] == ["cd.png", "cd.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_line_styles_are_distinct_without_colour():
    styles = plots.line_styles(9)
    assert len({(s["linestyle"], s["marker"]) for s in styles}) == 9
    assert all(0.0 <= float(s["color"]) <= 0.6 for s in styles)  # gray levels


def test_subsampling_figure_error_bars_are_mean_and_sd(results):
    df = select(results, "subsampling")
    fig = plots.plot_subsampling(df, metrics=["rmse", "ndcg@20"])
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training data (%)" and ax.get_ylabel() == "test RMSE"
    bars = next(c for c in ax.containers if c.get_label() == "NCF")
    x, y = bars.lines[0].get_data()
    assert list(x) == pytest.approx([1, 2, 3, 5, 10])
    ncf = df[df["model"] == "ncf"].assign(pct=lambda d: d["train_frac"] * 100)
    expected = ncf.groupby("pct")["test/rmse"].agg(["mean", "std"])
    assert y == pytest.approx(expected["mean"].to_numpy())
    half = [abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.lines[2][0].get_segments()]
    assert half == pytest.approx(expected["std"].to_numpy())
    assert len(fig.legends[0].get_texts()) == 7


def test_subsampling_percent_from_setting_or_train_frac():
    df = pd.DataFrame(
        {
            "setting": ["frac=0.05", None, "frac=0.1,seedset=1"],
            "train_frac": [0.7, 0.02, 0.7],
            "run_dir": ["a", "b", "c"],
        }
    )
    assert plots.subsampling_percent(df).tolist() == pytest.approx([5.0, 2.0, 10.0])
    with pytest.raises(ValueError, match="neither a 'frac=...' setting nor train_frac"):
        plots.subsampling_percent(df.assign(train_frac=[0.7, None, 0.7]))


def test_convergence_figure_mean_line_and_band(results):
    df = select(results, "convergence")
    histories = plots.load_histories(df)
    assert len(histories) == 10 * 30
    fig = plots.plot_convergence(histories, max_epoch=19)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"Variant {v}" for v in "ABCDE"]
    line = next(line for line in ax.lines if line.get_label() == "Variant D")
    x, y = line.get_data()
    assert list(x) == list(range(20))
    d = histories[histories["group"] == "variant=D"]
    assert y == pytest.approx(d.groupby("epoch")["test_rmse"].mean().to_numpy()[:20])
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 5  # one band each
    assert ax.get_xlabel() == "iteration (epoch)" and ax.get_ylabel() == "test RMSE"


def test_missing_history_is_warned_and_skipped(results, tmp_path):
    df = select(results, "convergence").copy()
    df.loc[df.index[0], "run_dir"] = "runs/does-not-exist"
    with pytest.warns(UserWarning, match="1 run\\(s\\) without history.csv"):
        h = plots.load_histories(df)
    assert h.groupby(["group", "seed"]).ngroups == 9
    with pytest.raises(FileNotFoundError, match="no history.csv"), pytest.warns(UserWarning):
        plots.load_histories(df.assign(run_dir="nowhere"), base_dir=tmp_path)
