"""The search spaces (conf/hparams_search/<model>.yaml): every one loads for its model, every
sampled trial composes into a training config that builds, the paper's K <= K' <= widths rule
holds without wasted trials, the ablation rows reuse the full model's space, and the override
text the tuner writes reads back as the sampled values."""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.test_baselines_contract import Synthetic
from xfvae import CONF_DIR
from xfvae.train import train
from xfvae.tune.driver import compose_tune
from xfvae.tune.space import SpaceError, format_value, load_space
from xfvae.tune.study import TuneError, make_context, trial_config

MODELS = ["mf", "ncf", "cnncf", "urec", "irec", "vaecf", "daecf", "bpmf", "xfvae"]
ROWS = ["xfvae_no_data_input", "xfvae_no_cross_feedback", "xfvae_no_attention"]
EXTRAS = {
    "model.optimizer.lr",
    "model.optimizer.weight_decay",
    "model.batch_size",
    "model.scheduler",
    "model.scheduler.gamma",
    "model.callbacks.ema",
    "model.callbacks.ema.decay",
}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def context(tmp_path, model: str, *args: str):
    cfg = compose_tune(
        [
            f"model={model}",
            "budget=2",
            f"storage_dir={tmp_path / 'store'}",
            f"results_dir={tmp_path / 'res'}",
            *args,
        ]
    )
    return make_context(cfg)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """Each model's tuning context, built once for this module (composing is the slow part)."""
    cache = {}

    def get(model: str):
        if model not in cache:
            cache[model] = context(tmp_path_factory.mktemp(model), model)
        return cache[model]

    return get


def sample(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, 1.0)
    return out


def test_the_old_grid_and_sweeper_configs_are_gone():
    """One tuning path: only the spaces python -m xfvae.tune reads are left."""
    names = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
    assert names == sorted([*MODELS, *ROWS, "extras"])


@pytest.mark.parametrize("model", MODELS + ROWS)
def test_space_loads_and_every_gradient_model_has_the_same_extras(model, contexts):
    ctx = contexts(model)  # raises if a key is not in the model config
    keys = set(ctx.space.keys)
    if model == "bpmf":  # Gibbs sampling: no optimiser, so no extras
        assert not keys & EXTRAS and not ctx.space.has_extras
    else:
        assert keys >= EXTRAS and ctx.space.has_extras
        assert len(keys - EXTRAS) >= 3, "the model's own Table 2 / section 4.2 knobs are searched"


@pytest.mark.parametrize("model", MODELS)
def test_sampled_trials_compose_into_configs_that_build(model, contexts, tmp_path):
    """Random trials of every model: each override lands in the composed config with the sampled
    value, and the net, optimiser, schedule and EMA callback all instantiate."""
    ctx = contexts(model)
    data = Synthetic(n_users=30, n_items=20).train
    for labels in sample(ctx.space, 2, seed=len(model)):
        cfg = trial_config(ctx, ctx.space.overrides(labels), 0, tmp_path / "run")
        assert cfg.evaluation.test is False and cfg.evaluation.test_curve is False
        assert cfg.model.max_epochs == ctx.cfg.equal.max_epochs
        for key, value in ctx.space.values(labels).items():
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            if isinstance(value, dict):  # a node whose fields may be searched further
                assert got.keys() == value.keys(), key
            else:
                assert (
                    got == pytest.approx(value, rel=1e-12)
                    if isinstance(value, float)
                    else got == value
                ), key
        net = instantiate(cfg.model.net, data=data)
        assert net.batch_kind == get_class(cfg.model.net._target_).batch_kind
        if cfg.model.optimizer:
            optimizer = instantiate(cfg.model.optimizer)(net.parameters())
            if cfg.model.scheduler:
                assert (
                    instantiate(cfg.model.scheduler)(optimizer).gamma == cfg.model.scheduler.gamma
                )
            for cb in (cfg.model.get("callbacks") or {}).values():
                if cb is not None:
                    assert instantiate(cb).__class__.__name__ == "EMAWeights"


def test_xfvae_grid_respects_k_le_k_prime_le_widths_without_wasting_trials(contexts):
    """Paper 4.2: K <= K' and K, K' <= every hidden width. The rule is built into the space
    (conditional parameters), so every sampled trial is valid and every allowed (K, K') occurs."""
    space = contexts("xfvae").space
    pairs = set()
    for labels in sample(space, 300):
        v = space.values(labels)
        k, k2 = v["model.net.dim"], v["model.net.inter_dim"]
        assert k <= k2
        pairs.add((k, k2))
        for layers, width in (("input_layers", "input_width"), ("output_layers", "output_width")):
            if v[f"model.net.{layers}"] > 0:
                assert v[f"model.net.{width}"] >= k2
            else:
                assert f"model.net.{width}" not in v, "a width without layers is not searched"
    grid = [10, 15, 25, 50]
    assert pairs == {(a, b) for a, b in itertools.product(grid, grid) if a <= b}


@pytest.mark.parametrize("row", ROWS)
def test_ablation_rows_search_the_full_space_but_never_their_own_switches(row, contexts):
    full = contexts("xfvae").space
    space = contexts(row).space
    assert space.raw == full.raw
    switches = OmegaConf.load(CONF_DIR / "model" / f"{row}.yaml").net
    assert switches, f"conf/model/{row}.yaml switches something off"
    assert not {f"model.net.{k}" for k in switches} & set(space.keys)


def test_extras_off_drops_schedule_and_ema_and_keeps_the_rest(contexts):
    space = contexts("mf").space
    labels = next(
        s
        for s in sample(space, 200)
        if s["model.scheduler"] != "none" and s["model.callbacks.ema"] != "none"
    )
    off = space.extras_off(labels)
    assert space.uses_extras(labels) and not space.uses_extras(off)
    assert off["model.scheduler"] == "none" and off["model.callbacks.ema"] == "none"
    assert "model.scheduler.gamma" not in off and "model.callbacks.ema.decay" not in off
    conditional = ("model.scheduler.gamma", "model.callbacks.ema.decay")
    expected = {k: v for k, v in labels.items() if k not in conditional}
    assert off == {**expected, "model.scheduler": "none", "model.callbacks.ema": "none"}
    assert "model.scheduler=null" in space.overrides(off)
    assert "++model.callbacks.ema=null" in space.overrides(off)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        25,
        1e-05,
        0.0012345678901,
        1.0,
        "",
        "100-50",
        "relu",
        [100, 100],
        {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "_partial_": True, "gamma": 0.9},
    ],
)
def test_override_text_reads_back_as_the_value(value):
    parsed = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])[0].value()
    if isinstance(value, float):
        assert math.isclose(parsed, value, rel_tol=1e-15)
    else:
        assert parsed == value and type(parsed) is type(value)


def test_bad_space_errors_name_the_file_and_key():
    with pytest.raises(
        SpaceError, match=r"conf/hparams_search/x.yaml: params.model.net.a: unknown"
    ):
        load_space({"params": {"model.net.a": {"choices": [1], "of": 1}}}, "x", "triples")
    with pytest.raises(
        SpaceError, match=r"params.model.net.b: min: model.net.c must be an earlier"
    ):
        load_space(
            {"params": {"model.net.b": {"choices": [1], "min": "model.net.c"}}}, "x", "triples"
        )
    with pytest.raises(SpaceError, match="low < high"):
        load_space({"params": {"model.optimizer.lr": {"low": 1, "high": 0.1}}}, "x", "triples")


def test_the_command_line_cannot_change_the_equal_budget_or_the_test_rule(tmp_path):
    with pytest.raises(TuneError, match="equal.max_epochs"):
        context(tmp_path, "mf", "model.max_epochs=3")
    with pytest.raises(TuneError, match="never evaluated"):
        context(tmp_path, "mf", "evaluation.test=true")
    with pytest.raises(TuneError, match="model.net.dim is searched"):
        context(tmp_path, "mf", "model.net.dim=8")
    with pytest.raises(TuneError, match="no conf/model/nope.yaml"):
        context(tmp_path, "nope")


def test_a_trial_with_schedule_and_ema_trains(tmp_path):
    """The extras are available to every gradient-trained model through config: a trial with an LR
    schedule and the EMA callback trains (without the test split)."""
    ctx = context(
        tmp_path,
        "mf",
        "data=synthetic",
        "data.options.n_users=60",
        "data.options.n_items=40",
        "equal.max_epochs=2",
    )
    labels = next(
        s
        for s in sample(ctx.space, 200)
        if s["model.scheduler"] != "none" and s["model.callbacks.ema"] != "none"
    )
    cfg = trial_config(ctx, ctx.space.overrides(labels), 0, tmp_path / "run")
    assert cfg.model.scheduler.gamma == labels["model.scheduler.gamma"]
    metrics = train(cfg)
    assert metrics["epochs"] == 2 and math.isfinite(metrics["val/rmse"])
    assert "test/rmse" not in metrics
