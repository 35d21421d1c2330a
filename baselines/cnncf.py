"""CNN-CF (ConvNCF): He, Du, Wang, Tian, Tang and Chua (2018), "Outer Product-based Neural
Collaborative Filtering", IJCAI'18, section 2 (Eq. 2 interaction map, Eq. 3-4 convolutions).

The outer product p_u q_i^T of the user and item embeddings is a K x K map; 2 x 2 convolutions with
stride 2 and ReLU halve it layer by layer (log2 K layers reach 1 x 1, as the original's 6 layers
for K = 64 with 32 channels), and a linear layer reads the result.

Deviations from the paper:

* Squared error on explicit ratings instead of BPR on implicit feedback (Jin et al. 4.3); the
  output bias starts at the training mean rating.
* ``n_conv`` (Jin et al. Table 2: 1 to 6 layers) may stop before 1 x 1; the remaining
  (K / 2^n_conv)^2 x channels features are flattened into the output layer.
* No pre-training of the embeddings with MF-BPR. From scratch, small embeddings under PyTorch's
  default conv init give bias-dominated, input-independent feature maps (the net then only learns
  the mean rating), so embeddings start at N(0, ``init_std``^2) with ``init_std = 0.1``, conv
  weights He-normal and conv biases 0.
* L2 with one weight ``reg`` on everything, as :mod:`baselines.ncf`: (SSE + reg * (sum over the
  batch's ratings of |p_u|^2 + |q_i|^2 + sum of squared conv and output weights)) / batch size;
  the original uses separate weights for embeddings, convolutions and output.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.ncf import embedding, penalised_squared_error, predict_in_chunks
from xfvae.data.train_data import TrainData


class ConvNCF(nn.Module):
    """Parameters: ``dim`` embedding size K, ``channels`` feature maps per conv layer, ``n_conv``
    number of conv layers (default: halve while K is even, log2 K layers for a power of two),
    ``reg`` L2 weight, ``init_std`` of the embeddings,
    ``predict_chunk`` pairs per forward pass in :meth:`predict` (default: as many as keep the
    first feature maps near 2^20 values on a CPU, about 4 MB, so that they stay in its cache: 128
    pairs at K = 32, measured 2.7x faster per pair on one thread than 4,096 pairs; near 2^25 values
    on a GPU, where fewer, larger kernels pay)."""

    batch_kind = "triples"

    def __init__(
        self,
        data: TrainData,
        dim: int = 64,
        channels: int = 32,
        n_conv: int | None = None,
        reg: float = 0.0,
        init_std: float = 0.1,
        predict_chunk: int | None = None,
    ):
        super().__init__()
        max_conv = (dim & -dim).bit_length() - 1  # times K can be halved exactly
        n_conv = max_conv if n_conv is None else int(n_conv)
        if not 1 <= n_conv <= max_conv:
            raise ValueError(
                f"ConvNCF: n_conv={n_conv} needs K={dim} divisible by 2^{n_conv}; "
                f"choose n_conv in 1..{max_conv} or a K that is a power of two (model.net.dim)"
            )
        self.reg = float(reg)
        self.per_pair = channels * (dim // 2) ** 2
        self.predict_chunk = int(predict_chunk) if predict_chunk else None
        self.p, self.q = (
            embedding(data.n_users, dim, init_std),
            embedding(data.n_items, dim, init_std),
        )
        layers: list[nn.Module] = []
        for k in range(n_conv):
            conv = nn.Conv2d(1 if k == 0 else channels, channels, 2, stride=2)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        side = dim >> n_conv
        self.out = nn.Linear(channels * side * side, 1)
        nn.init.constant_(self.out.bias, data.global_mean)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        interaction = self.p(users).unsqueeze(2) * self.q(items).unsqueeze(1)  # Eq. 2: [B, K, K]
        return self.out(self.convs(interaction.unsqueeze(1)).flatten(1)).squeeze(-1)

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        values = 2**20 if users.device.type == "cpu" else 2**25
        return predict_in_chunks(
            self, users, items, self.predict_chunk or max(1, values // self.per_pair)
        )

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        weights = [m.weight for m in self.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        emb = self.p(users).pow(2).sum() + self.q(items).pow(2).sum()
        return emb + sum(w.pow(2).sum() for w in weights)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return penalised_squared_error(self, batch)
