"""Search spaces as data: ``conf/hparams_search/<name>.yaml`` in the vocabulary of train overrides.

A space file holds ``params``: an ordered mapping from an override key (``model.net.dim``) to one
of

* ``choices: [a, b, ...]``: categorical (scalars, or lists such as ``[100, 100]``);
* ``choices: {label: value, ...}``: categorical over named values (e.g. a whole scheduler node);
* ``choices_by_batch_kind: {triples: [...], user_rows: [...], ...}``: choices by the model's
  batch kind (its net class's ``batch_kind``), e.g. batch sizes;
* ``low``/``high`` (with ``log``, ``step``, ``type: int|float``): a range;

and optionally

* ``when: {<earlier key>: value | [values]}``: sampled only if the condition holds (conditional
  parameter); otherwise the key keeps the model config's value;
* ``min: <earlier key>``: only the choices >= that key's value (the paper's K <= K' <= widths);
  each bound gets its own Optuna parameter, so no trial is spent on an excluded combination;
* ``add: true``: the key may be absent from the model config (``++key=value``);
* ``switch_off: <label>``: the choice that switches this training extra off (the extras-off
  re-run).

A space file may include others through its defaults list (``- extras``): their params come
first, in order.

A space also names its ``anchors``: configurations every study tries first (Optuna's
``enqueue_trial``, counted within the budget and never pruned), so that a kept configuration is
never worse on validation than the recipe it replaces. Each is ``<name>: {source: <where the values
come from>, params: {<key>: <label>, ...}}`` giving a label inside the space for every key the
configuration uses (docs/tuning_protocol.md lists them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, ListConfig, OmegaConf

from xfvae import CONF_DIR

SPACE_DIR = CONF_DIR / "hparams_search"
KEYS = {
    "choices",
    "choices_by_batch_kind",
    "low",
    "high",
    "log",
    "step",
    "type",
    "when",
    "min",
    "add",
    "switch_off",
}
BATCH_KINDS = ("triples", "user_rows", "item_rows", "blocks", "none")
_SCALARS = (type(None), bool, int, float, str)


class SpaceError(ValueError):
    """A search-space file that cannot be used as written."""


@dataclass(frozen=True)
class Param:
    key: str
    choices: dict[Any, Any] | None = None  # label -> value (labels are what Optuna sees)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False
    when: dict[str, list[Any]] = field(default_factory=dict)
    min: str | None = None
    add: bool = False
    off: Any = None

    def name(self, values: Mapping[str, Any]) -> str:
        """The Optuna parameter name: the key, qualified by the bound of a ``min`` constraint."""
        return self.key if self.min is None else f"{self.key}|>={format_value(values[self.min])}"

    def allowed(self, values: Mapping[str, Any]) -> dict[Any, Any]:
        assert self.choices is not None
        if self.min is None:
            return self.choices
        return {lab: v for lab, v in self.choices.items() if _at_least(v, values[self.min])}

    def active(self, labels: Mapping[str, Any]) -> bool:
        return all(k in labels and labels[k] in ok for k, ok in self.when.items())


@dataclass(frozen=True)
class Anchor:
    name: str
    source: str
    labels: dict[str, Any]  # by key, in the space's order (inactive keys absent)


@dataclass(frozen=True)
class Space:
    """A loaded, validated search space for one model (its batch kind already applied)."""

    name: str
    params: tuple[Param, ...]
    raw: dict[str, Any]  # the resolved ``params`` mapping, as recorded in the study
    anchors: tuple[Anchor, ...] = ()

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def has_extras(self) -> bool:
        return any(p.off is not None for p in self.params)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Labels (what Optuna records) of one trial, by key, in order; inactive keys absent."""
        labels: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(labels):
                continue
            if p.choices is not None:
                allowed = p.allowed(values)
                label = trial.suggest_categorical(p.name(values), list(allowed))
                values[p.key] = allowed[label]
            elif p.is_int:
                step = int(p.step or 1)
                label = trial.suggest_int(
                    p.name(values), int(p.low), int(p.high), step=step, log=p.log
                )
                values[p.key] = label
            else:
                label = trial.suggest_float(p.name(values), p.low, p.high, step=p.step, log=p.log)
                values[p.key] = label
            labels[p.key] = label
        return labels

    def optuna_params(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """The Optuna parameters (name -> label) that :meth:`sample` records for these labels:
        what ``enqueue_trial`` needs to replay them."""
        out: dict[str, Any] = {}
        values = self.values(labels)
        for p in self.params:
            if p.key in values:
                out[p.name(values)] = labels[p.key]
        return out

    def values(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """Override values by key for the given labels (inactive keys dropped)."""
        out: dict[str, Any] = {}
        kept: dict[str, Any] = {}
        for p in self.params:
            if p.key not in labels or not p.active(kept):
                continue
            kept[p.key] = labels[p.key]
            out[p.key] = p.choices[labels[p.key]] if p.choices is not None else labels[p.key]
        return out

    def overrides(self, labels: Mapping[str, Any]) -> list[str]:
        """The train overrides (``key=value``; ``++key=value`` where ``add``) of these labels."""
        by_key = {p.key: p for p in self.params}
        return [
            ("++" if by_key[k].add else "") + f"{k}={format_value(v)}"
            for k, v in self.values(labels).items()
        ]

    def extras_off(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """The same labels with every extra (a param with ``off``) switched off; params that were
        conditional on an extra (e.g. the schedule's gamma) drop out."""
        off = {**labels, **{p.key: p.off for p in self.params if p.off is not None}}
        return {k: off[k] for k in self.values(off)}

    def uses_extras(self, labels: Mapping[str, Any]) -> bool:
        return any(p.off is not None and labels.get(p.key) != p.off for p in self.params)


def load_space(cfg: DictConfig | Mapping[str, Any], name: str, batch_kind: str) -> Space:
    """Validate the composed ``hparams_search`` node of space ``name`` for a model of this kind."""
    where = f"conf/hparams_search/{name}.yaml"
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(node, dict) or not isinstance(node.get("params"), dict):
        raise SpaceError(f"{where}: needs a mapping 'params: {{<override key>: <spec>}}'")
    params: list[Param] = []
    raw: dict[str, Any] = {}
    for key, spec in node["params"].items():
        param = _param(where, str(key), spec, batch_kind, {p.key: p for p in params})
        if param is not None:
            params.append(param)
            raw[key] = {k: v for k, v in spec.items() if k != "choices_by_batch_kind"}
            if "choices_by_batch_kind" in spec:
                raw[key]["choices"] = spec["choices_by_batch_kind"][batch_kind]
    if not params:
        raise SpaceError(f"{where}: no parameters to search")
    space = Space(name, tuple(params), raw)
    anchors = tuple(_anchor(where, space, k, v) for k, v in (node.get("anchors") or {}).items())
    return Space(name, space.params, raw, anchors)


def _anchor(where: str, space: Space, name: str, spec: Any) -> Anchor:
    """An anchor whose labels all lie inside the space and cover exactly its active keys."""

    def fail(msg: str) -> SpaceError:
        return SpaceError(f"{where}: anchors.{name}: {msg}")

    if not isinstance(spec, dict) or set(spec) != {"source", "params"}:
        raise fail("write {source: <paper or file the values come from>, params: {key: label}}")
    given = dict(spec["params"] or {})
    unknown = sorted(set(given) - set(space.keys))
    if unknown:
        raise fail(f"{unknown} are not keys of this space (keys: {space.keys})")
    labels: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for p in space.params:
        if not p.active(labels):
            if p.key in given:
                raise fail(f"{p.key} is unused here ({p.when} does not hold): drop it")
            continue
        if p.key not in given:
            raise fail(f"gives no value for {p.key}; every key the configuration uses needs one")
        label = given[p.key]
        if p.choices is not None:
            allowed = p.allowed(values)
            if label not in allowed:
                raise fail(f"{p.key}={label!r} is not among its choices here {list(allowed)}")
            values[p.key] = allowed[label]
        else:
            ok = isinstance(label, int | float) and not isinstance(label, bool)
            if not ok or not p.low <= label <= p.high or (p.is_int and label != int(label)):
                raise fail(f"{p.key}={label!r} is outside its range [{p.low}, {p.high}]")
            values[p.key] = label
        labels[p.key] = label
    return Anchor(name, str(spec["source"]), labels)


def _param(
    where: str, key: str, spec: Any, batch_kind: str, earlier: dict[str, Param]
) -> Param | None:
    def fail(msg: str) -> SpaceError:
        return SpaceError(f"{where}: params.{key}: {msg}")

    if not isinstance(spec, dict):
        raise fail("write a mapping, e.g. {choices: [1, 2]} or {low: 0.1, high: 1.0}")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise fail(f"unknown field(s) {unknown}; allowed: {sorted(KEYS)}")
    if key.startswith(("+", "~")) or "=" in key:
        raise fail("write the plain key (add: true makes it ++key=value)")
    choices = spec.get("choices")
    if "choices_by_batch_kind" in spec:
        by_kind = spec["choices_by_batch_kind"]
        if not isinstance(by_kind, dict) or set(by_kind) - set(BATCH_KINDS):
            raise fail(f"choices_by_batch_kind needs keys among {BATCH_KINDS}")
        if batch_kind not in by_kind:
            return None  # e.g. no batch size for BPMF's Gibbs sampling
        choices = by_kind[batch_kind]
    is_range = "low" in spec or "high" in spec
    if (choices is not None) == is_range:
        raise fail("give exactly one of choices, choices_by_batch_kind, or low/high")
    when = {}
    for ref, ok in (spec.get("when") or {}).items():
        if ref not in earlier:
            raise fail(f"when: {ref} is not an earlier key of this space")
        when[ref] = list(ok) if isinstance(ok, list) else [ok]
    ref = spec.get("min")
    if ref is not None and (ref not in earlier or earlier[ref].choices is None):
        raise fail(f"min: {ref} must be an earlier categorical key of this space")
    common = dict(key=key, when=when, min=ref, add=bool(spec.get("add", False)))
    if is_range:
        low, high = spec.get("low"), spec.get("high")
        if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
            raise fail(f"a range needs numbers low < high, got low={low}, high={high}")
        if spec.get("log") and low <= 0:
            raise fail("a log range needs low > 0")
        if ref is not None or "switch_off" in spec:
            raise fail("min and switch_off apply to choices only")
        kind = spec.get(
            "type", "int" if isinstance(low, int) and isinstance(high, int) else "float"
        )
        if kind not in ("int", "float"):
            raise fail(f"type must be int or float, got {kind!r}")
        return Param(
            low=low,
            high=high,
            log=bool(spec.get("log")),
            step=spec.get("step"),
            is_int=kind == "int",
            **common,
        )
    if isinstance(choices, dict):
        labelled = {lab: v for lab, v in choices.items()}
    elif isinstance(choices, list) and choices:
        labelled = {_label(v): v for v in choices}
    else:
        raise fail("choices must be a non-empty list or a {label: value} mapping")
    if len(labelled) != len(choices):
        raise fail(f"repeated choices {choices}")
    if ref is not None and not all(isinstance(v, int | float) for v in labelled.values()):
        raise fail("min needs numeric choices")
    if "switch_off" in spec and spec["switch_off"] not in labelled:
        raise fail(f"switch_off: {spec['switch_off']!r} is not one of the labels {list(labelled)}")
    for k, ok in when.items():
        bad = [v for v in ok if earlier[k].choices is not None and v not in earlier[k].choices]
        if bad:
            raise fail(f"when: {k} never takes {bad} (its choices: {list(earlier[k].choices)})")
    return Param(choices=labelled, off=spec.get("switch_off"), **common)


def _label(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists and mappings get their override text."""
    return value if isinstance(value, _SCALARS) else format_value(value)


def _at_least(value: Any, bound: Any) -> bool:
    return isinstance(value, int | float) and isinstance(bound, int | float) and value >= bound


def format_value(value: Any) -> str:
    """A value in Hydra's override grammar (``null``, ``true``, ``1e-05``, ``'a-b'``, ``[1,2]``,
    ``{k:v}``); :func:`tests.test_tune_space` checks that the parser reads back the same value."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpaceError(f"non-finite value {value} in a search space")
        return repr(value)
    if isinstance(value, str):
        if "'" in value or "\\" in value:
            raise SpaceError(f"string values may not hold quotes or backslashes: {value!r}")
        return f"'{value}'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    raise SpaceError(f"cannot write {value!r} ({type(value).__name__}) as an override value")
