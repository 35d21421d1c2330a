"""Row autoencoders (AutoRec, Mult-DAE, Mult-VAE): reading a rating from the reconstructed
training row, chunked without a dense users x items matrix, and each model's own mechanics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.autorec import IAutoRec, UAutoRec
from baselines.daecf import MultDAE
from baselines.vaecf import MultVAE
from tests.test_baselines_contract import Synthetic


@pytest.fixture(scope="module")
def synth() -> Synthetic:
    return Synthetic(n_users=40, n_items=30, seed=1)


@pytest.mark.parametrize("transpose", [False, True])
def test_training_rows_match_the_scipy_matrix(synth, transpose):
    model = (IAutoRec if transpose else UAutoRec)(synth.train, dim=4)
    index = torch.tensor([3, 0, 3, 17, 29])  # unsorted, repeated
    m = synth.train.csr_t if transpose else synth.train.csr
    expected = torch.tensor(m[index.numpy()].toarray())
    torch.testing.assert_close(model.training_rows(index), expected)


@pytest.mark.parametrize(
    "factory",
    [
        lambda d: UAutoRec(d, dim=6),
        lambda d: IAutoRec(d, dim=6, activation="sigmoid", output="identity"),
        lambda d: MultDAE(d, dim=6),
        lambda d: MultVAE(d, dim=4, hidden=(8,)),
    ],
    ids=["urec", "irec", "daecf", "vaecf"],
)
def test_predict_reads_the_reconstructed_training_row_in_chunks(synth, factory):
    """predict(u, i) = reconstruct(training row)[entry], whatever the chunking (one row per chunk
    here), equal to one dense reconstruction of every row."""
    torch.manual_seed(0)
    model = factory(synth.train).eval()
    item_side = model.batch_kind == "item_rows"
    g = np.random.default_rng(0)
    users = torch.tensor(g.integers(0, 40, size=200))
    items = torch.tensor(g.integers(0, 30, size=200))
    with torch.no_grad():
        whole = model.reconstruct(
            torch.tensor((synth.train.csr_t if item_side else synth.train.csr).toarray())
        )
        expected = whole[items, users] if item_side else whole[users, items]
        model.chunk_elems = 1  # one row per chunk
        torch.testing.assert_close(model.predict(users, items), expected)
        model.chunk_elems = 2**22
        torch.testing.assert_close(model.predict(users, items), expected)


def test_autorec_sigmoid_output_stays_on_the_rating_scale(synth):
    model = UAutoRec(synth.train, dim=5, output="sigmoid").eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(50)  # saturate
        pred = model.predict(torch.arange(40).repeat(30), torch.arange(30).repeat_interleave(40))
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    assert pred.max() - pred.min() > 2.0
    with pytest.raises(ValueError, match="output"):
        UAutoRec(synth.train, output="softmax")


def test_autorec_starts_at_the_mean_rating(synth):
    """Output bias initialisation: a zero code gives the training mean (both output kinds)."""
    for output in ("sigmoid", "identity"):
        model = IAutoRec(synth.train, dim=5, output=output)
        with torch.no_grad():
            out = model.decoder(torch.zeros(1, 5))
            if output == "sigmoid":
                out = 1 + 4 * torch.sigmoid(out)
        torch.testing.assert_close(out, torch.full_like(out, synth.train.global_mean))


def test_dae_dropout_only_in_training(synth):
    torch.manual_seed(0)
    model = MultDAE(synth.train, dim=6, dropout=0.5)
    rows = model.training_rows(torch.arange(5))
    model.train()
    assert not torch.equal(model.reconstruct(rows), model.reconstruct(rows))
    model.eval()
    torch.testing.assert_close(model.reconstruct(rows), model.reconstruct(rows), rtol=0, atol=0)


def test_dae_normalisation_discards_the_rows_rating_level(synth):
    """Why ``normalize`` is a tunable option for explicit ratings: with L2-normalised input, a user
    who rates every seen item 5 and one who rates the same items 1 look identical."""
    model = MultDAE(synth.train, dim=6).eval()
    low = torch.zeros(1, 30)
    low[0, :10] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(model.reconstruct(low), model.reconstruct(5 * low))
        model.normalize = False
        assert not torch.allclose(model.reconstruct(low), model.reconstruct(5 * low))


def test_vae_beta_anneals_linearly_to_the_cap_in_training_steps_only(synth):
    torch.manual_seed(0)
    model = MultVAE(synth.train, dim=4, hidden=(8,), beta_cap=0.3, anneal_steps=10)
    batch = {"index": torch.arange(6), "rows": synth.train.rows(torch.arange(6))}
    betas = []
    model.train()
    for _ in range(5):
        betas.append(float(model.loss(batch)["beta"]))
    assert betas == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3])
    model.eval()
    model.loss(batch)
    assert int(model.updates) == 5  # evaluation does not advance the schedule
    assert MultVAE(synth.train, beta_cap=0.05, anneal_steps=0).beta == 0.05


def test_vae_loss_is_sse_plus_beta_kl_per_observed_rating(synth):
    """With the variance forced to ~0 the sample equals mu, so the loss is deterministic and can be
    recomputed: (masked SSE + beta * KL summed over users) / number of observed entries."""
    torch.manual_seed(0)
    model = MultVAE(
        synth.train, dim=4, hidden=(8,), dropout=0.0, beta_cap=0.5, anneal_steps=0
    ).eval()
    with torch.no_grad():
        model.encoder[-1].bias[4:] = -60.0  # log variance
        model.encoder[-1].weight[4:] = 0.0
        index = torch.tensor([2, 5, 9])
        rows = synth.train.rows(index)
        dense = model.training_rows(index)
        out = model.loss({"index": index, "rows": rows})
        mu, logvar = model.encode(dense)
        recon = model.decoder(mu)
        mask = dense != 0
        sse = ((recon - dense)[mask] ** 2).sum()
        kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum()
    torch.testing.assert_close(out["loss"], (sse + 0.5 * kl) / mask.sum(), rtol=1e-5, atol=1e-6)


def test_hidden_layer_sizes_accept_lists_ints_and_optuna_strings():
    from baselines.autorec import layer_sizes

    assert layer_sizes([100, 50]) == layer_sizes("100-50") == [100, 50]
    assert layer_sizes(200) == layer_sizes("200") == [200]
    assert layer_sizes("") == layer_sizes(None) == layer_sizes([]) == []
    with pytest.raises(ValueError, match="100-50"):
        layer_sizes("100,50")
