import numpy as np
import pytest

from xfvae.data.split import random_split, split_sizes


def test_sizes_paper_split():
    assert split_sizes(100_000) == (70_000, 15_000, 15_000)
    assert split_sizes(11) == (8, 1, 2)  # round(7.7) = 8; (11 - 8) // 2 = 1; rest 2


@pytest.mark.parametrize("frac", [0.01, 0.02, 0.03, 0.05, 0.10])
def test_subsampling_sizes(frac):
    n_train, n_val, n_test = split_sizes(100_000, train_frac=frac)
    assert n_train == round(frac * 100_000)
    assert n_val == (100_000 - n_train) // 2
    assert n_train + n_val + n_test == 100_000 and abs(n_val - n_test) <= 1


def test_split_matches_independent_permutation_rule():
    n, seed = 1001, 7
    # Independent implementation: PCG64 seeded the same way, Fisher-Yates via Generator.shuffle.
    p = np.arange(n)
    np.random.Generator(np.random.PCG64(seed)).shuffle(p)
    n_train = round(0.7 * n)
    n_val = (n - n_train) // 2
    idx = random_split(n, seed)
    np.testing.assert_array_equal(idx.train, p[:n_train])
    np.testing.assert_array_equal(idx.val, p[n_train : n_train + n_val])
    np.testing.assert_array_equal(idx.test, p[n_train + n_val :])


def test_split_is_a_partition_and_deterministic():
    a, b = random_split(500, 3), random_split(500, 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    allidx = np.concatenate(a)
    assert sorted(allidx.tolist()) == list(range(500))
    assert not np.array_equal(random_split(500, 4).train, a.train)


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="train_frac"):
        split_sizes(10, train_frac=1.5)


def test_split_cli_on_ml100k_matches_the_rule(tmp_path, data_dir):
    """`python -m xfvae.data.split` writes the rule's split of the source-ordered file, original ids."""
    import subprocess
    import sys

    import pandas as pd

    from xfvae.data import load_ratings

    cmd = [
        sys.executable,
        "-m",
        "xfvae.data.split",
        "data=ml-100k",
        "seed=0",
        f"out={tmp_path}",
        f"paths.data_dir={data_dir}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    raw = load_ratings("ml-100k", data_dir)
    p = np.arange(len(raw))
    np.random.Generator(np.random.PCG64(0)).shuffle(p)
    expected = {"train": p[:70_000], "val": p[70_000:85_000], "test": p[85_000:]}
    for part, rows in expected.items():
        got = pd.read_csv(tmp_path / f"{part}.csv")
        assert list(got.columns) == ["user", "item", "rating"]
        want = raw.iloc[rows][["user", "item", "rating"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
