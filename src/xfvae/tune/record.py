"""A study's records, written from its storage alone (re-running a finished study re-writes them
and changes nothing): ``trials.csv``, ``selection.json``, ``provenance.json``, ``history.png``,
``summary.md`` under ``results_dir``, and the chosen configuration as
``<tuned_dir>/<data>/<study>.yaml`` (loaded with ``tuned=<data>/<study>``)."""

from __future__ import annotations

import io
import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from xfvae import REPO_ROOT
from xfvae.runs.atomic import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
)
from xfvae.runs.provenance import git_commit
from xfvae.tune import select
from xfvae.tune.study import FINISHED, Context, trial_config

PROTOCOL = (
    "Search trials (the space's anchors first, then Optuna TPE, seeded) on seed {seed}'s "
    "validation RMSE, pruned on the validation curve ({pruner} pruner; anchors never pruned); the "
    "best {top_k} distinct complete configurations and every anchor re-run on seeds {others}; "
    "kept: the lowest mean validation RMSE over seeds {all}."
)
EXTRAS_OFF = (
    " The kept configuration is re-run with its training extras off (no LR schedule, no EMA, the "
    "same other values) on seeds {all}."
)
NEVER_TEST = " The test split is never evaluated."


def write_records(ctx: Context, search: optuna.Study, reruns: optuna.Study) -> dict[str, Any]:
    trials = search.get_trials(deepcopy=False)
    rtrials = reruns.get_trials(deepcopy=False)
    c = ctx.cfg
    res = select.outcome(ctx.space, trials, rtrials, int(c.selection.top_k), ctx.seeds)
    budget = search.user_attrs.get("budget")
    finished = sum(t.state in FINISHED for t in trials)
    status = "complete" if res.complete and budget and finished >= budget else "in progress"
    out = Path(c.results_dir)
    tuned = _write_tuned(ctx, search, res, trials) if status == "complete" and res.chosen else None
    selection = _selection(ctx, res)
    prov = _provenance(ctx, search, trials, rtrials, budget, status, tuned)
    atomic_write_csv(out / "trials.csv", trials_table(ctx, trials, rtrials))
    atomic_write_json(out / "selection.json", selection)
    atomic_write_json(out / "provenance.json", prov)
    atomic_write_bytes(out / "history.png", _history_png(ctx, trials))
    atomic_write_text(out / "summary.md", _summary(ctx, trials, res, selection, prov))
    return {"status": status, "results": out, "tuned": tuned, "selection": selection}


def _seconds(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
    return None


def _rerun_values(rtrials: list[FrozenTrial]) -> dict[tuple[int, int], float]:
    return {
        (t.user_attrs["source"], t.user_attrs["seed"]): float(t.value)
        for t in rtrials
        if t.state == TrialState.COMPLETE and t.user_attrs.get("variant") == select.TUNED
    }


def trials_table(
    ctx: Context, trials: list[FrozenTrial], rtrials: list[FrozenTrial]
) -> pd.DataFrame:
    """One row per search trial: its parameters (labels), validation RMSE per seed, cost."""
    again = _rerun_values(rtrials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "anchor": a.get("anchor")}
        labels = a.get("choices", {})
        row.update({k: labels.get(k) for k in ctx.space.keys})
        per_seed = {ctx.seeds[0]: t.value if t.state == TrialState.COMPLETE else a.get("val_rmse")}
        per_seed.update({s: again[(t.number, s)] for s in ctx.seeds[1:] if (t.number, s) in again})
        for s in ctx.seeds:
            row[f"val_rmse_seed{s}"] = per_seed.get(s)
        full = [per_seed.get(s) for s in ctx.seeds]
        row["val_rmse_mean"] = statistics.fmean(full) if None not in full else None
        row.update(
            seconds=_seconds(t),
            best_epoch=a.get("best_epoch"),
            epochs=a.get("epochs"),
            pruned_at=a.get("pruned_at"),
            duplicate_of=a.get("duplicate_of"),
            continues=a.get("continues"),
            restarted=a.get("restarted"),
            failed=a.get("reaped") or a.get("interrupted") or a.get("error") or a.get("diverged"),
            config_hash=a.get("config_hash"),
            overrides=" ".join(a.get("overrides", [])),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _selection(ctx: Context, res: select.Outcome) -> dict[str, Any]:
    c = ctx.cfg
    seeds = ctx.seeds
    return {
        "protocol": (PROTOCOL + (EXTRAS_OFF if ctx.space.has_extras else "") + NEVER_TEST).format(
            seed=seeds[0],
            top_k=c.selection.top_k,
            others=seeds[1:],
            all=seeds,
            pruner=c.pruner.name,
        ),
        "seeds": seeds,
        "candidates": [
            {
                "trial": t.number,
                "val_rmse": {str(s): v for s, v in res.values[t.number].items()},
                "mean": res.mean(t.number) if len(res.values[t.number]) == len(seeds) else None,
            }
            for t in res.candidates
        ],
        "chosen": None
        if res.chosen is None
        else {
            "trial": res.chosen.number,
            "mean": res.mean(res.chosen.number),
            "val_rmse": {str(s): v for s, v in res.values[res.chosen.number].items()},
            "overrides": res.chosen.user_attrs["overrides"],
        },
        "extras_off": None
        if res.extras_off is None
        else {
            "same_as_chosen": res.extras_off_same,
            "overrides": res.extras_off_overrides,
            "val_rmse": {str(s): v for s, v in res.extras_off.items()},
            "mean": statistics.fmean(res.extras_off.values())
            if len(res.extras_off) == len(seeds)
            else None,
        },
    }


def _rel(path: Any) -> str:
    p = Path(str(path)).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def _provenance(
    ctx: Context,
    search: optuna.Study,
    trials: list[FrozenTrial],
    rtrials: list[FrozenTrial],
    budget: int | None,
    status: str,
    tuned: Path | None,
) -> dict[str, Any]:
    c = OmegaConf.to_container(ctx.cfg, resolve=True)
    every = [t for t in trials + rtrials if t.datetime_start]
    starts = [t.datetime_start for t in every]
    ends = [t.datetime_complete for t in every if t.datetime_complete]
    states = [t.state.name for t in trials]
    return {
        "study": ctx.name,
        "model": c["model"],
        "data": c["data"],
        "status": status,
        "budget": budget,
        "budget_rule": "finished (complete + pruned) search trials; failed ones do not count",
        "trials": {s: states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        # of the FAIL ones: ended by a stop signal (session end, Ctrl-C) or a dead worker,
        # queued again as a new trial that continues from its checkpoint; no failure of the model
        "stopped": sum(
            t.state.name == "FAIL" and ("interrupted" in t.user_attrs or "reaped" in t.user_attrs)
            for t in trials
        ),
        "objective": f"val/rmse, seed {c['seed']} (test split never evaluated)",
        "equal": c["equal"],
        "sampler": {
            "name": "TPESampler(multivariate=True, group=True, constant_liar=True)",
            "seed": c["sampler"]["seed"],
            "n_startup_trials": c["sampler"]["n_startup_trials"],
            "per_trial_seed": "numpy SeedSequence([sampler.seed, draw index]): the trials before "
            "it that drew values (continuations of stopped trials excluded)",
        },
        "pruner": c["pruner"],
        "anchors": {a.name: {"source": a.source, "params": a.labels} for a in ctx.space.anchors},
        "selection": c["selection"],
        "hparams_search": f"conf/hparams_search/{ctx.space.name}.yaml",
        "space": ctx.space.raw,
        "trial_overrides": ctx.base,
        "storage": _rel(ctx.journal_dir / "journal.log"),
        "tuned_config": _rel(tuned) if tuned else None,
        "git_commits": sorted(
            {t.user_attrs["git_commit"] for t in every if "git_commit" in t.user_attrs}
        ),
        "records_git_commit": git_commit(),
        "started": min(starts).isoformat() if starts else None,
        "finished": max(ends).isoformat() if ends and status == "complete" else None,
        "wall_seconds": round((max(ends) - min(starts)).total_seconds(), 1) if ends else None,
        "trial_seconds": round(sum(_seconds(t) or 0.0 for t in every), 1),
        "machines": {
            k.split(":", 1)[1]: v for k, v in search.user_attrs.items() if k.startswith("machine:")
        },
        "optuna": optuna.__version__,
    }


def _history_png(ctx: Context, trials: list[FrozenTrial]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    done = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.user_attrs.get("val_rmse")]
    ax.scatter([t.number for t in done], [t.value for t in done], s=12, label="complete")
    ax.scatter(
        [t.number for t in pruned],
        [t.user_attrs["val_rmse"] for t in pruned],
        s=12,
        marker="x",
        color="grey",
        label="pruned (best before pruning)",
    )
    best, xs, ys = math.inf, [], []
    for t in sorted(done, key=lambda t: t.number):
        best = min(best, t.value)
        xs.append(t.number)
        ys.append(best)
    if trials:  # the best so far holds until the last trial
        xs.append(max(t.number for t in trials))
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if done:
        lo, hi = min(t.value for t in done), sorted(t.value for t in done)[len(done) // 2]
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.5 * (hi - lo + 1e-3))
    ax.set(xlabel="trial", ylabel=f"validation RMSE (seed {ctx.cfg.seed})")
    ax.set_title(f"{ctx.name} on {ctx.cfg.data}: optimisation history", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _write_tuned(
    ctx: Context, search: optuna.Study, res: select.Outcome, trials: list[FrozenTrial]
) -> Path:
    """The chosen values under their keys, with the tuning's epoch cap and early-stopping rule."""
    chosen = res.chosen
    cfg = trial_config(ctx, chosen.user_attrs["overrides"], int(ctx.cfg.seed), "/unused")
    tree: dict[str, Any] = {}
    keys = [
        *ctx.space.values(chosen.user_attrs["choices"]),
        "model.max_epochs",
        "model.patience",
        "callbacks.early_stopping.min_delta",
    ]
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    seeds = ctx.seeds
    c = ctx.cfg
    model = str(c.model)
    off = res.extras_off
    off_text = (
        "n/a (no training extras)"
        if off is None
        else f"{statistics.fmean(off.values()):.4f}"
        + (" (uses none)" if res.extras_off_same else "")
    )
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED")}
    commits = sorted({t.user_attrs.get("git_commit", "?") for t in trials})
    text = (
        f"Tuned {model} on {c.data}: python -m xfvae.tune model={model} data={c.data} "
        f'budget={search.user_attrs.get("budget")} (README "Tuning (equal budget)"). Study '
        f"{ctx.name}: {counts['COMPLETE']} complete + {counts['PRUNED']} pruned trials of "
        f"conf/hparams_search/{ctx.space.name}.yaml, TPE sampler seed {c.sampler.seed}; epoch cap "
        f"{c.equal.max_epochs}, early stopping patience {c.equal.patience}, min_delta "
        f"{c.equal.min_delta} (the same for every model). Selection: the top {c.selection.top_k} "
        f"of seed {seeds[0]}'s validation RMSE and the anchors re-run on seeds "
        f"{', '.join(map(str, seeds[1:]))}; "
        f"kept trial {chosen.number}: mean validation RMSE {res.mean(chosen.number):.4f} (seed "
        f"{seeds[0]}: {chosen.value:.4f}); without the training extras (no schedule, no EMA): "
        f"{off_text}. Records: {_rel(c.results_dir)}/; code: {', '.join(commits)}."
    )
    if ctx.base[2:]:
        text += f" Trials also ran with: {' '.join(ctx.base[2:])}."
    header = ["# @package _global_"]
    header += textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ")
    header.append(f"# Use: python -m xfvae.train tuned={c.data}/{ctx.name} data={c.data}")
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": [{"override /model": model}], **tree}))
    path = Path(c.tuned_dir) / str(c.data) / f"{ctx.name}.yaml"
    atomic_write_text(path, "\n".join(header) + "\n" + body)
    return path


def _pruner_text(p: DictConfig) -> str:
    if p.name == "successive_halving":
        return f"successive-halving pruner (first rung {p.min_resource} epochs, eta {p.reduction_factor})"
    if p.name == "median":
        return f"median pruner after {p.n_startup_trials} trials, {p.n_warmup_steps} warm-up epochs"
    return "no pruning"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _not_counted(prov: dict[str, Any]) -> str:
    """The FAIL trials, split into failures and stopped trials that a later trial continued."""
    stopped = prov.get("stopped", 0)
    failed = prov["trials"]["FAIL"] - stopped
    return (
        f"{failed} failed"
        + (f", {stopped} stopped by a signal and continued as a new trial" if stopped else "")
        + "; neither counted"
    )


def _summary(
    ctx: Context,
    trials: list[FrozenTrial],
    res: select.Outcome,
    selection: dict[str, Any],
    prov: dict[str, Any],
) -> str:
    c = ctx.cfg
    seeds = ctx.seeds
    n = prov["trials"]
    lines = [
        f"# Tuning: {ctx.name} on {c.data}",
        "",
        f"Status: **{prov['status']}**; budget {prov['budget']} finished trials "
        f"({n['COMPLETE']} complete, {n['PRUNED']} pruned; {_not_counted(prov)}). "
        f"Space: `{prov['hparams_search']}`; epoch cap {c.equal.max_epochs}, early stopping "
        f"patience {c.equal.patience} (min_delta {c.equal.min_delta}); TPE sampler seed "
        f"{c.sampler.seed}; {_pruner_text(c.pruner)}; anchors (tried first, never pruned): "
        + ", ".join(f"{a.name} ({a.source})" for a in ctx.space.anchors)
        + ".",
        "",
        f"Protocol: {selection['protocol']}",
        "",
        "## Selection",
        "",
        "| trial | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---:|" + "---:|" * (len(seeds) + 1),
    ]
    for cand in selection["candidates"]:
        vals = [cand["val_rmse"].get(str(s)) for s in seeds]
        mark = " (kept)" if res.chosen is not None and cand["trial"] == res.chosen.number else ""
        lines.append(
            f"| {cand['trial']}{mark} | "
            + " | ".join(_fmt(v) for v in vals)
            + f" | {_fmt(cand['mean'])} |"
        )
    off = selection["extras_off"]
    if res.chosen is not None:
        lines += [
            "",
            f"Kept: trial {res.chosen.number}, `{' '.join(res.chosen.user_attrs['overrides'])}`.",
        ]
        if prov["tuned_config"]:
            lines.append(f"Tuned config: `{prov['tuned_config']}` (`tuned={c.data}/{ctx.name}`).")
    if off is not None:
        vals = " / ".join(_fmt(off["val_rmse"].get(str(s))) for s in seeds)
        same = " (the kept configuration uses no extra)" if off["same_as_chosen"] else ""
        lines += [
            "",
            "## Training extras",
            "",
            f"Kept configuration without LR schedule and EMA{same}: validation RMSE {vals} "
            f"(seeds {', '.join(map(str, seeds))}), mean {_fmt(off['mean'])}; with them: mean "
            f"{_fmt(selection['chosen']['mean'] if selection['chosen'] else None)}.",
        ]
    best = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number)
    )[:10]
    lines += [
        "",
        "## Best search trials (seed-0 validation RMSE)",
        "",
        "| trial | val RMSE | epochs | parameters |",
        "|---:|---:|---:|---|",
    ]
    for t in best:
        params = ", ".join(
            f"{k.removeprefix('model.')}={v}" for k, v in t.user_attrs.get("choices", {}).items()
        )
        lines.append(f"| {t.number} | {t.value:.4f} | {t.user_attrs.get('epochs')} | {params} |")
    lines += [
        "",
        "![optimisation history](history.png)",
        "",
        f"Wall time {prov['wall_seconds']} s (trials: {prov['trial_seconds']} s in all); hosts "
        f"{', '.join(sorted(prov['machines']))}; code {', '.join(prov['git_commits'])}. "
        "All trials: `trials.csv`; settings: `provenance.json`.",
        "",
    ]
    return "\n".join(lines)
