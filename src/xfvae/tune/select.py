"""The selection protocol, as a function of what the storage holds.

1. The search trials are ranked by seed 0's validation RMSE; the best ``top_k`` distinct
   configurations (complete trials only), and every complete anchor (the model's default and its
   paper's recipe), are re-run on the other seeds: so the kept configuration's mean is never
   worse than the best anchor's.
2. The configuration with the lowest mean validation RMSE over all seeds is kept (ties: the
   lower seed-0 RMSE, then the earlier trial).
3. The kept configuration is re-run on every seed with its training extras switched off (no LR
   schedule, no EMA, the same other values), so that the extras' effect can be reported. When it
   uses no extra, its own runs are that comparison and nothing is re-run.

:func:`outcome` says which of these jobs are still missing and, once none is, the result.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from xfvae.tune.space import Space

TUNED, NO_EXTRAS = "tuned", "no_extras"


@dataclass
class Outcome:
    ready: bool  # no search trial is still running: the candidates are final
    candidates: list[FrozenTrial] = field(default_factory=list)
    values: dict[int, dict[int, float]] = field(default_factory=dict)  # trial -> seed -> RMSE
    chosen: FrozenTrial | None = None
    extras_off: dict[int, float] | None = None  # seed -> RMSE; None: the space has no extras
    extras_off_overrides: list[str] | None = None
    extras_off_same: bool = False  # the chosen configuration uses no extra
    missing: list[dict[str, Any]] = field(default_factory=list)  # jobs to queue
    pending: int = 0  # jobs queued or running

    @property
    def complete(self) -> bool:
        return self.ready and not self.missing and not self.pending

    def mean(self, number: int) -> float:
        return _mean(self.values.get(number, {}).values())


def candidates(search_trials: list[FrozenTrial], top_k: int) -> list[FrozenTrial]:
    """The best ``top_k`` distinct configurations among the complete trials (by seed 0's RMSE),
    then the complete anchors not among them."""
    done = [
        t
        for t in search_trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    out: list[FrozenTrial] = []
    seen: set[tuple[str, ...]] = set()
    for t in sorted(done, key=lambda t: (t.value, t.number)):
        key = tuple(t.user_attrs.get("overrides", []))
        if key not in seen and (len(out) < top_k or "anchor" in t.user_attrs):
            seen.add(key)
            out.append(t)
    return out


def job(source: FrozenTrial, seed: int, variant: str, overrides: list[str]) -> dict[str, Any]:
    suffix = "" if variant == TUNED else "-no-extras"
    return {
        "job": f"t{source.number}-seed{seed}{suffix}",
        "source": source.number,
        "seed": seed,
        "variant": variant,
        "overrides": list(overrides),
    }


def outcome(
    space: Space,
    search_trials: list[FrozenTrial],
    rerun_trials: list[FrozenTrial],
    top_k: int,
    seeds: list[int],
) -> Outcome:
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in search_trials):
        return Outcome(ready=False)
    done: dict[str, float] = {}
    active: set[str] = set()
    for t in rerun_trials:
        key = t.user_attrs.get("job")
        if t.state == TrialState.COMPLETE:
            done[key] = float(t.value)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            active.add(key)
    out = Outcome(ready=True, candidates=candidates(search_trials, top_k))
    jobs = []
    for c in out.candidates:
        out.values[c.number] = {seeds[0]: float(c.value)}
        for s in seeds[1:]:
            j = job(c, s, TUNED, c.user_attrs["overrides"])
            jobs.append(j)
            if j["job"] in done:
                out.values[c.number][s] = done[j["job"]]
    if all(j["job"] in done for j in jobs) and out.candidates:
        out.chosen = min(out.candidates, key=lambda c: (out.mean(c.number), c.value, c.number))
        if space.has_extras:
            labels = out.chosen.user_attrs["choices"]
            out.extras_off_overrides = space.overrides(space.extras_off(labels))
            out.extras_off_same = not space.uses_extras(labels)
            if out.extras_off_same:
                out.extras_off = dict(out.values[out.chosen.number])
            else:
                off_jobs = [job(out.chosen, s, NO_EXTRAS, out.extras_off_overrides) for s in seeds]
                jobs += off_jobs
                out.extras_off = {j["seed"]: done[j["job"]] for j in off_jobs if j["job"] in done}
    out.missing = [j for j in jobs if j["job"] not in done and j["job"] not in active]
    out.pending = sum(j["job"] in active for j in jobs)
    return out


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan
