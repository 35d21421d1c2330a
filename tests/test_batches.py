import numpy as np
import pytest
import torch

from xfvae.data.batches import BlockPlan, EpochBatches, iter_blocks, iter_rows, iter_triples
from xfvae.data.train_data import TrainData


def small_data(n_users=23, n_items=17, n=120, seed=0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n_users * n_items, generator=g)[:n]
    return TrainData(
        n_users,
        n_items,
        cells // n_items,
        cells % n_items,
        torch.randint(1, 6, (n,), generator=g).float(),
        1.0,
        5.0,
    )


def as_set(u, i, r):
    return set(zip(u.tolist(), i.tolist(), r.tolist(), strict=True))


def test_triples_cover_every_rating_once_per_epoch():
    td = small_data()
    batches = list(iter_triples(td, 16, torch.Generator().manual_seed(0)))
    u = torch.cat([b["users"] for b in batches])
    i = torch.cat([b["items"] for b in batches])
    r = torch.cat([b["ratings"] for b in batches])
    assert len(u) == td.n_ratings
    assert as_set(u, i, r) == as_set(td.users, td.items, td.ratings)


@pytest.mark.parametrize("b_u,b_v", [(5, 4), (100, 100), (1, 1)])
def test_blocks_partition_ratings_with_correct_local_indices(b_u, b_v):
    td = small_data()
    plan = BlockPlan(td, b_u, b_v, seed=1)
    seen, n_blocks = set(), 0
    for blk in iter_blocks(plan, torch.Generator().manual_seed(0), shuffle=True):
        n_blocks += 1
        assert len(blk["users"]) <= b_u and len(blk["items"]) <= b_v
        u, i = blk["users"][blk["obs_u"]], blk["items"][blk["obs_i"]]
        seen |= as_set(u, i, blk["ratings"])
    assert n_blocks == -(-td.n_users // b_u) * -(-td.n_items // b_v)
    assert seen == as_set(td.users, td.items, td.ratings)


def test_blocks_come_in_nested_order():
    td = small_data()
    plan = BlockPlan(td, 5, 4, seed=1)
    user_batches = [tuple(b["users"].tolist()) for b in iter_blocks(plan, torch.Generator(), True)]
    # each user batch appears in one contiguous run of n_ib blocks
    runs = [user_batches[k] for k in range(0, len(user_batches), plan.n_ib)]
    assert len(set(runs)) == plan.n_ub
    for k, ub in enumerate(runs):
        assert all(x == ub for x in user_batches[k * plan.n_ib : (k + 1) * plan.n_ib])


def test_rows_match_training_matrix():
    td = small_data()
    batches = list(iter_rows(td, 4, torch.Generator().manual_seed(0), transpose=False))
    idx = torch.cat([b["index"] for b in batches])
    assert sorted(idx.tolist()) == torch.nonzero(td.user_seen).squeeze(1).tolist()
    dense = torch.zeros(td.n_users, td.n_items)
    dense[td.users, td.items] = td.ratings
    for b in batches:
        torch.testing.assert_close(b["rows"].to_dense(), dense[b["index"]])
    item_b = next(iter_rows(td, 4, torch.Generator(), transpose=True))
    torch.testing.assert_close(item_b["rows"].to_dense(), dense.T[item_b["index"]])


def test_epoch_order_depends_only_on_seed_and_epoch():
    td = small_data()

    def epochs(seed):
        ds = EpochBatches(lambda g: iter_triples(td, 8, g), 15, seed)
        return [torch.cat([b["users"] for b in ds]) for _ in range(2)]

    a, b = epochs(3), epochs(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("b_u,b_v", [(5, 4), (100, 100)])
def test_block_rows_are_the_batches_csr_rows_with_their_transposes(b_u, b_v):
    """The plan's precomputed rows of a user (item) batch are its rows of X (X^T), in CSR order;
    the transposes list the same entries by (column, row)."""
    td = small_data()
    plan = BlockPlan(td, b_u, b_v, seed=1)
    for blk in iter_blocks(plan, torch.Generator().manual_seed(0), shuffle=True):
        for rows, index, csr in (
            (blk.user_rows, blk.users, td.csr),
            (blk.item_rows, blk.items, td.csr_t),
        ):
            sub = csr[index.numpy()]
            assert rows.n_rows == index.numel()
            assert rows.cols.tolist() == sub.indices.tolist()
            assert rows.vals.tolist() == sub.data.tolist()
            assert rows.offsets.tolist() == sub.indptr[:-1].tolist()
            lengths = np.diff(sub.indptr)
            assert rows.seg.tolist() == np.repeat(np.arange(index.numel()), lengths).tolist()
            assert rows.ucols.tolist() == sorted(set(sub.indices.tolist()))
            assert (rows.ucols[rows.inv] == rows.cols).all()
            cols, seg, vals = rows.cols.tolist(), rows.seg.tolist(), rows.vals.tolist()
            by_col = sorted(zip(cols, seg, vals, strict=True))  # (column, row) order
            counts = torch.diff(rows.t_offsets, append=torch.tensor([len(cols)]))
            t_cols = rows.ucols.repeat_interleave(counts).tolist()
            transposed = zip(t_cols, rows.t_seg.tolist(), rows.t_vals.tolist(), strict=True)
            assert list(transposed) == by_col
            starts = [c for c, *_ in by_col]
            assert rows.t_offsets.tolist() == [starts.index(c) for c in rows.ucols.tolist()]


def test_a_block_reads_like_the_documented_dict():
    td = small_data()
    plan = BlockPlan(td, 5, 4, seed=1)
    blk = plan.block(2, 1)
    assert set(blk.keys()) == {"users", "items", "obs_u", "obs_i", "ratings"}
    for key in blk.keys():
        assert torch.equal(blk[key], getattr(blk, key))
    assert torch.equal(blk.obs_users, blk.users[blk.obs_u])
    assert torch.equal(blk.obs_items, blk.items[blk.obs_i])
    with pytest.raises(KeyError):
        blk["user_rows"]
