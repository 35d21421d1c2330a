"""The docs stay true: every relative link resolves (anchors included), every repository path,
`make <target>` and `python -m <module>` they name exists, every generated block equals what
`make figures` writes from the committed results, and `make help` lists every target."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import doc_blocks  # noqa: E402

DOCS = sorted(
    [ROOT / "README.md", ROOT / "results" / "README.md", ROOT / "benchmarks" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
MAKE = re.compile(r"\bmake ([a-z][a-z0-9-]*)")
PYTHON_M = re.compile(r"python -m ([A-Za-z_][\w.]*)")
#: A path of this repository in backticks (placeholders such as <data> make it a pattern, not a path).
REPO_PATH = re.compile(
    r"`((?:src|baselines|tests|benchmarks|experiments|conf|results|notebooks|docs)/[\w./-]+?)"
    r"(?:::\w+)?`"
)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: Path) -> set[str]:
    text = CODE.sub("", path.read_text()) if path.suffix == ".md" else ""
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    text = doc.read_text()
    problems = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        where = f"{doc.relative_to(root)}:{_line(text, m.start())}"
        if not path.exists():
            problems.append(f"{where}: link to {target!r}: no such file {path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            problems.append(f"{where}: link to {target!r}: no heading with anchor #{anchor}")
    return problems


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))


def in_code(doc: Path):
    """(line, code) of every inline code span and fenced block of ``doc``."""
    text = doc.read_text()
    for m in CODE.finditer(text):
        yield _line(text, m.start()), m.group(0)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert not broken_links(doc), "\n".join(broken_links(doc))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(doc):
    targets = make_targets()
    missing = [
        f"{doc.relative_to(ROOT)}:{line}: `make {t}` is not a target of the Makefile"
        for line, code in in_code(doc)
        for t in MAKE.findall(code)
        if t not in targets
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_module_named_imports(doc):
    missing = [
        f"{doc.relative_to(ROOT)}:{line}: `python -m {module}`: no such module"
        for line, code in in_code(doc)
        for module in PYTHON_M.findall(code)
        if importlib.util.find_spec(module) is None
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(doc):
    text = doc.read_text()
    missing = [
        f"{doc.relative_to(ROOT)}:{_line(text, m.start())}: `{m.group(1)}` does not exist"
        for m in REPO_PATH.finditer(text)
        if not (ROOT / m.group(1)).exists() and not (doc.parent / m.group(1)).exists()
    ]
    assert not missing, "\n".join(missing)


def test_generated_blocks_equal_what_make_figures_writes():
    stale = doc_blocks.update(check=True)
    assert not stale, f"{stale}: generated blocks differ from the results; run `make figures`"
    names = {
        name for doc in doc_blocks.DOCS for name in doc_blocks.blocks((ROOT / doc).read_text())
    }
    assert names == set(doc_blocks.GENERATORS), "every generator fills a block somewhere"


def test_a_generated_block_that_drifts_is_found(tmp_path):
    text = (ROOT / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| cross-feedback VAE |"))
    drifted = text.replace(row, row.replace("| 0.", "| 1.", 1))  # a hand edit of the snapshot
    assert drifted != text
    assert doc_blocks.render(drifted) == text


def test_figure4_block_reads_each_runs_curve(tmp_path):
    """Minimum (and its epoch) per seed, mean of the minima, mean at the last epoch, seconds."""
    base = tmp_path / "results" / "figure4" / doc_blocks.DATA
    curves = {  # seed -> test RMSE per epoch (and seconds per epoch)
        0: ([1.2, 0.95, 0.91, 0.93], [2.0, 1.0, 1.0, 1.0]),
        1: ([1.1, 0.90, 0.92, 0.97], [3.0, 3.0, 3.0, 3.0]),
    }
    rows = []
    for seed, (rmse, secs) in curves.items():
        run = base / "runs" / doc_blocks.DATA / "E" / f"seed{seed}"
        run.mkdir(parents=True)
        pd.DataFrame({"epoch": range(4), "test_rmse": rmse, "seconds": secs}).to_csv(
            run / "history.csv", index=False
        )
        rows.append({"status": "complete", "seed": seed, "setting": "variant=E",
                     "run_dir": f"/x/logs/figure4/{doc_blocks.DATA}/E/seed{seed}",
                     "test/rmse": min(rmse)})  # fmt: skip
    pd.DataFrame(rows).to_csv(base / "results.csv", index=False)
    table = doc_blocks.figure4(tmp_path)
    assert "test RMSE at epoch 3, mean" in table
    line = next(row for row in table.splitlines() if row.startswith("| E:"))
    assert (
        line
        == "| E: cross feedback + attention, L' = 1 | 0.910 (2) / 0.900 (1) | 0.905 | 0.950 | 1.0-3.0 |"
    )


def test_the_checker_finds_a_planted_broken_link(tmp_path):
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    (tmp_path / "README.md").write_text("# Top\n\n## Two words\n")
    doc.write_text(
        "[ok](../README.md) [anchor](../README.md#two-words) [web](https://example.org)\n"
        "[gone](missing.md)\n[bad anchor](../README.md#nowhere)\n"
    )
    problems = broken_links(doc, root=tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("docs/page.md:2: link to 'missing.md'")
    assert "no heading with anchor #nowhere" in problems[1]


def test_make_help_lists_every_target_with_one_line():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert listed == make_targets(), f"without a help line: {sorted(make_targets() - listed)}"


def test_front_page_is_short_and_links_every_doc():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_screen = "\n".join(text.splitlines()[:40])
    assert "make reproduce-table3" in first_screen and "make test" in first_screen
    linked = {m.group(1).partition("#")[0] for m in LINK.finditer(text)}
    for doc in DOCS:
        if doc != ROOT / "README.md":
            assert str(doc.relative_to(ROOT)) in linked, f"README.md does not link {doc}"
