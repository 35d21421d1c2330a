"""xfvae.scoring.evaluation.test_metrics: the default protocol under test/<metric>, every report protocol
under test/<protocol>/<metric>, each equal to xfvae.scoring.metrics computed directly, with the model's
scores taken in eval mode and computed once."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from xfvae.scoring.evaluation import test_metrics as evaluate_run
from xfvae.scoring.metrics import PROTOCOLS, ranking_metrics


class FakeTask(torch.nn.Module):
    """Scores a fixed matrix in eval mode; in train mode it returns noise (as dropout would)."""

    def __init__(self, scores: torch.Tensor, test_outputs: dict):
        super().__init__()
        self.scores, self.test_outputs, self.calls = scores, test_outputs, 0

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (
            torch.rand(users.numel(), self.scores.shape[1]) if self.training else self.scores[users]
        )


def make_run(n_users: int, n_items: int, n_ratings: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, n_ratings, replace=False)
    users, items = keys // n_items, keys % n_items
    ratings = rng.integers(1, 6, n_ratings).astype(np.float32)
    scores = torch.from_numpy(np.clip(rng.normal(3.5, 1.0, (n_users, n_items)), 1, 5)).float()
    part = rng.choice(3, n_ratings, p=[0.7, 0.15, 0.15])
    split = {name: np.flatnonzero(part == j) for j, name in enumerate(("train", "val", "test"))}
    t = split["test"]
    outputs = {
        "users": users[t],
        "items": items[t],
        "ratings": ratings[t],
        "preds": scores[users[t], items[t]].numpy(),
        "cold": np.zeros(t.size, dtype=bool),
    }
    dm = SimpleNamespace(
        train_data=SimpleNamespace(n_users=n_users, n_items=n_items),
        rating_min=1.0,
        rating_max=5.0,
        pairs=lambda name: (users[split[name]], items[split[name]], ratings[split[name]]),
    )
    return dm, FakeTask(scores, outputs)


def config(protocol="paper", report=("paper", "binary_heldout", "full", "rated_all")):
    return OmegaConf.create(
        {
            "protocol": protocol,
            "report_protocols": list(report),
            "ks": [20, 50],
            "relevance_threshold": 3.0,
            "min_test_ratings": 2,
        }
    )


def direct(name: str, dm, task) -> dict:
    out = task.test_outputs
    return ranking_metrics(
        name, out["users"], out["items"], out["ratings"], out["preds"], (20, 50), 3.0, 2,
        score_fn=lambda u: task.scores[u], n_items=dm.train_data.n_items,
        train=dm.pairs("train"), val=dm.pairs("val"),
    )  # fmt: skip


def test_default_and_report_protocols_equal_direct_computation():
    dm, task = make_run(40, 60, 1200)
    task.train()
    m = evaluate_run(config("paper_heldout"), dm, task)
    assert task.training  # the mode is restored
    assert task.calls == 1  # one score matrix shared by "full" and "rated_all"
    assert m["test/protocol"] == "paper_heldout"
    want = direct("paper_heldout", dm, task)
    assert {k: m[f"test/{k}"] for k in want} == want
    for name in ("paper", "binary_heldout", "full", "rated_all"):
        want = direct(name, dm, task)
        assert {k: m[f"test/{name}/{k}"] for k in want} == want, name
    assert not any(k.startswith("test/paper_heldout/") for k in m)  # not in the report list
    out = task.test_outputs
    assert m["test/rmse"] == pytest.approx(np.sqrt(np.mean((out["preds"] - out["ratings"]) ** 2)))


def test_unknown_protocol_names_the_config_key():
    dm, task = make_run(5, 5, 20)
    with pytest.raises(ValueError, match=r"evaluation.report_protocols: unknown protocol 'top'"):
        evaluate_run(config(report=["paper", "top"]), dm, task)


def test_the_committed_config_lists_every_protocol():
    from xfvae import CONF_DIR

    ev = OmegaConf.load(CONF_DIR / "train.yaml").evaluation
    assert ev.protocol in PROTOCOLS
    assert list(ev.report_protocols) == list(PROTOCOLS)


@pytest.mark.slow
def test_every_protocol_on_an_ml_100k_sized_run_takes_seconds():
    dm, task = make_run(943, 1682, 100_000)
    start = time.perf_counter()
    m = evaluate_run(config(report=list(PROTOCOLS)), dm, task)
    assert time.perf_counter() - start < 15.0  # ~3 s on an idle core; slack for shared machines
    assert all(f"test/{p}/ndcg@50" in m for p in PROTOCOLS)


def test_full_protocol_ranks_the_test_pairs_among_every_unrated_item():
    """One user, four items, item 0 rated in training: ``full`` ranks items 1-3 by the model's
    scores (9 on the training item must not count), so the test items 3 and 1 sit at ranks 1 and 3."""
    scores = torch.tensor([[9.0, 1.0, 5.0, 5.0]])
    outputs = {
        "users": np.array([0, 0]),
        "items": np.array([3, 1]),
        "ratings": np.array([5.0, 4.0]),
        "preds": np.array([5.0, 4.0]),
        "cold": np.zeros(2, dtype=bool),
    }
    none = (np.array([], int), np.array([], int), np.array([]))
    dm = SimpleNamespace(
        train_data=SimpleNamespace(n_users=1, n_items=4),
        rating_min=1.0,
        rating_max=5.0,
        pairs=lambda name: (
            (np.array([0]), np.array([0]), np.array([3.0])) if name == "train" else none
        ),
    )
    ev = OmegaConf.create(
        {"protocol": "full", "report_protocols": [], "ks": [2], "relevance_threshold": 3.0,
         "min_test_ratings": 2}
    )  # fmt: skip
    m = evaluate_run(ev, dm, FakeTask(scores, outputs))
    assert m["test/protocol"] == "full" and m["test/rmse"] == 0.0
    assert m["test/ndcg@2"] == pytest.approx(0.38685280723454163)
