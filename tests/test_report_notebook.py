"""The results notebook executes on the committed results/ with no environment variable, and on the
fixture named by a relative XFVAE_RESULTS, so it cannot rot. Same as
`pytest --nbmake notebooks/results.ipynb`, plus checks on what it shows."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from xfvae import CONF_DIR
from xfvae.report.collect import collect, write_results
from xfvae.report.experiments import (
    EXPERIMENTS,
    RESULTS_DIR,
    experiment_names,
    load_experiment,
    reproduce_command,
    user_path,
)

nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"
FIXTURES = REPO / "tests" / "fixtures" / "report"
_spec = importlib.util.spec_from_file_location("report_fixture", FIXTURES / "make_fixture.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)
#: The fixture's experiment names -> the names the make targets write.
FIXTURE_NAMES = {
    "main": "table3",
    "ablation": "table4",
    "subsampling": "figure3",
    "convergence": "figure4",
}


def execute(monkeypatch, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    monkeypatch.delenv("XFVAE_RESULTS", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the kernel runs in notebooks/
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    return nb


def outputs(nb, kind: str) -> list:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})
    ]


def text_of(nb) -> str:
    return "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )


def markdown_of(nb) -> str:
    return "\n".join(o["data"]["text/markdown"] for o in outputs(nb, "text/markdown"))


def test_notebook_on_the_committed_results(monkeypatch):
    nb = execute(monkeypatch)
    assert str(RESULTS_DIR) in text_of(nb)
    present = {
        n for n in EXPERIMENTS if (load_experiment(RESULTS_DIR, n)["status"] == "complete").any()
    }
    assert "table3" in present  # the committed Table 3 runs
    assert "| RMSE | Biased MF | " in markdown_of(nb)  # Table 3 from results/table3
    assert outputs(nb, "image/png")  # at least the CD diagrams of Figure 2
    for name in set(EXPERIMENTS) - present:
        assert f"No runs of experiment {name!r}" in text_of(nb)
        assert reproduce_command(name) in text_of(nb)


def test_notebook_on_a_relative_results_csv(tmp_path, monkeypatch):
    # The fixture under the make targets' experiment names, without the sub-sampling sweep: that
    # section must say which target produces it, the others show; the path is relative to $PWD
    # (where the user started), not to the kernel's folder; history.csv resolve from the CSV.
    df = pd.read_csv(FIXTURES / "results.csv")
    df = df[df["experiment"] != "subsampling"].replace({"experiment": FIXTURE_NAMES})
    (tmp_path / "mine").mkdir()
    df.to_csv(tmp_path / "mine" / "results.csv", index=False)
    shutil.copytree(FIXTURES / "runs", tmp_path / "mine" / "runs")
    monkeypatch.chdir(tmp_path)
    nb = execute(monkeypatch, {"PWD": str(tmp_path), "XFVAE_RESULTS": "mine/results.csv"})
    assert str(tmp_path / "mine" / "results.csv") in text_of(nb)
    assert len(outputs(nb, "image/png")) == 5 + 1  # five CD diagrams and Figure 4
    markdown = markdown_of(nb)
    assert "| RMSE | NCF |" in markdown and "| RMSE | No data input |" in markdown
    text = text_of(nb)
    assert "No runs of experiment 'figure3'" in text and "make reproduce-figure3" in text
    assert "No runs of experiment 'protocols'" in text


# --- the experiments and where their results live ---------------------------------------------


def test_the_one_list_of_experiments_is_the_experiment_configs(tmp_path):
    import yaml

    names = {
        yaml.safe_load(p.read_text())["experiment"] for p in CONF_DIR.glob("experiment/*.yaml")
    }
    assert set(EXPERIMENTS) == names
    assert EXPERIMENTS[:4] == ("table3", "table4", "figure3", "figure4")  # the paper's order
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "zeta.yaml").write_text("experiment: zeta\n")
    (tmp_path / "experiment" / "alpha.yaml").write_text("trainer: {max_epochs: 1}\n")  # no name
    (tmp_path / "experiment" / "table4.yaml").write_text("experiment: table4\n")
    assert experiment_names(tmp_path) == ["table4", "alpha", "zeta"]


def test_reproduce_commands_name_the_make_target_or_script(tmp_path):
    assert reproduce_command("table3") == "make reproduce-table3"
    assert reproduce_command("protocols") == "bash experiments/protocols.sh"
    assert reproduce_command("table3", repo=tmp_path).startswith(
        "python -m xfvae.train -m experiment=table3"
    )


def test_relative_paths_resolve_from_where_the_user_started(tmp_path, monkeypatch):
    monkeypatch.setenv("PWD", str(tmp_path))
    assert user_path("results") == tmp_path / "results"
    assert user_path("/abs/results.csv") == Path("/abs/results.csv")


def test_missing_run_folders_resolve_to_the_archived_runs(tmp_path):
    # Runs collected under logs/ (gone in a fresh clone), archived under results/.../runs/.
    logs, out = tmp_path / "logs" / "figure4", tmp_path / "results" / "figure4" / "ml-1m"
    history = pd.DataFrame({"epoch": [0, 1], "test_rmse": [1.0, 0.9]})
    for variant in ("A", "B"):
        for d in (logs / "ml-1m" / variant / "0", out / "runs" / "ml-1m" / variant / "0"):
            fx.write_run(
                d,
                fx.run_config("xfvae", "ml-1m", 0, "figure4", f"variant={variant}"),
                fx.run_metrics("xfvae", "ml-1m", 0, {"rmse": 0.9}, "figure4", f"variant={variant}"),
                history,
            )
    write_results(collect(logs, relative_to=out), out / "results.csv")
    assert load_experiment(tmp_path / "results", "figure4")["run_dir"].map(
        lambda d: Path(d).relative_to(tmp_path).parts[0]
    ).tolist() == ["logs", "logs"]
    shutil.rmtree(tmp_path / "logs")
    runs = load_experiment(tmp_path / "results", "figure4")
    assert sorted(Path(d).relative_to(out / "runs").as_posix() for d in runs["run_dir"]) == [
        "ml-1m/A/0",
        "ml-1m/B/0",
    ]
    assert load_experiment(tmp_path / "results", "table3").empty
    assert len(load_experiment(out / "results.csv", "figure4")) == 2  # one CSV as the source


@pytest.mark.slow
def test_make_figures_rewrites_the_committed_files_identically(tmp_path):
    # experiments/figures.py on a copy of results/: every table and figure written, twice the same.
    root = tmp_path / "results"
    shutil.copytree(RESULTS_DIR, root)

    def digests() -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "runs" not in p.relative_to(root).parts
        }

    def regenerate() -> None:
        proc = subprocess.run(
            [sys.executable, str(REPO / "experiments" / "figures.py"), str(root)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    regenerate()
    first = digests()
    regenerate()
    assert digests() == first
    assert "table3/ml-100k/table3.md" in first and "figure4/ml-100k/fig4_convergence.pdf" in first
