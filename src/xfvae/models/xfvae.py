"""The cross-feedback VAE of Jin et al. (paper section 3): Eq. 7-10 and Algorithm 1.

Two encoders (:class:`~xfvae.models.encoder.SideEncoder`) give q(u_i | X_i, V_i) and
q(v_j | X_j, U_j); the decoder is the dot product u_i . v_j with a Gaussian likelihood on the
observed training ratings. Training follows Algorithm 1 through the loop's hooks:

* ``on_fit_start``: step 2, U and V ~ N(init_mean, init_sd^2).
* ``on_train_epoch_start``: step 6, the latent inputs are the current samples (buffers
  ``latent_users``/``latent_items``, no gradient through them).
* ``loss(block)``: steps 8-12 for one (user batch x item batch) block of the shared datamodule.
* ``on_train_epoch_end``: step 15, U and V are resampled from the encoders (reparametrisation).

Prediction uses the posterior means of both encoders (cached until the parameters change); with
``predict_latent: mean`` the latent inputs when predicting are the other side's posterior means
(computed alongside the step-15 samples) instead of the samples themselves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xfvae.data.batches import Block
from xfvae.data.train_data import TrainData
from xfvae.models.attention import ATTENTION_KINDS, RowSlice
from xfvae.models.encoder import SideEncoder, range_rows, slice_rows
from xfvae.models.flat_params import FlatParams
from xfvae.models.fused import flat_layout
from xfvae.models.fused_block import BlockElbo, FusedBlock, kl_terms

ITERATIONS = ("nested", "sequential")
OFFSETS = ("none", "global", "biases")
PREDICT_LATENTS = ("sample", "mean")


def gaussian_kl(mu: Tensor, var: Tensor, prior_var: float) -> Tensor:
    """KL[N(mu, diag var) || N(0, prior_var I)] of each row (Eq. 7's KL terms)."""
    return 0.5 * kl_terms(mu, var, prior_var).sum(-1)


def resolve_attention(attention: str, density: float, threshold: float) -> str:
    """``auto``: local attention when the training matrix is dense enough, global otherwise (paper 3.4)."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    if attention != "auto":
        return attention
    return "local" if density >= threshold else "global"


class CrossFeedbackVAE(nn.Module):
    """VAE-BMF with cross-feedback connectivity and attention (paper Fig. 1, Algorithm 1).

    Args:
        data: the training split (shape, ratings, sparse rows).
        dim: K, embedding dimension of u_i and v_j.
        inter_dim: K', dimension of the intermediate embeddings H and G.
        input_layers / input_width: L' and M^(l') of the observed and latent MLPs (Eq. 8).
        output_layers / output_width: L and M^(l) of the final MLPs (mean and variance).
        use_data_input: keep the observed-input MLPs (Table 4 "no data input" sets false).
        use_cross_feedback: keep the latent-input MLPs (Table 4 "no cross feedback" sets false).
        attention: none | local | global | auto (auto: local iff density >= auto_density_threshold).
        attention_norm: softmax (scaled, masked; default) | ratio (Eq. 9 as printed).
        attention_merge: concat (paper) | add.
        beta_u / beta_v: weights of the user / item KL sums in Eq. 7.
        prior_sd: standard deviation of the N(0, prior_sd^2 I) priors.
        init_mean / init_sd: Algorithm 1 step 2, U, V ~ N(init_mean, init_sd^2).
        iteration: nested (Algorithm 1) | sequential (alternate user-side / item-side updates).
        block_size: [B_U, B_V] of the datamodule (for the per-block KL share).
        offset: none (paper) | global (train mean) | biases (mean + learned user/item biases).
        predict_latent: the latent inputs when predicting: sample (the epoch's U, V samples, as in
            training) | mean (the posterior means computed with those samples; deterministic).
        separate_variance: give the posterior variance its own observed, latent and final MLPs
            (paper 3.2); false (default): the variance shares the input MLPs with the mean.
        sparse_update: the first-layer tables (W_0, Phi_0 of both sides, most of the parameters)
            get row-sparse gradients holding only the rows the block touched; needs an optimiser
            that takes them (``xfvae.models.lazy_adam.LazyAdam``: a lazy Adam, a deviation).
        var_floor: the posterior variances are ``var_floor + (1 - var_floor) sigmoid(.)`` instead
            of the paper's ``sigmoid(.)`` (0): a float32 sigmoid underflows to 0, and log 0 in the
            KL made searched configurations diverge (a deviation; README).
        eval_chunk: rows per chunk when encoding all users / items (resampling, prediction).
    """

    batch_kind = "blocks"

    def __init__(
        self,
        data: TrainData,
        dim: int = 25,
        inter_dim: int = 25,
        input_layers: int = 0,
        input_width: int = 50,
        output_layers: int = 0,
        output_width: int = 50,
        use_data_input: bool = True,
        use_cross_feedback: bool = True,
        attention: str = "auto",
        attention_norm: str = "softmax",
        attention_merge: str = "concat",
        auto_density_threshold: float = 0.01,
        beta_u: float = 1.0,
        beta_v: float = 1.0,
        prior_sd: float = 1.0,
        init_mean: float = 0.0,
        init_sd: float = 1.0,
        iteration: str = "nested",
        block_size: tuple[int, int] | list[int] = (100, 100),
        offset: str = "none",
        predict_latent: str = "sample",
        separate_variance: bool = False,
        sparse_update: bool = False,
        var_floor: float = 1e-6,
        eval_chunk: int = 2048,
    ):
        super().__init__()
        if iteration not in ITERATIONS:
            raise ValueError(f"iteration must be one of {ITERATIONS}, got {iteration!r}")
        if offset not in OFFSETS:
            raise ValueError(f"offset must be one of {OFFSETS}, got {offset!r}")
        if predict_latent not in PREDICT_LATENTS:
            raise ValueError(
                f"predict_latent must be one of {PREDICT_LATENTS}, got {predict_latent!r}"
            )
        if len(block_size) != 2 or min(block_size) < 1:
            raise ValueError(f"block_size must be [B_U, B_V] with positive sizes, got {block_size}")
        if (
            min(dim, inter_dim, input_width, output_width) < 1
            or min(input_layers, output_layers) < 0
        ):
            raise ValueError("dim, inter_dim and widths must be >= 1 and layer counts >= 0")
        self.n_users, self.n_items, self.dim = data.n_users, data.n_items, dim
        self.attention = resolve_attention(attention, data.density, auto_density_threshold)
        self.beta_u, self.beta_v, self.prior_var = (
            float(beta_u),
            float(beta_v),
            float(prior_sd) ** 2,
        )
        self.init_mean, self.init_sd = float(init_mean), float(init_sd)
        self.iteration, self.offset, self.eval_chunk = iteration, offset, int(eval_chunk)
        self.predict_latent = predict_latent
        shared = dict(
            dim=dim,
            inter_dim=inter_dim,
            input_layers=input_layers,
            input_width=input_width,
            output_layers=output_layers,
            output_width=output_width,
            use_data_input=use_data_input,
            use_cross_feedback=use_cross_feedback,
            attention=self.attention,
            attention_norm=attention_norm,
            attention_merge=attention_merge,
            separate_variance=separate_variance,
            sparse_grad=sparse_update,
            var_floor=var_floor,
        )
        self.user_encoder = SideEncoder(n_cols=data.n_items, **shared)  # q(u_i | X_i, V_i)
        self.item_encoder = SideEncoder(n_cols=data.n_users, **shared)  # q(v_j | X_j, U_j)
        if offset == "biases":
            self.user_bias = nn.Parameter(torch.zeros(data.n_users))
            self.item_bias = nn.Parameter(torch.zeros(data.n_items))
        self.register_buffer(
            "mean_rating", torch.tensor(data.global_mean if offset != "none" else 0.0)
        )

        # Each user is in ceil(J / B_V) blocks per epoch and each item in ceil(I / B_U): dividing
        # the block's KL sums by these counts makes one epoch's summed loss exactly -Eq. 7 / scale.
        b_u, b_v = int(block_size[0]), int(block_size[1])
        self.blocks_per_user = math.ceil(data.n_items / b_v)
        self.blocks_per_item = math.ceil(data.n_users / b_u)
        n_blocks = self.blocks_per_user * self.blocks_per_item
        self.loss_scale = max(1.0, data.n_ratings / n_blocks)  # mean ratings per block

        # The training rows in CSR form (derived from data, for encoding all users / items), kept
        # as plain tensors moved by _apply, not as buffers: weight averaging copies every buffer
        # at every step. indptr also stays on the host: chunk sizes without reading the device.
        self._indptr_host = {}
        self._csr: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for name, m in (("user", data.csr), ("item", data.csr_t)):
            self._indptr_host[name] = m.indptr.astype("int64")
            self._csr[name] = (
                torch.from_numpy(m.indptr.astype("int64")),
                torch.from_numpy(m.indices.astype("int64")),
                torch.from_numpy(m.data.astype("float32")),
            )
        # 1.0 where the user / item has training ratings: the per-row factor of the KL terms
        self.register_buffer("user_seen", data.user_seen.to(torch.float32), persistent=False)
        self.register_buffer("item_seen", data.item_seen.to(torch.float32), persistent=False)

        # Algorithm 1 state: samples U, V (and the posterior means they were drawn around), and
        # the latent inputs built from them at step 6: Z_U from V (user side), Z_V from U.
        for name, n in (("U", data.n_users), ("V", data.n_items)):
            self.register_buffer(name, torch.zeros(n, dim))
            self.register_buffer(f"{name}_mean", torch.zeros(n, dim))
        for name, n in (("latent_users", data.n_users), ("latent_items", data.n_items)):
            self.register_buffer(name, torch.zeros(n, dim))
            self.register_buffer(f"{name}_mean", torch.zeros(n, dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0))  # sequential iteration alternates on parity
        # Host mirrors of the two buffers above, so that a step reads nothing from the device.
        self._initialized, self._steps = False, 0
        self._version = 0  # bumped whenever parameters or latent inputs may have changed
        self._cache: dict[bool, tuple] = {}  # for_prediction -> (version, mu_u, var_u, mu_v, var_v)
        self.register_load_state_dict_post_hook(lambda module, _: module._after_load())
        # one tensor holding every parameter, once the optimiser was given it (optimizer_parameters)
        self.flat_params: FlatParams | None = None

    def _after_load(self) -> None:
        self._initialized, self._steps = bool(self.initialized), int(self.steps)
        self._invalidate()

    # ----- Algorithm 1 hooks ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Algorithm 1, step 2: U, V ~ N(init_mean, init_sd^2)."""
        with torch.no_grad():
            for name in ("U", "V"):
                getattr(self, name).normal_(self.init_mean, self.init_sd)
                getattr(self, f"{name}_mean").fill_(self.init_mean)
            self.initialized.fill_(True)
        self._initialized = True
        self._invalidate()

    def on_train_epoch_start(self, epoch: int) -> None:
        """Algorithm 1, step 6: latent inputs Z_U from V and Z_V from U (fixed for the epoch)."""
        if not self._initialized:
            self.on_fit_start()
        with torch.no_grad():
            self.latent_items.copy_(self.V)
            self.latent_users.copy_(self.U)
            self.latent_items_mean.copy_(self.V_mean)
            self.latent_users_mean.copy_(self.U_mean)
        self._invalidate()

    def on_train_epoch_end(self, epoch: int) -> None:
        """Algorithm 1, step 15: resample all U, V with the reparametrisation trick."""
        mu_u, var_u, mu_v, var_v = self.encode_all(for_prediction=False)
        with torch.no_grad():
            self.U.copy_(mu_u + var_u.sqrt() * torch.randn_like(mu_u))
            self.V.copy_(mu_v + var_v.sqrt() * torch.randn_like(mu_v))
            self.U_mean.copy_(mu_u)
            self.V_mean.copy_(mu_v)

    # ----- encoders -----------------------------------------------------------------------------
    def user_rows(self, users: Tensor) -> RowSlice:
        return slice_rows(*self._csr["user"], users)

    def item_rows(self, items: Tensor) -> RowSlice:
        return slice_rows(*self._csr["item"], items)

    def _range_rows(self, side: str, a: int, b: int) -> RowSlice:
        indptr, indices, values = self._csr[side]
        return range_rows(indptr, self._indptr_host[side], indices, values, a, b)

    def latents(self, for_prediction: bool = False) -> tuple[Tensor, Tensor]:
        """(latent input of the user side = item embeddings, of the item side = user embeddings)."""
        if for_prediction and self.predict_latent == "mean":
            return self.latent_items_mean, self.latent_users_mean
        return self.latent_items, self.latent_users

    def encode_users(self, users: Tensor, keys: Tensor | None = None, table: Tensor | None = None):
        keys = self.latent_items if keys is None else keys
        return self.user_encoder(self.user_rows(users), keys, table)

    def encode_items(self, items: Tensor, keys: Tensor | None = None, table: Tensor | None = None):
        keys = self.latent_users if keys is None else keys
        return self.item_encoder(self.item_rows(items), keys, table)

    @torch.no_grad()
    def encode_all(self, for_prediction: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Posterior (mean, variance) of every user and item (cached until parameters change)."""
        hit = self._cache.get(for_prediction)
        if hit is None or hit[0] != self._version:
            self._cache[for_prediction] = hit = (self._version, *self._encode_all(for_prediction))
        return hit[1:]

    def _encode_all(self, for_prediction: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All rows of both sides through their encoders, in chunks of ``eval_chunk`` rows."""
        out = []
        items_in, users_in = self.latents(for_prediction)
        for enc, keys, n, side in (
            (self.user_encoder, items_in, self.n_users, "user"),
            (self.item_encoder, users_in, self.n_items, "item"),
        ):
            table = enc.latent_table(keys) if enc.use_cross_feedback else None
            parts = [
                enc(self._range_rows(side, a, min(a + self.eval_chunk, n)), keys, table)
                for a in range(0, n, self.eval_chunk)
            ]
            out += [torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])]
        return out[0], out[1], out[2], out[3]

    # ----- training ---------------------------------------------------------------------------
    def _offset(self, users: Tensor, items: Tensor) -> Tensor | float:
        if self.offset == "biases":
            return self.mean_rating + self.user_bias[users] + self.item_bias[items]
        return self.mean_rating

    def _block_rows(self, batch) -> tuple[RowSlice, RowSlice]:
        """The block's user rows and item rows."""
        if isinstance(batch, Block):  # precomputed by the plan, on the device: no work, no sync
            return batch.user_rows, batch.item_rows
        return self.user_rows(batch["users"]), self.item_rows(batch["items"])

    def loss(self, batch: Block | dict[str, Tensor]) -> dict[str, Tensor]:
        """-Eq. 7 restricted to one block (Algorithm 1, steps 8-11), divided by ``loss_scale``.

        Likelihood: squared error of u_i . v_j on the block's observed ratings (Gaussian with
        variance 1/2). KL: the block's users' and items' KL sums, times beta_u / blocks_per_user
        and beta_v / blocks_per_item, so that the sum over one epoch's blocks is Eq. 7's.
        Reads no value from the device (no host-device synchronisation) for a :class:`Block`.
        """
        if not self._initialized:
            raise RuntimeError(
                "CrossFeedbackVAE.loss called before on_fit_start/on_train_epoch_start: "
                "U, V and the latent inputs are not built yet (Algorithm 1, steps 2 and 6)"
            )
        users, items = batch["users"], batch["items"]
        user_rows, item_rows = self._block_rows(batch)
        block = (users, items, batch["obs_u"], batch["obs_i"], batch["ratings"])
        # sequential: even steps update the user side only, odd steps the item side only.
        parity = self._steps % 2
        train_users = self.iteration == "nested" or parity == 0
        train_items = self.iteration == "nested" or parity == 1
        self._steps += 1
        self.steps += 1
        self._invalidate()
        n_ratings = max(1, batch["ratings"].numel())
        if self.flat_params is not None and torch.is_grad_enabled():  # one node, one gradient
            if not (user_rows.has_transpose and item_rows.has_transpose):
                raise RuntimeError(
                    "the flat parameter tensor (optimizer_parameters) trains on the datamodule's "
                    "blocks only (rows with transposes), not on a dict of users and items"
                )
            total, sse = FusedBlock.apply(self, block, user_rows, item_rows, self.flat_params.flat)
            return {"loss": total, "mse": sse / n_ratings}
        with torch.set_grad_enabled(train_users and torch.is_grad_enabled()):
            mu_u, var_u = self.user_encoder(user_rows, self.latent_items)
        with torch.set_grad_enabled(train_items and torch.is_grad_enabled()):
            mu_v, var_v = self.item_encoder(item_rows, self.latent_users)
        eps_u, eps_v = torch.randn_like(mu_u), torch.randn_like(mu_v)  # reparametrisation
        biases = (self.user_bias, self.item_bias) if self.offset == "biases" else ()
        # Eq. 7: squared error of the block's ratings + beta-weighted KL sums, one autograd node
        total, sse = BlockElbo.apply(self, block, mu_u, var_u, eps_u, mu_v, var_v, eps_v, *biases)
        # Few extra keys: the loop logs each one every step.
        return {"loss": total, "mse": sse / n_ratings}

    # ----- caches and devices ---------------------------------------------------------------------
    def _invalidate(self) -> None:
        self._version += 1

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .double(): cached means are stale
        self._invalidate()
        self._csr = {k: tuple(fn(t) for t in v) for k, v in self._csr.items()}
        out = super()._apply(fn, *args, **kwargs)
        fp = self.flat_params
        if fp is not None and not fp.owns_data():  # parameters moved: the flat tensor follows
            fp.refresh()
        return out

    # ----- optimisation -------------------------------------------------------------------------
    def optimizer_parameters(self) -> list[Tensor]:
        """The tensors the optimiser updates (``xfvae.models.base``). When both encoders take the
        fused training path and the iteration is nested, every parameter is stored in one flat
        tensor (:class:`~xfvae.models.flat_params.FlatParams`), the optimiser gets that tensor
        instead of 30, and a training block is one autograd node (``FusedBlock``; issue 21: fewer
        operator calls per step). The parameters keep their names, shapes and values (views of the
        flat tensor). Adam is element-wise, so this changes only which values its kernel handles
        in vector lanes: results differ from the per-tensor update in the last bit of a few
        values. Sequential iteration keeps one tensor per parameter: there each step leaves one
        side without a gradient, which Adam must skip, not treat as zero."""
        encs = (self.user_encoder, self.item_encoder)
        flattenable = (
            self.iteration == "nested"
            and all(e.fusable for e in encs)
            and all(p.requires_grad for p in self.parameters())
        )
        if flattenable and self.flat_params is None:
            params, groups = [], []
            for prefix, enc in (("user.", encs[0]), ("item.", encs[1])):
                p, g = flat_layout(enc, with_phi0=True)
                params += p
                groups += [(prefix + name, count, shape) for name, count, shape in g]
            if self.offset == "biases":
                params += [self.user_bias, self.item_bias]
                groups += [("bias.user", 1, (self.n_users,)), ("bias.item", 1, (self.n_items,))]
            self.flat_params = FlatParams(params, groups)
            for enc in encs:
                enc.flat_params = self.flat_params
        if self.flat_params is None:
            return [p for p in self.parameters() if p.requires_grad]
        held = {id(p) for p in self.flat_params.params}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in held]
        return [self.flat_params.flat] + rest

    # ----- prediction ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Rating of each pair from the posterior means: mu_u_i . mu_v_j (+ offset)."""
        mu_u, _, mu_v, _ = self.encode_all(for_prediction=True)
        return (mu_u[users] * mu_v[items]).sum(-1) + self._offset(users, items)
