"""One study on disk, shared by any number of worker processes (or cluster jobs on a shared
filesystem): its settings and their check, Optuna's journal file storage, a lock around the few
steps that must not interleave (counting trials and starting one), and the owner (host, pid) of
every running trial, so that a trial whose process died is marked failed and never blocks or
counts. Running the trials is :mod:`xfvae.tune.trials`.

Two Optuna studies live in ``<results_dir>/journal.log`` (committed with the records, so a study
started on one machine continues on another; the trials' run folders stay in ``storage_dir``): ``<study>`` (the search trials, seed 0,
pruned on the validation curve) and ``<study>.reruns`` (the selection's fixed jobs: the top
configurations on more seeds, then the chosen one with its training extras off), queued with
``enqueue_trial`` so that each job runs once whichever worker takes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import psutil
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from xfvae import CONF_DIR
from xfvae.runs.provenance import config_hash, machine
from xfvae.tune.space import Space, load_space

log = logging.getLogger(__name__)

JOURNAL = "journal.log"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Train keys the tuner sets itself: the objective and the equal budget are not per-command.
RESERVED = (
    "seed",
    "evaluation.test",
    "evaluation.test_curve",
    "model.max_epochs",
    "model.patience",
    "callbacks.early_stopping.min_delta",
)


class TuneError(RuntimeError):
    """A study that cannot go on as asked (another study's settings in its folder, bad overrides)."""


# -- the study's settings ------------------------------------------------------------------------
@dataclass
class Context:
    cfg: DictConfig  # the composed tune config (conf/tune.yaml)
    space: Space
    base: list[str]  # train overrides shared by every trial (model, data, the command's extras)
    storage: JournalStorage
    storage_dir: Path  # the trials' run folders (checkpoints: not committed)
    journal_dir: Path  # journal.log and the tuner's lock (committed with the records)

    @property
    def name(self) -> str:
        return str(self.cfg.study)

    @property
    def seeds(self) -> list[int]:
        return [int(self.cfg.seed), *(int(s) for s in self.cfg.selection.seeds)]

    def identity(self) -> dict[str, Any]:
        """Everything that decides the search trials' results (the budget may grow on resume)."""
        c = OmegaConf.to_container(self.cfg, resolve=True)
        return {
            "model": c["model"],
            "data": c["data"],
            "hparams_search": self.space.name,
            "space": self.space.raw,
            "anchors": {a.name: a.labels for a in self.space.anchors},
            "trial_overrides": self.base,
            "seed": c["seed"],
            "equal": c["equal"],
            "sampler": c["sampler"],
            "pruner": c["pruner"],
        }


def make_context(cfg: DictConfig) -> Context:
    """Check the tune config against the model and its space; open the study's storage."""
    base = [f"model={cfg.model}", f"data={cfg.data}", *cfg.get("trial_overrides", [])]
    for o in base[2:]:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in RESERVED or key.startswith("evaluation.test"):
            raise TuneError(
                f"{o}: the tuner sets {key} itself (seed: the tuner's seed=; epochs and "
                "early stopping: equal.max_epochs= / equal.patience= / equal.min_delta=, the same for "
                "every model; the test "
                "split is never evaluated while tuning)"
            )
    train_cfg = compose_train(base)
    name = str(cfg.space_name)
    kind = get_class(train_cfg.model.net._target_).batch_kind
    space = load_space(cfg.hparams_search, name, kind)
    _check_space(space, train_cfg, base, name)
    if cfg.run:
        check_budget(cfg, space)
    storage_dir, journal_dir = Path(cfg.storage_dir), Path(cfg.results_dir)
    journal_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal_dir / JOURNAL)))
    return Context(cfg, space, base, storage, storage_dir, journal_dir)


def check_budget(cfg: DictConfig, space: Space) -> int:
    """``budget``: a whole number of finished search trials, at least the space's anchors (which
    count within it). Checked before anything is written."""
    need = max(1, len(space.anchors))
    what = (
        f"a whole number of finished search trials >= {need} (the same for every model; "
        f"the {len(space.anchors)} anchors of conf/hparams_search/{space.name}.yaml count within it)"
    )
    if OmegaConf.is_missing(cfg, "budget"):
        raise TuneError(f"budget=<n> is required: {what}")
    b = cfg.budget
    if isinstance(b, bool) or not isinstance(b, int) or b < need:
        shown = str(b).lower() if isinstance(b, bool) else b
        raise TuneError(f"budget={shown}: the budget must be {what}")
    return int(b)


def _check_space(space: Space, train_cfg: DictConfig, base: list[str], name: str) -> None:
    where = f"conf/hparams_search/{name}.yaml"
    model = train_cfg.model
    keys = set(space.keys)
    for p in space.params:
        absent = OmegaConf.select(train_cfg, p.key, default="<absent>") == "<absent>"
        if absent and not p.add and p.key.rsplit(".", 1)[0] not in keys:
            raise TuneError(
                f"{where}: {p.key} is not in model={model.name}; fix the key, or mark it "
                "'add: true' if the model config may lack it"
            )
    if space.has_extras and not model.get("optimizer"):
        raise TuneError(f"{where}: model {model.name} has no optimiser, so no training extras")
    for o in base:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in keys:
            raise TuneError(f"{o}: {key} is searched by {where}; drop it from the command line")


def compose_train(overrides: list[str], out_dir: str | Path | None = None) -> DictConfig:
    """The training config of one run, composed as ``tests/conftest.py`` does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    if out_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(out_dir)
    return cfg


def trial_config(ctx: Context, params: list[str], seed: int, out_dir: Path) -> DictConfig:
    """Fixed settings, then the command's extras, then the sampled values (which win)."""
    eq = ctx.cfg.equal
    fixed = [
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"model.max_epochs={int(eq.max_epochs)}",
        f"model.patience={int(eq.patience)}",
        f"++callbacks.early_stopping.min_delta={float(eq.min_delta)!r}",
    ]
    never_test = ["evaluation.test=false", "evaluation.test_curve=false", f"seed={seed}"]
    return compose_train(fixed + ctx.base + never_test + params, out_dir)


# -- storage, lock, owners -----------------------------------------------------------------------
@contextlib.contextmanager
def locked(ctx: Context) -> Iterator[None]:
    """The tuner's own lock (``tuner.lock`` beside the journal): count-then-start is atomic."""
    lock = JournalFileSymlinkLock(str(ctx.journal_dir / "tuner"), grace_period=30)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def owner() -> dict[str, Any]:
    me = psutil.Process()
    return {"host": platform.node(), "pid": os.getpid(), "pid_started": me.create_time()}


def is_dead(t: FrozenTrial, stale_after_s: float) -> str | None:
    """Why a RUNNING trial's owner is gone, or None if it may be alive."""
    a = t.user_attrs
    if "host" not in a:  # killed in the moment between starting the trial and recording its owner
        started = t.datetime_start.timestamp() if t.datetime_start else time.time()
        return "no owner recorded" if time.time() - started > 60 else None
    if a["host"] == platform.node():
        try:
            p = psutil.Process(int(a["pid"]))
            if p.status() == psutil.STATUS_ZOMBIE or abs(p.create_time() - a["pid_started"]) > 1:
                return f"process {a['pid']} on {a['host']} is gone"
        except psutil.NoSuchProcess:
            return f"process {a['pid']} on {a['host']} is gone"
        return None
    beat = a.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else time.time())
    if stale_after_s and time.time() - beat > stale_after_s:
        return f"no heartbeat from {a['host']} pid {a['pid']} for {time.time() - beat:.0f} s"
    return None


def reap(ctx: Context, study: optuna.Study) -> None:
    """Mark the RUNNING trials of dead processes FAIL (call under :func:`locked`)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = is_dead(t, float(ctx.cfg.stale_after_s))
        if why:
            log.warning(
                "%s trial %d: %s; marked FAIL (it does not count)", study.study_name, t.number, why
            )
            tid = ctx.storage.get_trial_id_from_study_id_trial_number(
                ctx.storage.get_study_id_from_name(study.study_name), t.number
            )
            ctx.storage.set_trial_user_attr(tid, "reaped", why)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random draws for a trial are seeded from (seed, its draw index): the number of
    earlier trials that drew values (anchors included; continuations of stopped trials, which
    repeat their values, and trials stopped before drawing excluded). So two workers started at
    the same moment never propose the same values, a study run again from scratch proposes the
    same sequence, and an interrupted, continued study tries the configurations of an
    uninterrupted one in the same order."""

    def __init__(self, seed: int, n_startup_trials: int):
        self.seed, self.n_startup_trials = int(seed), int(n_startup_trials)
        self._tpe = self._make(0)

    def _make(self, index: int) -> optuna.samplers.TPESampler:
        seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        # multivariate + group: one joint model per group of parameters that occur together
        # (the conditional parameters of the spaces); constant liar: running trials count as bad
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=self.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
            warn_independent_sampling=False,
        )

    def before_trial(self, study, trial):
        self._tpe = self._make(draw_index(study.get_trials(deepcopy=False), trial.number))
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._tpe.after_trial(study, trial, state, values)


def draw_index(trials: list[FrozenTrial], number: int) -> int:
    """How many trials before trial ``number`` drew their values (see :class:`TrialSeededTPE`)."""
    return sum(
        t.number < number
        and "continues" not in t.user_attrs
        and not (t.state == TrialState.FAIL and "choices" not in t.user_attrs)
        for t in trials
    )


def make_pruner(c: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner on the validation curve, the same for every model (conf/tune.yaml ``pruner``)."""
    if c.name == "successive_halving":  # rungs at min_resource * eta^k epochs after any warm-up
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=int(c.min_resource), reduction_factor=int(c.reduction_factor)
        )
    if c.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(c.n_startup_trials), n_warmup_steps=int(c.n_warmup_steps)
        )
    if c.name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"pruner.name={c.name!r}: one of successive_halving, median, none")


def open_studies(ctx: Context) -> tuple[optuna.Study, optuna.Study]:
    """The search and rerun studies (created on first use; refused if the folder holds a study
    with other settings)."""
    c = ctx.cfg
    sampler = TrialSeededTPE(c.sampler.seed, c.sampler.n_startup_trials)
    pruner = make_pruner(c.pruner)
    identity = ctx.identity()
    with locked(ctx):
        # load what exists (create_study would append a duplicate "create" record to the journal
        # each time it opens a study: noise in a committed, append-only file)
        names = set(optuna.get_all_study_names(storage=ctx.storage))

        def study(name: str, **kw) -> optuna.Study:
            if name in names:
                return optuna.load_study(study_name=name, storage=ctx.storage, **kw)
            return optuna.create_study(
                study_name=name, storage=ctx.storage, direction="minimize", **kw
            )

        search = study(ctx.name, sampler=sampler, pruner=pruner)
        reruns = study(f"{ctx.name}.reruns", sampler=optuna.samplers.RandomSampler(0))
        stored = search.user_attrs.get("identity")
        if stored is None:
            search.set_user_attr("identity", identity)
            search.set_user_attr("identity_hash", config_hash(identity))
        elif config_hash(stored) != config_hash(identity):
            diff = sorted(k for k in identity if stored.get(k) != identity[k])
            raise TuneError(
                f"{ctx.journal_dir / JOURNAL}: study {ctx.name!r} was started with other settings "
                f"({', '.join(diff)} differ); run it with the same ones, or start another study "
                "(study=<name> or results_dir=<folder>)"
            )
        host = platform.node()
        if f"machine:{host}" not in search.user_attrs:
            search.set_user_attr(f"machine:{host}", machine())
    return search, reruns
