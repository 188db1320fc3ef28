"""Tests for the Wasserstein / Spearman metrics against independent computations."""

import itertools
import json

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyro_mcvae.data import make_copula_splits
from pyro_mcvae.metrics import (
    conditional_copula_metrics,
    copula_metrics,
    max_correlation_error,
    noise_floor,
    spearman_matrix,
    wasserstein_joint,
    wasserstein_marginals,
)

FAST = settings(max_examples=40, deadline=None)
finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


def point_sets(n_min=1, n_max=8, k_min=1, k_max=4):
    """Pairs of equal-size (n, k) float arrays."""
    return st.tuples(st.integers(n_min, n_max), st.integers(k_min, k_max)).flatmap(
        lambda nk: st.tuples(
            hnp.arrays(np.float64, nk, elements=finite),
            hnp.arrays(np.float64, nk, elements=finite),
        )
    )


@FAST
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, n, elements=finite), hnp.arrays(np.float64, n, elements=finite))))
def test_1d_matches_scipy(xy):
    x, y = xy
    expected = scipy.stats.wasserstein_distance(x, y)
    assert wasserstein_joint(x[:, None], y[:, None]) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert wasserstein_joint(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@FAST
@given(hnp.arrays(np.float64, st.integers(1, 5), elements=finite))
def test_point_mass(v):
    assert wasserstein_joint(np.zeros((1, v.size)), v[None, :]) == pytest.approx(np.linalg.norm(v), abs=1e-9)


@FAST
@given(point_sets(), st.data())
def test_translation(xy, data):
    x, _ = xy
    v = data.draw(hnp.arrays(np.float64, x.shape[1], elements=st.floats(-10, 10)))
    assert wasserstein_joint(x, x + v) == pytest.approx(np.linalg.norm(v), rel=1e-7, abs=1e-7)


@FAST
@given(point_sets())
def test_symmetry_and_identity(xy):
    x, y = xy
    assert wasserstein_joint(x, y) == pytest.approx(wasserstein_joint(y, x), rel=1e-9, abs=1e-9)
    assert wasserstein_joint(x, x) == pytest.approx(0.0, abs=1e-9)


@FAST
@given(point_sets(n_max=6))
def test_brute_force_permutations(xy):
    x, y = xy
    n = x.shape[0]
    dist = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1)
    # For uniform weights on equal-size sets an optimal plan is a permutation.
    best = min(dist[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n)))
    assert wasserstein_joint(x, y) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_unequal_sizes():
    # {0} vs {0, 2}: half the mass moves distance 2.
    assert wasserstein_joint(np.zeros((1, 1)), np.array([[0.0], [2.0]])) == pytest.approx(1.0)


def test_accepts_torch():
    x = torch.rand(20, 3)
    y = torch.rand(15, 3)
    assert wasserstein_joint(x, y) == pytest.approx(wasserstein_joint(x.numpy(), y.numpy()))


@pytest.mark.parametrize(
    "x, y",
    [
        (np.array([[np.nan, 0.0]]), np.zeros((1, 2))),
        (np.zeros((2, 2)), np.array([[np.inf, 0.0]])),
        (np.zeros((3, 2)), np.zeros((3, 3))),
        (np.zeros((0, 2)), np.zeros((3, 2))),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2))),
    ],
)
def test_invalid_inputs(x, y):
    with pytest.raises(ValueError):
        wasserstein_joint(x, y)


@FAST
@given(point_sets(k_max=3))
def test_marginals_match_scipy(xy):
    x, y = xy
    got = wasserstein_marginals(x, y)
    assert got.shape == (x.shape[1],)
    for i in range(x.shape[1]):
        assert got[i] == pytest.approx(scipy.stats.wasserstein_distance(x[:, i], y[:, i]), abs=1e-9)


def test_spearman_matrix_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    x[:, 1] = x[:, 0] + 0.1 * x[:, 1]
    s2 = spearman_matrix(x)
    assert s2.shape == (2, 2)
    assert s2[0, 1] == pytest.approx(scipy.stats.spearmanr(x[:, 0], x[:, 1]).statistic)
    assert np.allclose(np.diag(s2), 1.0)
    assert spearman_matrix(rng.normal(size=(50, 5))).shape == (5, 5)
    assert spearman_matrix(rng.normal(size=(50, 1))).shape == (1, 1)
    assert max_correlation_error(x, x) == 0.0
    assert max_correlation_error(x, x[:, ::-1]) == 0.0
    assert max_correlation_error(x, rng.normal(size=(200, 2))) > 0.5


@pytest.fixture(scope="module")
def splits():
    return make_copula_splits(n_train=400, n_test=400, seed=3)


def test_copula_metrics_layout(splits):
    res = copula_metrics(splits.test, splits.reference)
    json.dumps(res)
    assert set(res["joint_w1"]) == {1, 2} and set(res["marginal_w1"]) == {1, 2}
    assert all(len(v) == 4 for v in res["marginal_w1"].values())
    assert res["joint_w1_mean"] == pytest.approx(np.mean(list(res["joint_w1"].values())))
    assert res["joint_w1"][1] == pytest.approx(wasserstein_joint(splits.test[:, :, 0], splits.reference[:, :, 0]))


def test_noise_floor_below_wrong_distribution(splits):
    floor = noise_floor(splits.test, splits.reference)
    wrong = np.random.default_rng(0).uniform(size=splits.test.shape)  # right marginals, no copula
    bad = copula_metrics(wrong, splits.reference)
    for j in (1, 2):
        assert 0 < floor["joint_w1"][j] < bad["joint_w1"][j]
        assert np.isfinite(floor["joint_w1"][j])
    assert floor["spearman_max_error"] < bad["spearman_max_error"]
    with pytest.raises(ValueError):
        noise_floor(splits.test, splits.test)
    with pytest.raises(ValueError):
        noise_floor(splits.test, splits.reference[:10])


def test_conditional_metrics(splits):
    gen = {k: splits.reference.copy() for k in range(4)}
    for k in range(4):
        gen[k][:, k, :] = splits.test[:, k, :]
    res = conditional_copula_metrics(gen, splits.test)
    json.dumps(res)
    assert set(res["by_source"]) == {0, 1, 2, 3}
    vals = [v for s in res["by_source"].values() for v in s["joint_w1"].values()]
    assert res["joint_w1_mean"] == pytest.approx(np.mean(vals))
    with pytest.raises(ValueError):
        conditional_copula_metrics({}, splits.test)
