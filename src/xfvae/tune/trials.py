"""Running trials against the shared study: the search loop (seed 0, pruned, until the budget
has finished) and the selection's re-runs (queued jobs, each run once by whichever worker takes
it). A trial records its owner, heartbeat, overrides, run folder and outcome as user attributes.

A search trial stopped from outside (a stop signal, or its process found dead) is not a verdict
on its configuration: it is failed (it does not count) and queued again with the same values and
run folder, so the next worker resumes it from ``checkpoints/last.ckpt`` with its pruning curve;
where that checkpoint is gone (the study continued on another machine from its committed journal)
it trains again from epoch 0 and records ``restarted``. A trial that raised (``error``) or
diverged is not queued again. Run folders are recorded relative to ``storage_dir``.

The space's anchors are queued before the first trial (in their order; they count within the
budget and are never pruned, so each reaches the selection with its full value)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path

import optuna
import pytorch_lightning as pl
from optuna.trial import FrozenTrial, TrialState

from xfvae.runs.provenance import config_hash, git_commit
from xfvae.runs.signals import RunInterrupted
from xfvae.train import train
from xfvae.training.callbacks import warmup_epochs
from xfvae.training.task import NonFiniteLossError
from xfvae.tune import select
from xfvae.tune.study import (
    FINISHED,
    Context,
    TuneError,
    is_dead,
    locked,
    owner,
    reap,
    trial_config,
)

log = logging.getLogger(__name__)
#: A trial that raises is marked failed (it does not count) and the study goes on; this many
#: failures in a row mean something is wrong beyond one configuration, and the worker stops.
MAX_FAILURES_IN_A_ROW = 3


class _Failures:
    """Runs one trial; whatever it raises marks it FAIL (so it neither counts nor blocks)."""

    def __init__(self, what: str):
        self.what, self.count = what, 0

    def __call__(self, trial: optuna.Trial, run, *args) -> None:
        try:
            run(*args)
        except BaseException as e:
            stopped = isinstance(e, RunInterrupted) or not isinstance(e, Exception)
            with contextlib.suppress(Exception):  # the trial may be finished already
                trial.set_user_attr("interrupted" if stopped else "error", repr(e)[:300])
            trial.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if stopped:
                raise  # a stop signal or Ctrl-C ends the worker
            self.count += 1
            log.exception("%s %d failed (marked FAIL; it does not count)", self.what, trial.number)
            if self.count >= MAX_FAILURES_IN_A_ROW:
                raise TuneError(
                    f"{self.count} {self.what}s in a row failed, the last with "
                    f"{type(e).__name__}: {e}; see the log above and the trials' run folders"
                ) from e
        else:
            self.count = 0


class TrialReporter(pl.Callback):
    """Reports each epoch's validation RMSE to the trial (the pruner's curve, recorded in the
    journal), stops a trial the pruner finds hopeless (if ``prune``), and keeps the trial's
    heartbeat fresh."""

    def __init__(self, trial: optuna.Trial, prune: bool):
        self.trial, self.prune = trial, prune
        self.pruned_at: int | None = None
        self._beat = 0.0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if time.time() - self._beat > 60:
            self._beat = time.time()
            self.trial.set_user_attr("heartbeat", self._beat)
        value = trainer.callback_metrics.get("val/rmse")
        if trainer.current_epoch < warmup_epochs(pl_module):
            return  # a warm-up epoch (BPMF's burn-in) is no evidence against the trial
        if value is None or not math.isfinite(float(value)):
            return  # early stopping (check_finite) ends a diverged run
        self.trial.report(float(value), step=trainer.current_epoch)  # the curve, also unpruned
        # asked also when not pruning: a successive-halving pruner records the trial's rung here,
        # so an anchor's curve informs the pruning of the others
        if self.trial.should_prune() and self.prune:
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


def _start(study: optuna.Study) -> optuna.Trial:
    """Ask for a trial and record its owner (call under :func:`locked`)."""
    trial = study.ask()
    for k, v in {**owner(), "heartbeat": time.time()}.items():
        trial.set_user_attr(k, v)
    return trial


def _fit(ctx: Context, trial: optuna.Trial, params: list[str], seed: int, out: Path, prune: bool):
    """Train one configuration; returns (metrics or None if it diverged, reporter)."""
    cfg = trial_config(ctx, params, seed, out)
    trial.set_user_attr("config_hash", config_hash(cfg))
    trial.set_user_attr("git_commit", git_commit())
    trial.set_user_attr("run_dir", _relative(ctx, out))
    reporter = TrialReporter(trial, prune)
    try:
        metrics = train(cfg, callbacks=[reporter])
    except NonFiniteLossError as e:
        trial.set_user_attr("diverged", str(e)[:300])
        return None, reporter
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # tuning never tests: no use for them
    for k in ("best_epoch", "epochs", "train_seconds"):
        trial.set_user_attr(k, metrics.get(k))
    value = float(metrics.get("val/rmse", float("nan")))
    trial.set_user_attr("val_rmse", value if math.isfinite(value) else None)
    if not math.isfinite(value):
        trial.set_user_attr("diverged", "no finite validation RMSE")
        return None, reporter
    return metrics, reporter


def _run_dir(ctx: Context, number: int) -> Path:
    return ctx.storage_dir / "runs" / str(number)


def _relative(ctx: Context, path: Path) -> str:
    """A run folder as recorded: relative to ``storage_dir``, so the journal moves with a clone."""
    return (
        str(path.relative_to(ctx.storage_dir))
        if path.is_relative_to(ctx.storage_dir)
        else str(path)
    )


def queue_anchors(ctx: Context, study: optuna.Study) -> None:
    """Queue the space's anchors once, before any other trial (call under :func:`locked`)."""
    if "anchors" in study.user_attrs:
        return
    for a in ctx.space.anchors:
        study.enqueue_trial(ctx.space.optuna_params(a.labels), user_attrs={"anchor": a.name})
    study.set_user_attr("anchors", [a.name for a in ctx.space.anchors])


def queue_stopped(ctx: Context, study: optuna.Study) -> None:
    """Queue every stopped, not yet continued search trial again (call under :func:`locked`)."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("continues") for t in trials}
    for t in trials:
        a = t.user_attrs
        if (
            t.state != TrialState.FAIL
            or t.number in continued
            or "overrides" not in a  # stopped before its values were drawn: nothing to go on with
            or "error" in a
            or "diverged" in a
        ):
            continue
        run_dir = a.get("resume_dir", a.get("run_dir", _relative(ctx, _run_dir(ctx, t.number))))
        again = {"continues": t.number, "resume_dir": run_dir}
        if "anchor" in a:
            again["anchor"] = a["anchor"]
        study.enqueue_trial(t.params, user_attrs=again)
        log.info(
            "%s trial %d was stopped: queued again to resume from %s", ctx.name, t.number, run_dir
        )


def run_search_trial(ctx: Context, study: optuna.Study, trial: optuna.Trial) -> None:
    labels = ctx.space.sample(trial)  # a queued continuation's values are fixed: the same ones
    params = ctx.space.overrides(labels)
    trial.set_user_attr("choices", labels)
    trial.set_user_attr("overrides", params)
    twin = next(
        (
            t
            for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.user_attrs.get("overrides") == params
        ),
        None,
    )
    if twin is not None:  # TPE proposed a finished configuration again: same outcome, no training
        _copy_outcome(study, trial, twin)
        return
    out = _run_dir(ctx, trial.number)
    stopped = trial.user_attrs.get("continues")
    if stopped is not None:  # resume the stopped trial's run; its curve so far is the pruner's
        out = ctx.storage_dir / trial.user_attrs["resume_dir"]
        if (out / "checkpoints" / "last.ckpt").is_file():
            curve = study.get_trials(deepcopy=False)[stopped].intermediate_values
            for step, v in sorted(curve.items()):
                trial.report(v, step)
        else:  # e.g. continued on another machine: no checkpoint came with the journal
            why = f"no checkpoint in {trial.user_attrs['resume_dir']}: trained again from epoch 0"
            trial.set_user_attr("restarted", why)
            log.warning("%s trial %d (continues %d): %s", ctx.name, trial.number, stopped, why)
            shutil.rmtree(out, ignore_errors=True)  # the stopped trial's own, partial folder
    prune = "anchor" not in trial.user_attrs  # an anchor's full value reaches the selection
    metrics, reporter = _fit(ctx, trial, params, int(ctx.cfg.seed), out, prune)
    if metrics is None or reporter.pruned_at is not None:
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at", reporter.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, float(metrics["val/rmse"]))
    log.info("%s trial %d finished", ctx.name, trial.number)


def _copy_outcome(study: optuna.Study, trial: optuna.Trial, twin: FrozenTrial) -> None:
    trial.set_user_attr("duplicate_of", twin.number)
    for k in (
        "val_rmse",
        "best_epoch",
        "epochs",
        "train_seconds",
        "pruned_at",
        "diverged",
        "config_hash",
    ):
        if k in twin.user_attrs:
            trial.set_user_attr(k, twin.user_attrs[k])
    for step, v in sorted(twin.intermediate_values.items()):
        trial.report(v, step)
    if twin.state == TrialState.COMPLETE:
        study.tell(trial, twin.value)
    else:
        study.tell(trial, state=TrialState.PRUNED)
    log.info(
        "%s trial %d repeats trial %d: outcome copied", study.study_name, trial.number, twin.number
    )


def search(ctx: Context, search_study: optuna.Study) -> None:
    """Start trials until ``budget`` have finished (running ones count while deciding)."""
    budget = int(ctx.cfg.budget)
    said = None
    attempt = _Failures("search trial")
    with locked(ctx):
        check_cores(ctx, search_study)
        queue_anchors(ctx, search_study)
    while True:
        with locked(ctx):
            reap(ctx, search_study)
            trials = search_study.get_trials(deepcopy=False)
            done = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done >= budget:
                return
            queue_stopped(ctx, search_study)
            trial = _start(search_study) if done + running < budget else None
        if trial is None:
            if said != (done, running):
                log.info("%s: %d finished, %d running elsewhere; waiting", ctx.name, done, running)
                said = (done, running)
            time.sleep(float(ctx.cfg.poll_s))
            continue
        attempt(trial, run_search_trial, ctx, search_study, trial)


def check_cores(ctx: Context, study: optuna.Study) -> None:
    """Refuse a worker that would make this host's tuning workers, times torch's threads each,
    exceed its cores (several workers on one study share them), unless ``oversubscribe=true``."""
    import torch

    host, me = platform.node(), os.getpid()
    others = {
        t.user_attrs["pid"]
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == host
        and t.user_attrs.get("pid") != me
        and is_dead(t, 0) is None
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    if (len(others) + 1) * threads > (cores or 1) and not ctx.cfg.oversubscribe:
        raise TuneError(
            f"{len(others)} other worker(s) of study {ctx.name!r} run on this host, each trial "
            f"with {threads} torch thread(s): one more would need {(len(others) + 1) * threads} "
            f"of its {cores} cores. Wait for them, run with fewer threads (OMP_NUM_THREADS=1), "
            "or pass oversubscribe=true to share the cores anyway"
        )


def rerun(ctx: Context, search_study: optuna.Study, reruns: optuna.Study) -> None:
    """The selection's jobs (top configurations on more seeds, then the chosen one without its
    extras), queued once each and run by whichever worker takes them."""
    attempt = _Failures("re-run")
    while True:
        with locked(ctx):
            reap(ctx, search_study)
            reap(ctx, reruns)
            plan = select.outcome(
                ctx.space,
                search_study.get_trials(deepcopy=False),
                reruns.get_trials(deepcopy=False),
                int(ctx.cfg.selection.top_k),
                ctx.seeds,
            )
            for job in plan.missing:
                reruns.enqueue_trial({}, user_attrs=job)
            states = [t.state for t in reruns.get_trials(deepcopy=False)]
            trial = _start(reruns) if TrialState.WAITING in states else None
        if trial is not None:
            attempt(trial, run_rerun, ctx, trial)
        elif plan.complete:
            return
        else:
            time.sleep(float(ctx.cfg.poll_s))


def run_rerun(ctx: Context, trial: optuna.Trial) -> None:
    job = trial.user_attrs
    out = ctx.storage_dir / "reruns" / str(job["job"])
    metrics, _ = _fit(ctx, trial, list(job["overrides"]), int(job["seed"]), out, prune=False)
    value = float(metrics["val/rmse"]) if metrics is not None else math.inf  # diverged: worst
    trial.study.tell(trial, value)
    log.info("%s rerun %s: val RMSE %.5f", ctx.name, job["job"], value)
