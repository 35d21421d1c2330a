"""The results notebook executes on the fixture (and on a CSV named by XFVAE_RESULTS_CSV), so it
cannot rot. Same as `pytest --nbmake notebooks/results.ipynb`, plus checks on what it shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"
FIXTURES = REPO / "tests" / "fixtures" / "report"


def execute(env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    return nb


def outputs(nb, kind: str) -> list:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})
    ]


def test_notebook_on_a_results_csv_from_the_environment(tmp_path, monkeypatch):
    # A copy of the fixture without the sub-sampling sweep: that section must be skipped, the
    # others shown; the convergence runs' history.csv resolve relative to the copied CSV.
    df = pd.read_csv(FIXTURES / "results.csv")
    df[df["experiment"] != "subsampling"].to_csv(tmp_path / "results.csv", index=False)
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    nb = execute({"XFVAE_RESULTS_CSV": str(tmp_path / "results.csv")}, monkeypatch)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert len(outputs(nb, "image/png")) == 5 + 1  # five CD diagrams and Figure 4
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs(nb, "text/markdown"))
    assert "| RMSE | NCF |" in markdown and "| RMSE | No data input |" in markdown
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert str(tmp_path / "results.csv") in text
    assert "no runs of experiment subsampling" in text
    assert text.count("blocks = data (N = 5)") == 5
