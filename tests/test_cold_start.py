import pytest
import torch

from xfvae.data.train_data import TrainData
from xfvae.scoring.cold_start import ColdStart, damped_biases


def data():
    # users 0,1 rated; user 2 unseen. items 0,1 rated; item 2 unseen.
    u = torch.tensor([0, 0, 1])
    i = torch.tensor([0, 1, 0])
    r = torch.tensor([5.0, 3.0, 4.0])
    return TrainData(3, 3, u, i, r, 1.0, 5.0)


def test_damped_biases_by_hand():
    b_u, b_i = damped_biases(data(), damping=1.0)
    mu = 4.0
    bi0 = ((5 - mu) + (4 - mu)) / (2 + 1)
    bi1 = (3 - mu) / (1 + 1)
    assert b_i.tolist() == pytest.approx([bi0, bi1, 0.0])
    bu0 = ((5 - mu - bi0) + (3 - mu - bi1)) / (2 + 1)
    assert b_u[0].item() == pytest.approx(bu0) and b_u[2].item() == 0.0


@pytest.mark.parametrize("policy", ["bias", "global_mean", "model"])
def test_only_cold_pairs_are_replaced(policy):
    cs = ColdStart(data(), policy)
    users, items = torch.tensor([0, 2, 1, 0]), torch.tensor([1, 0, 2, 0])
    preds = torch.full((4,), 9.0)
    out = cs(users, items, preds)
    assert cs.is_cold(users, items).tolist() == [False, True, True, False]
    assert out[0] == 9.0 and out[3] == 9.0
    if policy == "model":
        assert torch.equal(out, preds)
    elif policy == "global_mean":
        assert out[1:3].tolist() == pytest.approx([4.0, 4.0])
    else:
        assert out[1].item() == pytest.approx(4.0 + cs.b_i[0].item())  # unseen user: item bias only
        assert out[2].item() == pytest.approx(4.0 + cs.b_u[1].item())  # unseen item: user bias only


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="cold_start"):
        ColdStart(data(), "zero")
