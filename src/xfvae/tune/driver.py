"""Compose the tune config from command-line overrides, run the study, write its records."""

from __future__ import annotations

import logging
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from xfvae import CONF_DIR
from xfvae.tune.record import write_records
from xfvae.tune.study import TuneError, make_context, open_studies
from xfvae.tune.trials import rerun, search

log = logging.getLogger(__name__)


def tuner_keys() -> set[str]:
    """The top-level keys of conf/tune.yaml: everything else goes to the trials."""
    return {k for k in OmegaConf.load(CONF_DIR / "tune.yaml") if k != "defaults"} | {
        "hparams_search"
    }


def compose_tune(args: list[str]) -> DictConfig:
    """``model=``, ``data=`` and the tuner's keys configure the study; any other override is
    passed to every trial's training config (``trial_overrides``)."""
    keys = tuner_keys()
    tuner: list[str] = []
    trial: list[str] = []
    choice: dict[str, str] = {}
    for arg, o in zip(args, OverridesParser.create().parse_overrides(args), strict=True):
        key = o.key_or_group
        if key in ("model", "data") and not o.is_add() and not o.is_delete():
            choice[key] = str(o.value())
            if not (CONF_DIR / key / f"{choice[key]}.yaml").is_file():
                options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
                raise TuneError(f"{arg}: no conf/{key}/{choice[key]}.yaml; one of {options}")
        elif key.split(".")[0] in keys - {"model", "data"}:
            tuner.append(arg)
        else:
            trial.append(arg)
    if "model" not in choice:
        raise TuneError(
            "model=<name> is required (e.g. model=mf; Table 4 rows: model=xfvae_no_attention)"
        )
    if not any(a.startswith("hparams_search=") for a in tuner):
        tuner.append(f"hparams_search={choice['model']}")
    space = next(a.split("=", 1)[1] for a in tuner if a.startswith("hparams_search="))
    if not (CONF_DIR / "hparams_search" / f"{space}.yaml").is_file():
        raise TuneError(
            f"no search space conf/hparams_search/{space}.yaml (hparams_search={space})"
        )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("tune", overrides=tuner)
    with open_dict(cfg):
        cfg.model = choice["model"]
        if "data" in choice:
            cfg.data = choice["data"]
        cfg.space_name = space
        cfg.trial_overrides = trial
    return cfg


def tune(cfg: DictConfig) -> dict[str, Any]:
    """Run (or join) the study until ``budget`` trials and the selection's re-runs are done, then
    write its records; with ``run=false`` only write the records."""
    ctx = make_context(cfg)
    search_study, reruns = open_studies(ctx)
    if cfg.run:
        search_study.set_user_attr("budget", int(cfg.budget))  # checked by make_context
        search(ctx, search_study)
        rerun(ctx, search_study, reruns)
    out = write_records(ctx, search_study, reruns)
    log.info("%s on %s: %s; records in %s", ctx.name, cfg.data, out["status"], out["results"])
    if out["tuned"]:
        log.info("tuned config: %s (tuned=%s/%s)", out["tuned"], cfg.data, ctx.name)
    return out
