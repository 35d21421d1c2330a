"""A training step of the cross-feedback VAE reads nothing from the device (no host-device
synchronisation), and the block plan lives on the model's device, copied there once.

On CPU: steps run with every Tensor method that turns a value into a Python object patched to
raise. On CUDA (skipped without it): steps run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import pytest
import torch

from xfvae.data.batches import Block, BlockPlan, epoch_generator, iter_blocks
from xfvae.data.synthetic import make_synthetic
from xfvae.data.train_data import TrainData
from xfvae.models.lazy_adam import LazyAdam
from xfvae.models.xfvae import CrossFeedbackVAE

SMALL = dict(dim=4, inter_dim=5, input_width=6, output_width=6)
READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__len__")
CONFIGS = [
    dict(attention="local"),
    dict(attention="global", offset="biases", input_layers=1, output_layers=1),
    dict(attention="none", iteration="sequential", separate_variance=True),
    dict(attention="local", sparse_update=True, separate_variance=True),
]


def tiny_data(n_users: int = 40, n_items: int = 30) -> TrainData:
    df = make_synthetic(n_users, n_items, 0.25, rank=2, noise_sd=0.3, seed=0)
    return TrainData(
        n_users,
        n_items,
        torch.tensor(df["user"].to_numpy()),
        torch.tensor(df["item"].to_numpy()),
        torch.tensor(df["rating"].to_numpy(), dtype=torch.float32),
        1.0,
        5.0,
    )


def setup(config: dict, device: str):
    data = tiny_data()
    torch.manual_seed(0)
    net = CrossFeedbackVAE(data, block_size=[16, 12], **SMALL, **config).to(device)
    opt = LazyAdam(net.parameters(), lr=1e-2, weight_decay=1e-4, fused=True)  # as the configs
    plan = BlockPlan(data, 16, 12, seed=0)
    blocks = [b.to(device) for b in iter_blocks(plan, epoch_generator(0, 0), shuffle=True)]
    net.on_fit_start()
    net.on_train_epoch_start(0)
    return net, opt, blocks


def run_steps(net, opt, blocks) -> None:
    for b in blocks:
        out = net.loss(b)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_training_steps_read_no_value_from_the_device(monkeypatch, config):
    net, opt, blocks = setup(config, "cpu")
    run_steps(net, opt, blocks[:2])  # warm-up: per-batch structures are built once, here
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    reads = []

    def forbid(name):
        def read(self, *args, **kwargs):
            reads.append(name)
            raise AssertionError(f"Tensor.{name} read a value from the device inside a step")

        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    run_steps(net, opt, blocks)
    monkeypatch.undo()
    assert reads == []
    # the check has teeth: the patched methods do raise, and the steps did train the model
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "__bool__", forbid("__bool__"))
        with pytest.raises(AssertionError, match="__bool__"):
            bool(torch.tensor(True))
    moved = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("user_encoder") for n in moved)
    assert any(n.startswith("item_encoder") for n in moved)


def test_the_plan_is_copied_to_a_device_once_and_blocks_slice_it():
    data = tiny_data()
    plan = BlockPlan(data, 16, 12, seed=0)
    assert plan.on("cpu") is plan  # already there: no copy
    blk = next(iter_blocks(plan, epoch_generator(0, 0), shuffle=False))
    moved = blk.to("cpu")
    assert isinstance(moved, Block) and moved.plan is plan
    # a block's tensors are views of the plan's arrays (nothing copied per step)
    assert moved.ratings.untyped_storage().data_ptr() == plan.ratings.untyped_storage().data_ptr()
    rows = moved.user_rows
    assert rows is moved.user_rows  # the same RowSlice (and its cached structures) every time
    assert rows.cols.untyped_storage().data_ptr() == (
        plan.user_rows.arrays["cols"].untyped_storage().data_ptr()
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_cuda_steps_do_not_synchronise(config):
    net, opt, blocks = setup(config, "cuda")
    assert blocks[0].plan.on("cuda") is blocks[-1].plan  # one copy of the plan on the device
    assert blocks[0].ratings.is_cuda and blocks[0].user_rows.cols.is_cuda
    run_steps(net, opt, blocks[:2])  # warm-up (lazy CUDA initialisation, per-batch structures)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_steps(net, opt, blocks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
