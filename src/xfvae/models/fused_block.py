"""The cross-feedback VAE's loss on one block (Eq. 7) with hand-written gradients (issue 21).

:class:`BlockElbo` is the loss given both sides' posteriors, one autograd node. :class:`FusedBlock`
is the whole block step's forward (both encoders, :mod:`xfvae.models.fused`, then the loss) as a
single node on one flat tensor holding every parameter of the model
(:class:`~xfvae.models.flat_params.FlatParams`): one gradient tensor, one ``AccumulateGrad``, one
tensor for the optimiser. The model takes it once its optimiser holds that flat tensor
(``CrossFeedbackVAE.optimizer_parameters``); otherwise the encoders' :class:`FusedEncoder` nodes
and :class:`BlockElbo`. Both compute the same values; ``tests/test_xfvae_flat.py`` compares them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xfvae.models.fused import const, encode_backward, encode_forward


def elbo_forward(net, rows_in, mu_u, var_u, eps_u, mu_v, var_v, eps_v, b_u=None, b_i=None):
    """-Eq. 7 on one block, divided by the model's ``loss_scale``: (loss, squared error sum, state
    for :func:`elbo_backward`).

    Reparametrisation u = mu_u + sigma_u eps_u (and v likewise); the block's predictions are the
    entries of u v^T (+ the offset) at its observed ratings; squared error on those; the KL terms
    of the block's users and items weighted per row (beta / blocks per entity where the entity has
    training ratings, 0 otherwise). ``b_u`` / ``b_i``: the user and item biases (offset "biases").
    """
    users, items, obs_u, obs_i, ratings = rows_in
    sd_u, sd_v = var_u.sqrt(), var_v.sqrt()
    u = torch.addcmul(mu_u, sd_u, eps_u)  # reparametrisation trick
    v = torch.addcmul(mu_v, sd_v, eps_v)
    flat = torch.add(obs_i, obs_u, alpha=v.shape[0])  # position of each rating in u v^T
    if flat.dtype != torch.int64:
        flat = flat.long()
    full = torch.mm(u, v.t())
    if b_u is not None:  # offset "biases": + user bias + item bias
        full += b_u.index_select(0, users).unsqueeze(1) + b_i.index_select(0, items)
    residual = torch.sub(ratings, full.view(-1).index_select(0, flat)).sub_(net.mean_rating)
    sse = torch.dot(residual, residual)  # Eq. 7: -E[log p(X | U, V)] + const
    # Eq. 7: the KL sums, each entity's share of its blocks (weights 0.5 beta / blocks)
    w_u = net.user_seen.index_select(0, users).mul_(_kl_weight(net, "user", mu_u))
    w_v = net.item_seen.index_select(0, items).mul_(_kl_weight(net, "item", mu_v))
    kl_u = torch.dot(kl_terms(mu_u, var_u, net.prior_var).sum(1), w_u)
    kl_v = torch.dot(kl_terms(mu_v, var_v, net.prior_var).sum(1), w_v)
    inv_scale = const(1.0 / net.loss_scale, sse.dtype, sse.device)
    total = torch.add(sse, kl_u).add_(kl_v).mul_(inv_scale)
    state = (net.prior_var, users, items, u, v, mu_u, var_u, eps_u, sd_u, mu_v, var_v, eps_v,
             sd_v, flat, residual, w_u, w_v, inv_scale)  # fmt: skip
    return total, sse, state


def elbo_backward(state, g: Tensor, d_b_u: Tensor | None = None, d_b_i: Tensor | None = None):
    """(d mu_u, d var_u, d mu_v, d var_v) of :func:`elbo_forward` for the loss gradient ``g``;
    the biases' gradients are written into ``d_b_u`` / ``d_b_i`` (zeroed) when given."""
    p, users, items, u, v, mu_u, var_u, eps_u, sd_u, mu_v, var_v, eps_v, sd_v, flat, residual, \
        w_u, w_v, inv = state  # fmt: skip
    gs = g * inv
    d_pred = residual.mul(gs).mul_(const(-2.0, gs.dtype, gs.device))
    d_full = u.new_zeros(u.shape[0] * v.shape[0]).index_add_(0, flat, d_pred)
    d_full = d_full.view(u.shape[0], v.shape[0])
    du, dv = d_full.mm(v), d_full.t().mm(u)
    grads = []
    for d, mu, var, eps, sd, w in ((du, mu_u, var_u, eps_u, sd_u, w_u), (dv, mu_v, var_v, eps_v, sd_v, w_v)):  # fmt: skip
        col = w.mul(gs).unsqueeze(1)
        d_mu = torch.addcmul(d, col, mu, value=2.0 / p)  # KL: d/dmu = mu / p
        d_var = torch.sub(const(1.0 / p, var.dtype, var.device), var.reciprocal()).mul_(col)
        d_var = torch.addcmul(d_var, d, eps.div(sd), value=0.5)  # through sigma = sqrt(var)
        grads += [d_mu, d_var]
    if d_b_u is not None:
        d_b_u.index_copy_(0, users, d_full.sum(1))
        d_b_i.index_copy_(0, items, d_full.sum(0))
    return grads


class BlockElbo(torch.autograd.Function):
    """:func:`elbo_forward` as one autograd node. Returns (loss, squared error sum)."""

    @staticmethod
    def forward(ctx, net, rows_in, mu_u, var_u, eps_u, mu_v, var_v, eps_v, *biases):
        total, sse, ctx.state = elbo_forward(net, rows_in, mu_u, var_u, eps_u, mu_v, var_v, eps_v,
                                             *biases)  # fmt: skip
        ctx.mark_non_differentiable(sse)
        ctx.biases = [b.shape for b in biases]
        return total, sse

    @staticmethod
    def backward(ctx, g: Tensor, _):
        u = ctx.state[3]
        d_biases = [u.new_zeros(shape) for shape in ctx.biases]
        d_mu_u, d_var_u, d_mu_v, d_var_v = elbo_backward(ctx.state, g, *d_biases)
        return (None, None, d_mu_u, d_var_u, None, d_mu_v, d_var_v, None, *d_biases)


class FusedBlock(torch.autograd.Function):
    """The block's loss (Eq. 7-10, Algorithm 1 steps 8-11) from the model's flat parameter tensor:
    returns (loss, squared error sum); the backward returns the flat tensor's whole gradient."""

    @staticmethod
    def forward(ctx, net, rows_in, user_rows, item_rows, flat: Tensor):
        fp = net.flat_params
        (vu, vu_t), (vi, vi_t) = fp.scope("user."), fp.scope("item.")
        enc_u, enc_i = net.user_encoder, net.item_encoder
        mu_u, var_u, st_u = encode_forward(enc_u, user_rows, net.latent_items, vu, vu_t)
        mu_v, var_v, st_i = encode_forward(enc_i, item_rows, net.latent_users, vi, vi_t)
        eps_u, eps_v = torch.randn_like(mu_u), torch.randn_like(mu_v)  # reparametrisation
        biases = (fp.views["bias.user"], fp.views["bias.item"]) if net.offset == "biases" else ()
        total, sse, st_e = elbo_forward(net, rows_in, mu_u, var_u, eps_u, mu_v, var_v, eps_v,
                                        *biases)  # fmt: skip
        ctx.mark_non_differentiable(sse)
        ctx.net, ctx.states = net, (st_u, st_i, st_e)
        return total, sse

    @staticmethod
    def backward(ctx, g: Tensor, _):
        net = ctx.net
        st_u, st_i, st_e = ctx.states
        layout = net.flat_params.layout
        grad = g.new_empty(layout.numel)  # every group is written below
        views = layout.split(grad)
        biases = ()
        if net.offset == "biases":  # only the block's users and items are written: zero first
            biases = (views["bias.user"].zero_(), views["bias.item"].zero_())
        d_mu_u, d_var_u, d_mu_v, d_var_v = elbo_backward(st_e, g, *biases)
        for prefix, enc, st, d_mu, d_var in (
            ("user.", net.user_encoder, st_u, d_mu_u, d_var_u),
            ("item.", net.item_encoder, st_i, d_mu_v, d_var_v),
        ):
            side = {k[len(prefix) :]: t for k, t in views.items() if k.startswith(prefix)}
            encode_backward(enc, st, d_mu, d_var, side)
        return None, None, None, None, grad


def kl_terms(mu: Tensor, var: Tensor, prior_var: float) -> Tensor:
    """2 KL[N(mu, var) || N(0, prior_var)] per coordinate: var/p + mu^2/p - 1 - log(var/p)."""
    if prior_var == 1.0:
        t = torch.addcmul(var, mu, mu)
        return t.sub_(var.log()).sub_(const(1.0, t.dtype, t.device))
    inv_p = const(1.0 / prior_var, var.dtype, var.device)
    t = torch.addcmul(var, mu, mu).mul_(inv_p)
    return t.sub_(var.mul(inv_p).log_()).sub_(const(1.0, t.dtype, t.device))


def _kl_weight(net, side: str, like: Tensor) -> Tensor:
    """0.5 beta / (blocks per entity) of one side (Eq. 7's KL weight per block)."""
    beta, blocks = (
        (net.beta_u, net.blocks_per_user) if side == "user" else (net.beta_v, net.blocks_per_item)
    )
    return const(0.5 * beta / blocks, like.dtype, like.device)
