"""Checks of a run's configuration before anything is built, and of its training curve after.

:func:`validate_config` rejects values that would otherwise fail deep inside the loop with an
unrelated error (``batch_size=0``: ZeroDivisionError), be silently changed (``seed=1.5`` became 1)
or mislead (``trainer.max_epochs=0``: a checkpoint error). Every problem is reported at once, each
naming its key, the value found and the allowed range.

:func:`loss_explosion_warning` flags a run whose final training loss is orders of magnitude above
its first epoch's: such a run finishes (the loss stays finite) but its metrics are not trustworthy.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: Seeds go to ``pl.seed_everything`` (numpy's uint32 range; outside it Lightning picks 0 with only
#: a warning) and to ``numpy.random.default_rng`` (non-negative).
SEED_MAX = 2**32 - 1
#: Final/first epoch training loss ratio from which a run counts as diverged.
LOSS_EXPLOSION_FACTOR = 100.0


class ConfigError(ValueError):
    """An invalid configuration value; the message names each key, its value and what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


_MISSING = object()


def _get(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` (plain Python for lists), or ``_MISSING`` when absent."""
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if isinstance(value, ListConfig | DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    try:
        return not isinstance(value, bool | str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _check_int(
    problems: list[str],
    key: str,
    value: Any,
    lo: int,
    hi: int | None,
    what: str,
    required: bool = False,
) -> None:
    """An integer in [lo, hi]; an absent or null value passes unless ``required``."""
    if value is _MISSING or (value is None and not required):
        return
    rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    if not _is_int(value):
        problems.append(f"{key}={_show(value)} is not an integer; {what} must be an integer {rng}")
    elif value < lo or (hi is not None and value > hi):
        problems.append(f"{key}={value} is out of range; {what} must be an integer {rng}")


def _check_seeds(cfg: DictConfig, problems: list[str]) -> None:
    seed = _get(cfg, "seed")
    # null would mean a random seed, silently: every seed is required
    _check_int(problems, "seed", seed, 0, SEED_MAX, "a seed", required=True)
    data_seed = _get(cfg, "data.seed")  # ${seed} by default: reported once, under seed
    if data_seed != seed:
        _check_int(problems, "data.seed", data_seed, 0, SEED_MAX, "a seed", required=True)
    if _get(cfg, "data.name") == "synthetic":
        synthetic = _get(cfg, "data.options.seed")
        _check_int(problems, "data.options.seed", synthetic, 0, None, "a seed", required=True)


def batch_kind_of(cfg: DictConfig) -> str | None:
    """The ``batch_kind`` of the configured model class, or None when it cannot be imported."""
    target = _get(cfg, "model.net._target_")
    if not isinstance(target, str):
        return None
    try:
        from hydra.utils import get_class

        return getattr(get_class(target), "batch_kind", None)
    except Exception:  # an import error is reported by instantiate, with its own message
        return None


def _check_batch_size(cfg: DictConfig, problems: list[str]) -> None:
    value = _get(cfg, "model.batch_size")
    if value is _MISSING:
        return
    kind = batch_kind_of(cfg)
    blocks_ok = (
        isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v >= 1 for v in value)
    )
    int_ok = _is_int(value) and value >= 1
    model = _get(cfg, "model.name")
    if kind == "blocks" and not blocks_ok:
        problems.append(
            f"model.batch_size={_show(value)} is invalid: model {model} trains on (user batch x "
            "item batch) blocks and needs [B_U, B_V], two integers >= 1 "
            "(e.g. model.batch_size=[100,100])"
        )
    elif kind is not None and kind != "blocks" and not int_ok:
        problems.append(
            f"model.batch_size={_show(value)} is invalid: model {model} needs an integer >= 1 "
            f"(the number of {'ratings' if kind == 'triples' else 'rows'} per training batch)"
        )
    elif kind is None and not (int_ok or blocks_ok):
        problems.append(
            f"model.batch_size={_show(value)} is invalid: it must be an integer >= 1, or "
            "[B_U, B_V] (two integers >= 1) for the block models"
        )


def _check_epochs(cfg: DictConfig, problems: list[str]) -> None:
    epochs = _get(cfg, "model.max_epochs")
    _check_int(problems, "model.max_epochs", epochs, 1, None, "the number of training epochs")
    trainer_epochs = _get(cfg, "trainer.max_epochs")  # ${model.max_epochs} by default
    if trainer_epochs != epochs:
        _check_int(
            problems, "trainer.max_epochs", trainer_epochs, 1, None, "the number of training epochs"
        )
    _check_int(
        problems, "model.patience", _get(cfg, "model.patience"), 0, None, "early-stopping patience"
    )


def _check_optimizer(cfg: DictConfig, problems: list[str]) -> None:
    if not _get(cfg, "model.optimizer"):
        return  # models without an optimiser (e.g. BPMF's Gibbs sampling)
    lr = _get(cfg, "model.optimizer.lr")
    if lr is not _MISSING:
        if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:
            problems.append(
                f"model.optimizer.lr={_show(lr)} is invalid: the learning rate must be a finite "
                "number > 0 (e.g. model.optimizer.lr=0.001)"
            )
    wd = _get(cfg, "model.optimizer.weight_decay")
    if wd is not _MISSING and wd is not None:
        if not _is_real(wd) or not math.isfinite(wd) or wd < 0:
            problems.append(
                f"model.optimizer.weight_decay={_show(wd)} is invalid: weight decay must be a "
                "finite number >= 0 (0 turns it off)"
            )


#: Top-level keys of the train config (conf/train.yaml and its groups); anything else (``+foo=1``)
#: is read by nothing and would only change the run's identity.
TOP_LEVEL_KEYS = (
    "task_name",
    "seed",
    "setting",
    "experiment",
    "optimized_metric",
    "resume",
    "overwrite",
    "stop_signals",
    "evaluation",
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
)
#: The ``evaluation`` keys (conf/train.yaml documents each).
EVALUATION_KEYS = (
    "test",
    "test_curve",
    "protocol",
    "report_protocols",
    "ks",
    "relevance_threshold",
    "min_test_ratings",
    "cold_start",
    "eval_batch_size",
)


def _check_keys(cfg: DictConfig, problems: list[str]) -> None:
    for key in sorted(set(cfg.keys()) - set(TOP_LEVEL_KEYS), key=str):
        problems.append(
            f"{key}={_show(_get(cfg, str(key)))} is not a setting of xfvae.train (nothing reads "
            f"it); drop it, or check its spelling (top-level keys: {', '.join(TOP_LEVEL_KEYS)})"
        )
    ev = _get(cfg, "evaluation")
    for key in sorted(set(ev) - set(EVALUATION_KEYS) if isinstance(ev, dict) else (), key=str):
        problems.append(
            f"evaluation.{key} is not an evaluation setting (nothing reads it); drop it, or check "
            f"its spelling (evaluation keys: {', '.join(EVALUATION_KEYS)})"
        )


def _check_evaluation(cfg: DictConfig, problems: list[str]) -> None:
    from xfvae.scoring.cold_start import POLICIES
    from xfvae.scoring.metrics import PROTOCOLS

    for key in ("evaluation.test", "evaluation.test_curve"):
        value = _get(cfg, key)
        if value is not _MISSING and not isinstance(value, bool):
            problems.append(f"{key}={_show(value)} is invalid: use true or false")
    known = ", ".join(PROTOCOLS)
    protocol = _get(cfg, "evaluation.protocol")
    if protocol is not _MISSING and protocol not in PROTOCOLS:
        problems.append(
            f"evaluation.protocol={_show(protocol)} is not a protocol; use one of {known}"
        )
    report = _get(cfg, "evaluation.report_protocols")
    if report is not _MISSING and report is not None:
        bad = [p for p in report if p not in PROTOCOLS] if isinstance(report, list) else [report]
        if bad:
            problems.append(
                f"evaluation.report_protocols={_show(report)} is invalid: {_show(bad)} not "
                f"protocol name(s); list names among {known} (or [] for none)"
            )
    ks = _get(cfg, "evaluation.ks")
    if ks is not _MISSING and not (
        isinstance(ks, list) and ks and all(_is_int(k) and k >= 1 for k in ks)
    ):
        problems.append(
            f"evaluation.ks={_show(ks)} is invalid: the ranking cut-offs must be a non-empty list "
            "of integers >= 1 (e.g. evaluation.ks=[20,50])"
        )
    threshold = _get(cfg, "evaluation.relevance_threshold")
    if threshold is not _MISSING and not (_is_real(threshold) and math.isfinite(threshold)):
        problems.append(
            f"evaluation.relevance_threshold={_show(threshold)} is invalid: it must be a finite "
            "number (a rating at or above it is relevant)"
        )
    _check_int(
        problems,
        "evaluation.min_test_ratings",
        _get(cfg, "evaluation.min_test_ratings"),
        1,
        None,
        "the fewest test ratings of a ranked user",
        required=True,
    )
    _check_int(
        problems,
        "evaluation.eval_batch_size",
        _get(cfg, "evaluation.eval_batch_size"),
        1,
        None,
        "the evaluation batch size",
        required=True,
    )
    policy = _get(cfg, "evaluation.cold_start")
    if policy is not _MISSING and policy not in POLICIES:
        problems.append(
            f"evaluation.cold_start={_show(policy)} is not a policy; use one of "
            f"{', '.join(POLICIES)}"
        )


def _check_rating_scale(cfg: DictConfig, problems: list[str]) -> None:
    lo, hi = _get(cfg, "data.options.rating_min"), _get(cfg, "data.options.rating_max")
    if _is_real(lo) and _is_real(hi) and lo > hi:
        problems.append(
            f"data.options.rating_min={lo} is above data.options.rating_max={hi}: the rating "
            "scale's minimum must not exceed its maximum"
        )


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every unknown key and every invalid batch size, seed,
    epoch count, patience, learning rate, weight decay or evaluation setting of ``cfg`` (the
    composed train config); return None if valid."""
    problems: list[str] = []
    _check_keys(cfg, problems)
    _check_seeds(cfg, problems)
    _check_batch_size(cfg, problems)
    _check_epochs(cfg, problems)
    _check_optimizer(cfg, problems)
    _check_evaluation(cfg, problems)
    _check_rating_scale(cfg, problems)
    if problems:
        raise ConfigError(problems)


def loss_explosion_warning(
    history: list[dict[str, Any]], factor: float = LOSS_EXPLOSION_FACTOR
) -> str | None:
    """A message when the final epoch's training loss is ``factor`` times the first's or more.

    ``history`` is the loop's per-epoch list (``RatingTask.history``: dicts with ``epoch`` and
    ``train_loss``). Epochs without a finite loss are skipped; with fewer than two such epochs,
    or a first loss that is not positive (no meaningful ratio), there is nothing to compare.
    """
    rows = [h for h in history if _finite(h.get("train_loss"))]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    lo, hi = float(first["train_loss"]), float(last["train_loss"])
    if lo <= 0 or hi < factor * lo:
        return None
    return (
        f"training loss exploded: {hi:.4g} at epoch {last.get('epoch', len(rows) - 1)} is "
        f"{hi / lo:.3g} times the first epoch's {lo:.4g} (epoch {first.get('epoch', 0)}); the run "
        "diverged and its metrics are not trustworthy. Lower the learning rate "
        "(model.optimizer.lr), raise regularisation, or set trainer.gradient_clip_val"
    )
