"""Parameters stored as views into one flat tensor, which the optimiser updates instead (issue 21).

A training step pays a fixed number of operator calls per parameter tensor: four in the backward
pass (``AccumulateGrad``) and seven in fused Adam's CPU path. The cross-feedback VAE has 30 small
and large tensors, so a third of its block step was this bookkeeping. :class:`FlatParams` copies a
list of parameters into one flat buffer and points each parameter's data at its slice: the module,
its ``state_dict`` (names and shapes), weight averaging and the general code path see the same
parameters as before, while the fused training path (``models/fused_block.py``) takes the flat
tensor as its one input and returns its gradient as one tensor, and the optimiser updates that
tensor.

Adam is element-wise, so updating one flat tensor is the same arithmetic as updating its pieces
(same hyperparameters, one parameter group; every piece gets its gradient in the same steps, as
the fused path guarantees), except in the last bits: Adam's CPU kernel computes the last values of
each tensor that do not fill a vector register with scalar code, which rounds some of them
differently, and in one flat tensor those values fall inside the vector loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FlatLayout:
    """Where each parameter and each named group lives in a flat tensor of ``numel`` values.

    ``groups``: named runs of consecutive parameters and the shape to view each run as (a run is
    contiguous in the buffer, so e.g. two heads' weights are one [2K, S] matrix without a copy).
    """

    def __init__(self, shapes: list[torch.Size], groups: list[tuple[str, int, tuple[int, ...]]]):
        self._params, self._groups, i, a = [], [], 0, 0
        for name, count, shape in groups:  # no gaps: a gradient that writes every group is whole
            start = a
            for s in shapes[i : i + count]:
                self._params.append((a, tuple(s), _strides(tuple(s))))
                a += math.prod(s)
            if a - start != math.prod(shape):
                raise ValueError(
                    f"flat group {name}: {a - start} values cannot be viewed as {shape}"
                )
            self._groups.append((name, start, tuple(shape), _strides(tuple(shape))))
            i += count
        if i != len(shapes):
            raise ValueError(f"the groups cover {i} of {len(shapes)} parameters")
        self.numel = a

    def gather(self, tensors: list[Tensor]) -> Tensor:
        """One tensor with this layout holding ``tensors``; no autograd."""
        out = tensors[0].new_empty(self.numel)
        for t, piece in zip(tensors, self.split_params(out), strict=True):
            piece.copy_(t.detach())
        return out

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """The groups of a tensor with this layout, one ``as_strided`` call each."""
        return {name: flat.as_strided(shape, stride, a) for name, a, shape, stride in self._groups}

    def split_params(self, flat: Tensor) -> tuple[Tensor, ...]:
        """The parameters' pieces of a tensor with this layout (e.g. their gradients)."""
        return tuple(flat.as_strided(shape, stride, a) for a, shape, stride in self._params)


class FlatParams:
    """``params`` (same dtype and device) as views into ``self.flat``, a leaf ``nn.Parameter``;
    ``views`` holds the layout's groups of its data and ``views_t`` the transposes of those that
    are matrices (no autograd; rebuilt when the data moves)."""

    def __init__(self, params: list[nn.Parameter], groups: list[tuple[str, int, tuple[int, ...]]]):
        self.params = list(params)
        self.layout = FlatLayout([p.shape for p in self.params], groups)
        self.flat = nn.Parameter(self.layout.gather(self.params))
        self._point_params_at(self.flat.data)

    def _point_params_at(self, buf: Tensor) -> None:
        for p, piece in zip(self.params, self.layout.split_params(buf), strict=True):
            p.data = piece
        self.views = self.layout.split(buf)
        # and the transposes of the matrices (last two dimensions), which products take
        self.views_t = {k: v.transpose(-1, -2) for k, v in self.views.items() if v.dim() >= 2}
        self._scopes: dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}

    def scope(self, prefix: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``views`` and ``views_t`` of the groups named ``prefix...``, without the prefix."""
        if prefix not in self._scopes:
            n = len(prefix)
            self._scopes[prefix] = tuple(
                {k[n:]: t for k, t in d.items() if k.startswith(prefix)}
                for d in (self.views, self.views_t)
            )
        return self._scopes[prefix]

    def owns_data(self) -> bool:
        """Whether every parameter still lives in ``self.flat`` (``Module._apply`` gives them new
        data when a model moves to another device or dtype)."""
        base = self.flat.data.untyped_storage().data_ptr()
        return all(p.data.untyped_storage().data_ptr() == base for p in self.params)

    def refresh(self) -> None:
        """Rebuild the buffer from the parameters' current data (after a move), keeping the same
        ``self.flat`` object, so that an optimiser holding it follows the move."""
        self.flat.data = self.layout.gather(self.params)
        self._point_params_at(self.flat.data)


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))
