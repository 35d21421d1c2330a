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


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid batch size, seed, epoch count, patience,
    learning rate or weight decay of ``cfg`` (the composed train config); return None if valid."""
    problems: list[str] = []
    _check_seeds(cfg, problems)
    _check_batch_size(cfg, problems)
    _check_epochs(cfg, problems)
    _check_optimizer(cfg, problems)
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
