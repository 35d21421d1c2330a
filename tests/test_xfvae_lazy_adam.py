"""LazyAdam (src/xfvae/models/lazy_adam.py): Adam on the rows a row-sparse gradient holds,
nothing on the others; exactly Adam for dense gradients."""

from __future__ import annotations

import torch

from xfvae.models.lazy_adam import LazyAdam


def row_sparse(grad: torch.Tensor, rows: list[int]) -> torch.Tensor:
    idx = torch.tensor(rows)
    return torch.sparse_coo_tensor(idx.unsqueeze(0), grad[idx], grad.shape).coalesce()


def test_rows_touched_every_step_follow_dense_adam():
    torch.manual_seed(0)
    start = torch.randn(6, 3, 2)
    grads = [torch.randn(6, 3, 2) for _ in range(5)]
    dense = torch.nn.Parameter(start.clone())
    lazy = torch.nn.Parameter(start.clone())
    opt_d = torch.optim.Adam([dense], lr=0.05, weight_decay=0.1)
    opt_l = LazyAdam([lazy], lr=0.05, weight_decay=0.1)
    for g in grads:
        dense.grad, lazy.grad = g.clone(), row_sparse(g, list(range(6)))
        opt_d.step()
        opt_l.step()
    torch.testing.assert_close(lazy.detach(), dense.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(lazy.detach(), start)


def test_untouched_rows_keep_parameter_and_moments():
    torch.manual_seed(1)
    start = torch.randn(5, 4)
    lazy = torch.nn.Parameter(start.clone())
    dense = torch.nn.Parameter(start.clone())
    opt_l = LazyAdam([lazy], lr=0.1, weight_decay=0.01)
    opt_d = torch.optim.Adam([dense], lr=0.1, weight_decay=0.01)
    g = torch.randn(5, 4)
    lazy.grad = row_sparse(g, [1, 3])
    opt_l.step()
    dense.grad = torch.zeros(5, 4)
    dense.grad[[1, 3]] = g[[1, 3]]
    opt_d.step()
    # touched rows: the first Adam step; others: unchanged (dense Adam moves them by weight decay)
    torch.testing.assert_close(lazy.detach()[[1, 3]], dense.detach()[[1, 3]])
    torch.testing.assert_close(lazy.detach()[[0, 2, 4]], start[[0, 2, 4]], rtol=0, atol=0)
    assert not torch.allclose(dense.detach()[[0, 2, 4]], start[[0, 2, 4]])
    state = opt_l.state[lazy]
    assert float(state["exp_avg"][[0, 2, 4]].abs().sum()) == 0.0
    assert float(state["exp_avg"][[1, 3]].abs().sum()) > 0.0
    # a later step on row 0 only leaves rows 1 and 3 (and their moments) where they were
    after = lazy.detach().clone()
    m13 = state["exp_avg"][[1, 3]].clone()
    lazy.grad = row_sparse(torch.randn(5, 4), [0])
    opt_l.step()
    torch.testing.assert_close(lazy.detach()[1:], after[1:], rtol=0, atol=0)
    torch.testing.assert_close(state["exp_avg"][[1, 3]], m13, rtol=0, atol=0)
    assert state["lazy_step"] == 2


def test_dense_gradients_get_plain_adam():
    torch.manual_seed(2)
    a = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = LazyAdam([a], lr=0.1, weight_decay=0.1)
    opt_b = torch.optim.Adam([b], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        g = torch.randn(4, 3)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
