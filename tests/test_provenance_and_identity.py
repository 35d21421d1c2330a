"""Checks that catch the bugs issue 20 planted (case 10) and the machine provenance (case 9).

Each test fails with one of these planted: the atomic writer replaced by an in-place write,
``model.optimizer`` (or another setting that decides numbers) dropped from the run identity,
predictions no longer clipped in ``RatingTask.predict_pairs``.
"""

from __future__ import annotations

import json
import resource
import signal
from contextlib import contextmanager

import pytest
import torch

from xfvae.data.train_data import TrainData
from xfvae.runs.atomic import atomic_write_bytes, atomic_write_csv, atomic_write_json
from xfvae.runs.provenance import config_hash, machine
from xfvae.training.task import RatingTask


@contextmanager
def _disk_full_after(n_bytes: int):
    """Writes past ``n_bytes`` of a file fail with EFBIG (RLIMIT_FSIZE), as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("write", ["bytes", "json", "csv"])
def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, write):
    import pandas as pd

    target = tmp_path / "metrics.json"
    target.write_text('{"previous": true}\n')
    with pytest.raises(OSError), _disk_full_after(4096):
        if write == "bytes":
            atomic_write_bytes(target, b"x" * 100_000)
        elif write == "json":
            atomic_write_json(target, {"new": list(range(30_000))})
        else:
            atomic_write_csv(target, pd.DataFrame({"a": range(30_000)}))
    assert target.read_text() == '{"previous": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


TINY = ["model=mf", "data=synthetic", "data.options.n_users=60", "data.options.n_items=40"]


@pytest.mark.parametrize(
    "override",
    [
        "model.optimizer.lr=0.0123",
        "model.optimizer.weight_decay=0.5",
        "model.batch_size=77",
        "model.max_epochs=7",
        "model.patience=3",
        "model.net.dim=7",
        "trainer.gradient_clip_val=1.0",
        "trainer.precision=64",
        "data.options.density=0.2",
        "data.split.train_frac=0.5",
        "evaluation.protocol=paper",
        "evaluation.ks=[10]",
        "evaluation.cold_start=model",
        "evaluation.relevance_threshold=4.0",
        "callbacks.early_stopping.min_delta=0.01",
        "seed=1",
    ],
)
def test_every_setting_that_decides_numbers_changes_the_identity(cfg_factory, override):
    assert config_hash(cfg_factory(*TINY, override)) != config_hash(cfg_factory(*TINY))


def test_data_contents_change_the_identity(cfg_factory):
    cfg = cfg_factory(*TINY)
    a = {"train": {"size": 10, "sha256": "a" * 64}}
    b = {"train": {"size": 10, "sha256": "b" * 64}}
    assert config_hash(cfg, a) != config_hash(cfg, b) != config_hash(cfg)


class _WildNet(torch.nn.Module):
    """Predicts far outside the rating scale."""

    batch_kind = "triples"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def predict(self, users, items):
        return torch.where(users % 2 == 0, 9.0, -3.0) + 0 * self.w


def test_validation_and_test_use_clipped_predictions():
    n = 8
    users, items = torch.arange(n), torch.arange(n) % 4
    data = TrainData(n, 4, users, items, torch.full((n,), 3.0), rating_min=1.0, rating_max=5.0)
    task = RatingTask(_WildNet(), None, data, cold_start="model")
    batch = {"users": users, "items": items, "ratings": torch.full((n,), 3.0)}
    assert task.predict_pairs(users, items).tolist() == [5.0, 1.0] * (n // 2)
    task.validation_step(batch, 0)
    sse, count = task._eval[0][0]
    assert count == n and float(sse) == pytest.approx(n * 4.0)  # (5-3)^2 and (1-3)^2, not 36/36
    task.on_test_epoch_start()
    task.test_step(batch, 0)
    task.on_test_epoch_end()
    assert task.test_outputs["preds"].min() == 1.0 and task.test_outputs["preds"].max() == 5.0


def test_machine_records_the_cpu_and_the_instruction_set_torch_uses():
    info = machine()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    json.dumps(info)
