"""make_synthetic: shape, density, coverage, determinism, low rank, and the known noise level."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xfvae.data.synthetic import make_synthetic


@pytest.mark.parametrize(("n_users", "n_items", "density"), [(60, 40, 0.3), (3000, 2000, 0.002)])
def test_shape_density_distinct_cells_and_coverage(n_users, n_items, density):
    df = make_synthetic(n_users, n_items, density, rank=3, noise_sd=0.5, seed=2)
    k = round(density * n_users * n_items)
    assert len(df) == k and list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert not df.duplicated(["user", "item"]).any()
    assert set(df["user"]) == set(range(n_users)) and set(df["item"]) == set(range(n_items))
    assert df["timestamp"].tolist() == list(range(k))
    assert df["rating"].between(1, 5).all() and df.attrs["density"] == pytest.approx(density)


def test_too_few_ratings_to_cover_everyone_is_still_exact():
    df = make_synthetic(100, 50, density=0.01, seed=0)  # 50 ratings < 100 users
    assert len(df) == 50 and not df.duplicated(["user", "item"]).any()


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_synthetic(seed=7), make_synthetic(seed=7)
    assert a.equals(b) and a.attrs == b.attrs
    assert not a.equals(make_synthetic(seed=8))


@pytest.mark.parametrize("noise_sd", [0.2, 0.5])
def test_observed_minus_true_has_the_noise_sd(noise_sd):
    df = make_synthetic(400, 300, 0.2, rank=4, noise_sd=noise_sd, seed=1, with_truth=True)
    rmse = np.sqrt(np.mean((df["rating"] - df["true_rating"]) ** 2))
    assert rmse == pytest.approx(df.attrs["rmse_floor"])
    # clipping only pulls observations towards the (in-scale) truth: slightly below noise_sd
    assert noise_sd * 0.9 < rmse <= noise_sd * 1.01
    assert df["true_rating"].std() == pytest.approx(1.0, abs=0.15)  # a quarter of 1..5


def test_noise_free_ratings_are_the_truth_and_low_rank():
    df = make_synthetic(30, 20, 1.0, rank=3, noise_sd=0.0, seed=4, signal_sd=0.3, with_truth=True)
    assert (df["rating"] == df["true_rating"]).all()
    assert df["rating"].between(1, 5, inclusive="neither").all()  # no clipping at this signal_sd
    dense = np.zeros((30, 20))
    dense[df["user"], df["item"]] = df["rating"] - 3.0
    assert np.linalg.matrix_rank(dense, tol=1e-9) == 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="0 < density <= 1"):
        make_synthetic(density=1.5)
    with pytest.raises(ValueError, match="rating_min 5 must be below rating_max 1"):
        make_synthetic(rating_min=5, rating_max=1)


@pytest.mark.slow
def test_four_million_ratings_in_seconds():
    start = time.perf_counter()
    df = make_synthetic(20_000, 10_000, 0.02, rank=10, seed=0)
    assert len(df) == 4_000_000 and time.perf_counter() - start < 10
