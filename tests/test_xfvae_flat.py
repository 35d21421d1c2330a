"""The cross-feedback VAE trained from one flat parameter tensor (issue 21).

``CrossFeedbackVAE.optimizer_parameters`` stores every parameter in one flat tensor
(``xfvae.models.flat_params``) and a training block becomes one autograd node
(``xfvae.models.fused_block.FusedBlock``). Its loss and gradient must equal the per-parameter
path's (the encoders' fused nodes and ``BlockElbo``, tied to the dense reference and to Eq. 7 by
``test_xfvae_equivalence.py`` and ``test_xfvae_fused.py``), the parameters must keep their names
and values, and nothing may train the per-parameter tensors behind the optimiser's back.
"""

from __future__ import annotations

import pytest
import torch
from test_xfvae_fused import tiny_model

from xfvae.models.flat_params import FlatLayout, FlatParams

CASES = {
    "local-concat-biases": dict(attention="local", offset="biases"),
    "local-add-ratio": dict(attention="local", attention_merge="add", attention_norm="ratio"),
    "none-global-prior": dict(attention="none", offset="global", prior_sd=0.5, beta_u=0.3),
    "no-data-input": dict(attention="local", use_data_input=False),
    "no-cross-feedback": dict(attention="none", use_cross_feedback=False, var_floor=0.0),
}


def steps(kw: dict, flat: bool, n: int = 3):
    """Losses and per-parameter gradients of ``n`` Adam steps on the first blocks."""
    net, blocks = tiny_model(**kw)
    params = net.optimizer_parameters() if flat else list(net.parameters())
    assert (net.flat_params is not None) == flat
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)
    losses, grads = [], []
    for block in blocks[:n]:
        torch.manual_seed(3)
        out = net.loss(block)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if flat:
            pieces = net.flat_params.layout.split_params(net.flat_params.flat.grad)
            by_id = {id(p): g for p, g in zip(net.flat_params.params, pieces, strict=True)}
            grads.append({n: by_id[id(p)].clone() for n, p in net.named_parameters()})
        else:
            grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
        losses.append(out["loss"].detach())
        opt.step()
    return net, losses, grads


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES.keys())
def test_the_flat_step_equals_the_per_parameter_step(kw):
    net_p, losses_p, grads_p = steps(kw, flat=False)
    net_f, losses_f, grads_f = steps(kw, flat=True)
    torch.testing.assert_close(torch.stack(losses_f), torch.stack(losses_p))
    for g_f, g_p in zip(grads_f, grads_p, strict=True):
        assert g_f.keys() == g_p.keys()
        for name in g_p:
            torch.testing.assert_close(g_f[name], g_p[name], msg=name)
    # and after three Adam steps on one flat tensor, the same parameters
    params_p = dict(net_p.named_parameters())
    for name, p in net_f.named_parameters():
        torch.testing.assert_close(p, params_p[name], msg=name)
    # and the loss moved: the steps trained something
    assert not torch.equal(losses_f[0], losses_f[-1])


def test_flattening_keeps_names_values_and_the_state_dict():
    net, _ = tiny_model(attention="local", offset="biases")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    (flat,) = net.optimizer_parameters()
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert flat.numel() >= sum(p.numel() for p in net.parameters())
    with torch.no_grad():  # a parameter is a view: writing the flat tensor changes it
        flat.add_(1.0)
    torch.testing.assert_close(net.user_encoder.w0, before["user_encoder.w0"] + 1.0)
    # a second call returns the same tensor (the loop may ask again)
    assert net.optimizer_parameters()[0] is flat


def test_moving_the_model_keeps_the_optimisers_tensor():
    net, _ = tiny_model(attention="local")
    (flat,) = net.optimizer_parameters()
    net.float()  # Module._apply gives every parameter new data
    assert net.flat_params.flat is flat and flat.dtype == torch.float32
    assert net.flat_params.owns_data()
    with torch.no_grad():
        flat.zero_()
    assert all(bool((p == 0).all()) for p in net.parameters())


def test_sequential_iteration_and_general_configs_keep_one_tensor_per_parameter():
    net, _ = tiny_model(attention="local", iteration="sequential")
    assert len(net.optimizer_parameters()) == len(list(net.parameters()))
    assert net.flat_params is None
    net, _ = tiny_model(attention="local", input_layers=1)  # not fusable
    assert len(net.optimizer_parameters()) == len(list(net.parameters()))


def test_nothing_trains_the_parameters_behind_the_flat_tensor():
    net, blocks = tiny_model(attention="local")
    net.optimizer_parameters()
    block = blocks[0]
    with pytest.raises(RuntimeError, match="flat tensor"):
        net.user_encoder(block.user_rows, net.latent_items)
    batch = {k: block[k] for k in ("users", "items", "obs_u", "obs_i", "ratings")}
    with pytest.raises(RuntimeError, match="blocks only"):
        net.loss(batch)
    with torch.no_grad():  # encoding without gradient is fine
        mu, _ = net.user_encoder(block.user_rows, net.latent_items)
    assert torch.isfinite(mu).all()


def test_flat_layout_packs_groups_and_checks_shapes():
    layout = FlatLayout([torch.Size([3, 2]), torch.Size([3, 2]), torch.Size([5])],
                        [("ab", 2, (2, 3, 2)), ("c", 1, (5,))])  # fmt: skip
    assert layout.numel == 17  # no gaps: a gradient writing every group leaves nothing unset
    buf = torch.arange(float(layout.numel))
    views = layout.split(buf)
    assert views["ab"].shape == (2, 3, 2) and views["c"].shape == (5,)
    assert views["c"].tolist() == [12.0, 13.0, 14.0, 15.0, 16.0]
    with pytest.raises(ValueError, match="cannot be viewed"):
        FlatLayout([torch.Size([3])], [("a", 1, (4,))])
    p = [torch.nn.Parameter(torch.randn(3, 2)) for _ in range(2)]
    fp = FlatParams(p, [("ab", 2, (6, 2))])
    assert fp.owns_data() and torch.equal(fp.views["ab"][:3], p[0])
