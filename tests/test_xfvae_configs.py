"""The committed xfvae configs (conf/model/xfvae*.yaml) build the models they promise, and the
default one trains end to end through the shared loop (tiny synthetic data)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate

from xfvae.data.synthetic import make_synthetic
from xfvae.data.train_data import TrainData
from xfvae.train import train

SYNTH = [
    "data=synthetic",
    "data.options.n_users=120",
    "data.options.n_items=80",
    "data.options.density=0.2",
    "data.options.noise_sd=0.3",
]

# name -> (use_data_input, use_cross_feedback, attention, L', L); None: the default's value
EXPECTED = {
    "xfvae": (True, True, "local", None, None),
    "xfvae_no_data_input": (False, True, "local", None, None),
    "xfvae_no_cross_feedback": (True, False, "none", None, None),
    "xfvae_no_attention": (True, True, "none", None, None),
    "xfvae_variant_a": (True, False, "none", 0, 0),
    "xfvae_variant_b": (True, True, "none", 0, 0),
    "xfvae_variant_c": (True, False, "none", 1, 0),
    "xfvae_variant_d": (True, True, "none", 1, 0),
    "xfvae_variant_e": (True, True, "local", 1, 0),
}


@pytest.fixture(scope="module")
def dense_data() -> TrainData:
    """Density 0.2 (above the auto threshold), so attention=auto resolves to local."""
    df = make_synthetic(60, 40, 0.2, rank=2, noise_sd=0.3, seed=0)
    return TrainData(
        60,
        40,
        torch.tensor(df["user"].to_numpy()),
        torch.tensor(df["item"].to_numpy()),
        torch.tensor(df["rating"].to_numpy(), dtype=torch.float32),
        1.0,
        5.0,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_configs_build_their_variant(name, cfg_factory, dense_data):
    cfg = cfg_factory(f"model={name}")
    assert cfg.model.name == name
    net = instantiate(cfg.model.net, data=dense_data)
    data_in, cross, attention, l_in, l_out = EXPECTED[name]
    enc = net.user_encoder
    assert (enc.use_data_input, enc.use_cross_feedback, net.attention) == (
        data_in,
        cross,
        attention,
    )
    default = cfg_factory("model=xfvae").model.net
    assert cfg.model.net.input_layers == (default.input_layers if l_in is None else l_in)
    assert cfg.model.net.output_layers == (default.output_layers if l_out is None else l_out)
    assert list(cfg.model.net.block_size) == list(cfg.model.batch_size)


def test_default_config_trains_end_to_end(cfg_factory, tmp_path):
    """Through the shared loop: hooks, blocks, checkpoint restore for the test set, outputs."""
    cfg = cfg_factory("model=xfvae", *SYNTH, "model.max_epochs=3", "model.batch_size=[50,40]")
    metrics = train(cfg)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["model"] == "xfvae"
    assert metrics["epochs"] == 3
    hist = metrics["val/rmse"]
    assert math.isfinite(metrics["test/rmse"]) and math.isfinite(hist)
    assert metrics["n_params"] > 0


def test_ratio_and_sequential_switches_reach_the_model(cfg_factory, dense_data):
    cfg = cfg_factory(
        "model=xfvae", "model.net.attention_norm=ratio", "model.net.iteration=sequential"
    )
    net = instantiate(cfg.model.net, data=dense_data)
    assert net.user_encoder.attention.norm == "ratio"
    assert net.iteration == "sequential"


def test_variance_and_update_switches_reach_the_model(cfg_factory, dense_data):
    default = instantiate(cfg_factory("model=xfvae").model.net, data=dense_data)
    assert not default.user_encoder.separate_variance and not default.user_encoder.sparse_grad
    cfg = cfg_factory(
        "model=xfvae", "model.net.separate_variance=true", "model.net.sparse_update=true"
    )
    net = instantiate(cfg.model.net, data=dense_data)
    for enc in (net.user_encoder, net.item_encoder):
        assert enc.separate_variance and enc.sparse_grad
        assert enc.phi0.shape[2] == 2 * default.user_encoder.phi0.shape[2]


def test_sparse_update_trains_end_to_end_with_lazy_adam(cfg_factory):
    cfg = cfg_factory(
        "model=xfvae",
        *SYNTH,
        "model.max_epochs=2",
        "model.batch_size=[50,40]",
        "model.net.sparse_update=true",
        "model.optimizer._target_=xfvae.models.lazy_adam.LazyAdam",
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 2 and math.isfinite(metrics["test/rmse"])
