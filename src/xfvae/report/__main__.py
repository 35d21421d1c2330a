"""``python -m xfvae.report <command>``: collect runs, then statistics, tables and figures from the
collected CSV. Run with ``-h`` (or ``<command> -h``) for the options."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

from xfvae.report import plots, tables  # noqa: E402
from xfvae.report.collect import collect, load_results, select, write_results  # noqa: E402
from xfvae.report.comparison import compare, compare_scores  # noqa: E402
from xfvae.report.experiments import with_run_dirs  # noqa: E402
from xfvae.report.names import (  # noqa: E402
    METRICS,
    RANKING_METRICS,
    metric_column,
    protocol_column,
    protocols_in,
    short_metric,
)
from xfvae.report.rank_tests import PERMUTATIONS  # noqa: E402
from xfvae.runs.atomic import atomic_write_csv, atomic_write_json, atomic_write_text  # noqa: E402


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", metric.removeprefix("test/"))


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _selected(args):
    """The selected complete runs, and the whole CSV (for its base folder)."""
    df = load_results(args.results)
    return select(df, args.experiment, _list(args.data), _list(args.models)), df


def cmd_collect(args) -> int:
    out = Path(args.out)
    df = collect(args.roots, relative_to=out.parent)
    if df.empty:
        print(
            f"no run directories (holding .hydra/config.yaml) under {args.roots}", file=sys.stderr
        )
        return 1
    write_results(df, out)
    bad = df[df["status"] != "complete"]
    for row in bad.itertuples():
        print(f"{row.status}: {row.run_dir}: {row.error}", file=sys.stderr)
    print(f"{out}: {len(df)} run(s), {len(df) - len(bad)} complete, {len(bad)} incomplete/invalid")
    return 0


def _stats_options(args) -> dict:
    return {
        "alpha": args.alpha,
        "top": args.top,
        "drop_incomplete": args.drop_incomplete,
        "permutations": args.permutations,
        "seed": args.permutation_seed,
    }


def _comparisons(args):
    """(metric, Comparison) pairs: from tidy results, or from a wide blocks x models table."""
    if args.wide:
        scores = pd.read_csv(args.results, index_col=0)
        blocks = (str(scores.index.name),)
        for metric in _list(args.metrics):
            try:
                c = compare_scores(scores, metric, blocks=blocks, **_stats_options(args))
            except ValueError as exc:
                raise ValueError(f"{args.results}: {exc}") from exc
            yield metric, c
        return
    df, _ = _selected(args)
    for metric in _list(args.metrics):
        c = compare(df, metric, blocks=args.blocks, model_col=args.compare, **_stats_options(args))
        yield metric_column(metric, df.columns), c


def cd_stem(slug: str, c, top: int | None) -> str:
    """``fig2_cd_<metric>`` only when the blocks are data sets (the paper's Figure 2), else
    ``cd_<metric>_by_<blocks>``; ``_top<K>`` with --top."""
    suffix = f"_top{top}" if top else ""
    if c.blocks_are_data_sets:
        return f"fig2_cd_{slug}{suffix}"
    return f"cd_{slug}_by_{'-'.join(re.sub(r'[^A-Za-z0-9]+', '', b) for b in c.blocks)}{suffix}"


def cmd_stats(args) -> int:
    out = Path(args.out)
    suffix = f"_top{args.top}" if args.top else ""
    summaries, results, figures = [], {}, {}
    for metric, c in _comparisons(args):
        slug = _slug(metric)
        summaries.append(c.summary())
        results[short_metric(metric)] = c.to_dict()
        atomic_write_text(out / f"stats_{slug}{suffix}.txt", c.summary() + "\n")
        if not args.no_figures:
            stem = cd_stem(slug, c, args.top)
            figures[stem] = plots.save_figure(plots.cd_diagram(c), out / stem)[0]
    atomic_write_json(out / f"stats{suffix}.json", results)
    print("\n\n".join(summaries))
    written = [f"stats{suffix}.json", f"stats_*{suffix}.txt"] + [f"{f}.png/pdf" for f in figures]
    print(f"\nwritten to {out}/: {', '.join(written)}")
    if args.wandb:
        _log_wandb(args, texts=dict(zip(results, summaries, strict=True)), figures=figures)
    return 0


def cmd_table(args) -> int:
    out = Path(args.out)
    if args.number == 1:
        if args.data_stats:
            source = pd.read_csv(args.data_stats)
        else:
            source = load_results(args.results)
            source = source[source["status"] == "complete"]
        table = tables.table1(source, paper=not args.no_paper)
    else:
        df, _ = _selected(args)
        build = tables.table3 if args.number == 3 else tables.table4
        table = build(df, metrics=_list(args.metrics), paper=not args.no_paper)
    md, tex = tables.to_markdown(table), tables.to_latex(table, label=f"tab:table{args.number}")
    atomic_write_text(out / f"table{args.number}.md", md)
    atomic_write_text(out / f"table{args.number}.tex", tex)
    print(md)
    print(f"written to {out}/table{args.number}.md and .tex")
    texts = {f"table{args.number}": md}
    if args.number == 3 and protocols_in(df.columns):  # the other protocols beside Table 3
        texts["table3_protocols"] = tables.to_markdown(tables.protocol_table(df))
        texts["table3_patterns"] = tables.to_markdown(tables.pattern_table(df))
        for name in ("table3_protocols", "table3_patterns"):
            atomic_write_text(out / f"{name}.md", texts[name])
        print(
            f"and every protocol's ranking metrics: {out}/table3_protocols.md, table3_patterns.md"
        )
    if args.wandb:
        _log_wandb(args, texts=texts)
    return 0


def cmd_fig3(args) -> int:
    df, _ = _selected(args)
    paths = plots.save_figure(
        plots.plot_subsampling(df, _list(args.metrics)), Path(args.out) / "fig3_subsampling"
    )
    print("written:", *paths)
    if args.wandb:
        _log_wandb(args, figures={"fig3_subsampling": paths[0]})
    return 0


def cmd_fig4(args) -> int:
    df, _ = _selected(args)
    # run_dir as collected, else its archived copy beside the CSV (runs/): a fresh clone has no logs/
    histories = plots.load_histories(with_run_dirs(df, Path(args.results).parent), base_dir=None)
    fig = plots.plot_convergence(histories, column=args.column, max_epoch=args.max_epoch)
    paths = plots.save_figure(fig, Path(args.out) / "fig4_convergence")
    print("written:", *paths)
    if args.wandb:
        _log_wandb(args, figures={"fig4_convergence": paths[0]})
    return 0


def cmd_protocols(args) -> int:
    """Every model's ranking metrics under each recorded protocol, and the paper's pattern."""
    df, _ = _selected(args)
    protocols = _list(args.protocols) or protocols_in(df.columns)
    out = Path(args.out)
    written = []
    for protocol in protocols:
        cols = {protocol_column(protocol, m): m for m in (*RANKING_METRICS, "n_users_ranked")}
        keep = ["model", "data", "seed", "test/rmse", *cols, "git_commit", "config_hash", "run_dir"]
        rows = df.reindex(columns=keep).rename(columns=cols | {"test/rmse": "rmse"})
        rows = rows.sort_values(["data", "model", "seed"], kind="stable")
        atomic_write_csv(out / f"protocol_{protocol}.csv", rows)
        atomic_write_text(
            out / f"protocol_{protocol}.md",
            tables.to_markdown(tables.protocol_table(df, [protocol])),
        )
        written.append(f"protocol_{protocol}.csv/.md")
    table = tables.protocol_table(df, protocols)
    md = tables.to_markdown(table)
    patterns = tables.to_markdown(tables.pattern_table(df, protocols))
    atomic_write_text(out / "protocols.md", md)
    atomic_write_text(out / "protocols.tex", tables.to_latex(table, label="tab:protocols"))
    atomic_write_text(out / "patterns.md", patterns)
    print(patterns)
    print(f"written to {out}/: protocols.md/.tex, patterns.md, {', '.join(written)}")
    if args.wandb:
        _log_wandb(args, texts={"protocols": md, "patterns": patterns})
    return 0


def _log_wandb(args, figures=None, texts=None) -> None:
    from xfvae.report.wandb_log import log_report

    group = args.wandb_group or args.experiment or "report"
    where = log_report(group, figures=figures, texts=texts, directory=args.out)
    print(f"logged to W&B group {group!r} ({where})")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results CSV written by `collect`")
    p.add_argument(
        "--experiment",
        help="experiment to report ('' = runs without one); required when the CSV mixes experiments",
    )
    p.add_argument("--data", help="comma-separated data sets to keep")
    p.add_argument("--models", help="comma-separated models to keep")
    p.add_argument("--out", default="results/report", help="output folder (default results/report)")
    p.add_argument(
        "--wandb", action="store_true", help="also log to W&B (offline unless WANDB_MODE is set)"
    )
    p.add_argument("--wandb-group", help="W&B group (default: the experiment name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xfvae.report", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="walk run directories into one tidy CSV")
    p.add_argument("roots", nargs="+", help="folders holding runs (e.g. logs/train)")
    p.add_argument("--out", default="results/results.csv")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "stats",
        help="Friedman (F approximation and permutation p), Nemenyi, Wilcoxon-Holm, CD diagrams",
        description="Demsar's (2006) tests of models over blocks. The paper's blocks are data "
        "sets (Figure 2: its top 4 models, --top 4, over 5 data sets); seeds of one data set as "
        "blocks only measure robustness to the seed. Outputs: stats[_topK].json, "
        "stats_<metric>[_topK].txt, and CD diagrams named fig2_cd_<metric>[_topK] when the "
        "blocks are data sets, else cd_<metric>_by_<blocks>[_topK].",
    )
    _add_selection(p)
    p.add_argument(
        "--metrics",
        default=",".join(METRICS),
        help="comma-separated (default: the five test metrics)",
    )
    p.add_argument(
        "--blocks",
        default="auto",
        help="auto (default): one block per data set (its seeds averaged) when the results hold "
        "several, data x seed for one data set; or columns joined by '+' (data, data+seed, "
        "data+setting ...), which must include data when there are several data sets",
    )
    p.add_argument("--alpha", type=float, default=0.1, help="significance level (paper: 0.1)")
    p.add_argument(
        "--top",
        type=int,
        help="compare only the K best models by average rank over all models, re-ranked among "
        "themselves (paper: 4); output names get _topK",
    )
    p.add_argument(
        "--compare",
        default="model",
        help="column whose values are compared (default model; setting compares e.g. ablation "
        "variants)",
    )
    p.add_argument(
        "--drop-incomplete",
        action="store_true",
        help="drop blocks where a model has a missing/NaN score or lacks seeds the others have "
        "(default: such input is an error); the dropped blocks are named in every output",
    )
    p.add_argument(
        "--permutations",
        type=int,
        default=PERMUTATIONS,
        help="Monte Carlo resamples for the Friedman permutation p when exact enumeration is too "
        f"large (default {PERMUTATIONS})",
    )
    p.add_argument(
        "--permutation-seed", type=int, default=0, help="seed of those resamples (default 0)"
    )
    p.add_argument("--no-figures", action="store_true", help="skip the CD diagrams")
    p.add_argument(
        "--wide",
        action="store_true",
        help="RESULTS is a wide table: first column the blocks, one column per model, values of "
        "the one metric named by --metrics (e.g. Demsar's Table 6)",
    )
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("table", help="Table 1, 3 or 4 as Markdown and LaTeX")
    p.add_argument("number", type=int, choices=(1, 3, 4))
    _add_selection(p)
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument(
        "--no-paper", action="store_true", help="leave out the paper's published numbers"
    )
    p.add_argument("--data-stats", help="Table 1 only: CSV with data,n_users,n_items,n_ratings")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("fig3", help="metric against sub-sampling percentage (Figure 3)")
    _add_selection(p)
    p.add_argument("--metrics", default=",".join(METRICS))
    p.set_defaults(func=cmd_fig3)

    p = sub.add_parser("fig4", help="test RMSE against iteration per variant (Figure 4)")
    _add_selection(p)
    p.add_argument("--column", default="test_rmse", help="history.csv column (default test_rmse)")
    p.add_argument("--max-epoch", type=int, help="plot epochs up to this one (paper: 100)")
    p.set_defaults(func=cmd_fig4)

    p = sub.add_parser(
        "protocols",
        help="ranking metrics under every recorded protocol (test/<protocol>/...), per model",
    )
    _add_selection(p)
    p.add_argument("--protocols", help="comma-separated (default: every protocol in the results)")
    p.set_defaults(func=cmd_protocols)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the warning machinery when called in-process
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_, **__: print(
            f"warning: {message}", file=sys.stderr
        )
        try:
            return args.func(args)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
