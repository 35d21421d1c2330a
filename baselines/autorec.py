"""AutoRec (U-Rec and I-Rec): Sedhain, Menon, Sanner and Xie (2015), "AutoRec: Autoencoders Meet
Collaborative Filtering", WWW'15 Companion, Eq. 1-2.

I-AutoRec reconstructs each item's column of the rating matrix X (X^T rows, ``IAutoRec``), U-AutoRec
each user's row (``UAutoRec``); only observed entries enter the reconstruction loss, and rating
(u, i) is read from the reconstruction of the training row of i (I-Rec) or of u (U-Rec).

Deviations from the paper:

* Activations follow Jin et al. 4.3 by default: ReLU hidden layers and a sigmoid output mapped
  onto the rating scale [r_min, r_max]. ``activation=sigmoid, output=identity`` restores AutoRec's
  own choice (g = sigmoid, f = identity), which is what made I-AutoRec strong.
* Depth follows Jin et al. Table 2: ``hidden`` extra layers (mirrored in the decoder) around the
  ``dim``-unit code layer; AutoRec itself has exactly one hidden layer (``hidden: []``).
* Trained with mini-batch Adam instead of full-batch Rprop / L-BFGS. The objective of each batch is
  (SSE over the batch's observed entries + reg * sum of squared weight matrices) / number of those
  entries: AutoRec's lambda/2 is ``reg``, applied once per batch as in common AutoRec code, and
  biases are not penalised.
* The output bias is initialised at the training mean rating (an initialisation choice only).
* Unknown inputs are 0 (AutoRec leaves this open); the training row is the input at prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xfvae.data.train_data import TrainData

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def sparse_row_parts(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch row of each stored entry, its column, its value) of a sparse CSR batch ``rows``."""
    crow = rows.crow_indices()
    counts = crow[1:] - crow[:-1]
    local = torch.repeat_interleave(torch.arange(counts.numel(), device=crow.device), counts)
    return local, rows.col_indices(), rows.values()


class RowModel(nn.Module):
    """Common part of the row autoencoders (AutoRec, Mult-DAE, Mult-VAE).

    The training rows (X for ``batch_kind == "user_rows"``, X^T for ``"item_rows"``) are kept as CSR
    buffers so that :meth:`predict` can rebuild any row after a checkpoint restore. Subclasses
    implement ``reconstruct(dense_rows) -> [B, n_cols]`` (eval mode: deterministic).
    """

    batch_kind = "user_rows"

    def __init__(self, data: TrainData, chunk_elems: int = 2**22):
        super().__init__()
        item_side = self.batch_kind == "item_rows"
        m = data.csr_t if item_side else data.csr
        self.n_cols = data.n_users if item_side else data.n_items
        self.chunk_elems = int(chunk_elems)
        self.register_buffer("row_ptr", torch.from_numpy(m.indptr.astype("int64")))
        self.register_buffer("row_col", torch.from_numpy(m.indices.astype("int64")))
        self.register_buffer("row_val", torch.from_numpy(m.data.astype("float32")))
        self.global_mean = data.global_mean
        self.rating_min, self.rating_max = data.rating_min, data.rating_max

    def reconstruct(self, dense_rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Dense training rows ``[len(index), n_cols]`` (0 = unobserved), gathered without a loop."""
        start = self.row_ptr[index]
        counts = self.row_ptr[index + 1] - start
        total = int(counts.sum())
        local = torch.repeat_interleave(torch.arange(index.numel(), device=index.device), counts)
        offset = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts)
        pos = torch.arange(total, device=index.device) + offset
        dense = torch.zeros(index.numel(), self.n_cols, device=self.row_val.device)
        dense[local, self.row_col[pos]] = self.row_val[pos]
        return dense

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Reconstruct each requested row once, in chunks of ``chunk_elems`` values, and read the entries."""
        rows, cols = (items, users) if self.batch_kind == "item_rows" else (users, items)
        uniq, inv = torch.unique(rows, return_inverse=True)
        order = torch.argsort(inv)
        chunk = max(1, self.chunk_elems // max(1, self.n_cols))
        edges = torch.arange(0, uniq.numel() + chunk, chunk, device=rows.device)
        bounds = torch.searchsorted(inv[order], edges).tolist()
        out = torch.empty(rows.shape, dtype=torch.float32, device=rows.device)
        for k, s in enumerate(range(0, uniq.numel(), chunk)):
            recon = self.reconstruct(self.training_rows(uniq[s : s + chunk]))
            sel = order[bounds[k] : bounds[k + 1]]
            out[sel] = recon[inv[sel] - s, cols[sel]]
        return out

    @staticmethod
    def masked_sse(recon: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Sum of squared errors over the observed entries of the sparse batch ``rows`` only."""
        local, col, val = sparse_row_parts(rows)
        return ((recon[local, col] - val) ** 2).sum(), int(val.numel())

    @staticmethod
    def dense(rows: torch.Tensor) -> torch.Tensor:
        local, col, val = sparse_row_parts(rows)
        out = torch.zeros(rows.shape, dtype=val.dtype, device=val.device)
        out[local, col] = val
        return out

    def weight_norm(self) -> torch.Tensor:
        """Sum of squared entries of every weight matrix (biases excluded)."""
        return sum(m.weight.pow(2).sum() for m in self.modules() if isinstance(m, nn.Linear))


def layer_sizes(hidden: Sequence[int] | int | str | None) -> list[int]:
    """Hidden layer sizes from a list, one int, or a string ``"100-50"`` (``""``: none). Strings let
    the Optuna sweeper, whose categorical choices must be scalars, search over depth."""
    if hidden is None or hidden == "":
        return []
    if isinstance(hidden, int):
        return [hidden]
    if isinstance(hidden, str):
        try:
            return [int(h) for h in hidden.split("-")]
        except ValueError:
            raise ValueError(
                f"hidden={hidden!r}: write layer sizes as '100-50' or a list [100, 50]"
            ) from None
    return [int(h) for h in hidden]


def mlp(sizes: Sequence[int], act: str, last_act: str | None) -> nn.Sequential:
    """Linear layers through ``sizes`` with ``act`` between them and ``last_act`` after the last."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        is_last = k == len(sizes) - 2
        if not is_last:
            layers.append(activation(act))
        elif last_act is not None:
            layers.append(activation(last_act))
    return nn.Sequential(*layers)


class AutoRec(RowModel):
    """Parameters: ``dim`` code units (AutoRec's k), ``hidden`` extra encoder layer sizes (decoder
    mirrored), ``activation`` of hidden/code layers, ``output`` ``sigmoid`` (scaled to the rating
    scale) or ``identity``, ``reg`` L2 weight on the weight matrices."""

    def __init__(
        self,
        data: TrainData,
        dim: int = 500,
        hidden: Sequence[int] | str = (),
        activation: str = "relu",
        output: str = "sigmoid",
        reg: float = 0.1,
        chunk_elems: int = 2**22,
    ):
        super().__init__(data, chunk_elems)
        if output not in ("sigmoid", "identity"):
            raise ValueError(f"AutoRec output must be 'sigmoid' or 'identity', got {output!r}")
        self.output, self.reg = output, float(reg)
        sizes = [self.n_cols, *layer_sizes(hidden), dim]
        self.encoder = mlp(sizes, activation, activation)
        self.decoder = mlp(sizes[::-1], activation, None)
        last = self.decoder[-1]
        span = self.rating_max - self.rating_min
        with torch.no_grad():
            if output == "sigmoid":
                p = min(max((self.global_mean - self.rating_min) / span, 0.01), 0.99)
                last.bias.fill_(float(torch.logit(torch.tensor(p))))
            else:
                last.bias.fill_(self.global_mean)

    def reconstruct(self, dense_rows: torch.Tensor) -> torch.Tensor:
        z = self.decoder(self.encoder(dense_rows))
        if self.output == "sigmoid":
            return self.rating_min + (self.rating_max - self.rating_min) * torch.sigmoid(z)
        return z

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = batch["rows"]
        sse, n = self.masked_sse(self.reconstruct(self.dense(rows)), rows)
        n = max(n, 1)
        return {"loss": (sse + self.reg * self.weight_norm()) / n, "mse": sse.detach() / n}


class UAutoRec(AutoRec):
    """U-Rec: autoencoder over user rows of X."""

    batch_kind = "user_rows"


class IAutoRec(AutoRec):
    """I-Rec: autoencoder over item rows of X^T (columns of X)."""

    batch_kind = "item_rows"
