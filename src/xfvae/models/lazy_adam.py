"""Adam with lazy updates of row-sparse gradients (a deviation from dense Adam, like TensorFlow's
LazyAdam), for the cross-feedback VAE's ``sparse_update``.

With ``model.net.sparse_update=true`` the first-layer tables W_0 and Phi_0 of both encoders (most
of the parameters: N x M and N x K x M per side) receive gradients holding only the rows the block
touched (a sparse COO tensor). Dense Adam would move every row at every step (its moments keep
decaying, and the L2 weight decay enters every row's gradient); the lazy update touches only the
block's rows: their moments, bias-corrected with the optimiser's global step count, and the
parameter, with the L2 weight decay of those rows. Rows a block does not touch keep parameter and
moments until a block touches them. Parameters with dense gradients get exactly torch.optim.Adam
(so with ``sparse_update=false`` this optimiser is Adam).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class LazyAdam(torch.optim.Adam):
    """torch.optim.Adam for dense gradients; lazy row updates for row-sparse ones (see module)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lazy = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    lazy.append((group, p, p.grad))
                    p.grad = None  # Adam skips it
        super().step()
        for group, p, grad in lazy:
            p.grad = grad
            self._lazy_update(group, p, grad)
        return loss

    def _lazy_update(self, group: dict, p: Tensor, grad: Tensor) -> None:
        if group["amsgrad"] or group["maximize"] or group["decoupled_weight_decay"]:
            raise ValueError("LazyAdam's row updates support plain Adam only (no amsgrad, ...)")
        state = self.state[p]
        if "lazy_step" not in state:  # a host-side count: reading it needs no device sync
            state["lazy_step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["lazy_step"] += 1
        step = state["lazy_step"]
        beta1, beta2 = group["betas"]
        grad = grad.coalesce() if not grad.is_coalesced() else grad
        rows, g = grad._indices()[0], grad._values()
        if group["weight_decay"]:
            g = g.add(p.index_select(0, rows), alpha=group["weight_decay"])
        m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
        update = m.div_(denom).mul_(-group["lr"] / (1 - beta1**step))
        p.index_copy_(0, rows, p.index_select(0, rows).add_(update))
