"""Tests for the Gaussian-copula synthetic data."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mcvae.data import CopulaDataset, copula_correlation, make_copula_splits, sample_copula


def test_correlation_sign_pattern():
    r1 = copula_correlation(1, 4, 0.9)
    r2 = copula_correlation(2, 4, 0.9)
    k = np.arange(1, 5)
    expected1 = 0.9 * (-1.0) ** (k[:, None] + k[None, :])
    np.fill_diagonal(expected1, 1.0)
    np.testing.assert_array_equal(r1, expected1)
    expected2 = np.full((4, 4), 0.9)
    np.fill_diagonal(expected2, 1.0)
    np.testing.assert_array_equal(r2, expected2)
    # Coordinate 3 behaves like 1, coordinate 4 like 2.
    np.testing.assert_array_equal(copula_correlation(3, 4, 0.9), r1)
    np.testing.assert_array_equal(copula_correlation(4, 4, 0.9), r2)


def test_shape_dtype_range():
    x = sample_copula(100, seed=1)
    assert x.shape == (100, 4, 2)
    assert x.dtype == np.float32
    assert np.all((x >= 0) & (x <= 1))
    assert sample_copula(7, seed=1, num_components=3, num_coordinates=5).shape == (7, 3, 5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50))
def test_deterministic(seed, n):
    np.testing.assert_array_equal(sample_copula(n, seed), sample_copula(n, seed))


def test_different_seeds_differ():
    assert not np.array_equal(sample_copula(100, 0), sample_copula(100, 1))


def test_splits_deterministic_and_independent():
    a = make_copula_splits(n_train=300, n_test=100, seed=5)
    b = make_copula_splits(n_train=300, n_test=100, seed=5)
    c = make_copula_splits(n_train=300, n_test=100, seed=6)
    assert isinstance(a, CopulaDataset)
    for name in ("train", "test", "reference"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    assert a.train.shape == (300, 4, 2) and a.test.shape == a.reference.shape == (100, 4, 2)
    assert not np.array_equal(a.test, a.reference)
    assert not np.array_equal(a.train[:100], a.test)
    assert (a.rho, a.mean, a.std, a.seed) == (0.9, 3.0, 1.0, 5)
    assert (a.num_components, a.num_coordinates) == (4, 2)


@pytest.fixture(scope="module")
def big_sample():
    return sample_copula(20000, seed=123).astype(np.float64)


def test_marginals_uniform(big_sample):
    x = big_sample[:5000]
    for k in range(x.shape[1]):
        for j in range(x.shape[2]):
            p = scipy.stats.kstest(x[:, k, j], "uniform").pvalue
            assert p > 1e-3, (k, j, p)


def test_spearman_matches_gaussian_copula(big_sample):
    rho = 0.9
    m = big_sample.shape[1]
    for j in (1, 2):
        corr = copula_correlation(j, m, rho)
        s = scipy.stats.spearmanr(big_sample[:, :, j - 1]).statistic
        for k in range(m):
            for l in range(k + 1, m):
                theory = 6 / np.pi * np.arcsin(corr[k, l] / 2)
                assert abs(s[k, l] - theory) < 0.03, (j, k, l, s[k, l], theory)
    # Coordinate 1 alternates in sign, coordinate 2 is all positive.
    s1 = scipy.stats.spearmanr(big_sample[:, :, 0]).statistic
    assert s1[0, 1] < 0 and s1[0, 2] > 0


def test_coordinates_independent(big_sample):
    m = big_sample.shape[1]
    for k in range(m):
        for l in range(m):
            s = scipy.stats.spearmanr(big_sample[:, k, 0], big_sample[:, l, 1]).statistic
            assert abs(s) < 0.05, (k, l, s)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(n=10, rho=1.0),
        dict(n=10, rho=-1.2),
        dict(n=10, rho=-0.5),  # |rho| < 1 but R^j not positive definite for M = 4
        dict(n=10, std=0.0),
        dict(n=10, num_coordinates=0),
    ],
)
def test_invalid_arguments(kwargs):
    n = kwargs.pop("n")
    with pytest.raises(ValueError):
        sample_copula(n, 0, **kwargs)


def test_not_positive_definite_message():
    with pytest.raises(ValueError, match="positive definite"):
        sample_copula(10, 0, rho=-0.5)


def test_copula_log_density_integrates_to_one_and_matches_the_sample():
    """The exact density of a 2-component, 1-coordinate law integrates to 1 over the unit square
    (quadrature); a single component is uniform (log density 0); the mean log density of a
    large sample matches the Gaussian copula's closed-form mean, -0.5 log det R per coordinate,
    within 4 standard errors."""
    from scipy import integrate

    from pyro_mcvae.data import copula_log_density

    def density(v, u):
        return float(np.exp(copula_log_density(np.array([[[u], [v]]]), rho=0.6)[0]))

    total, _ = integrate.dblquad(density, 0, 1, 0, 1, epsabs=1e-6)
    assert abs(total - 1.0) < 1e-4, total
    x = sample_copula(20000, seed=3, rho=0.9)
    assert np.allclose(copula_log_density(x, components=[2]), 0.0, atol=1e-9)
    logs = copula_log_density(x)
    expected = sum(-0.5 * np.linalg.slogdet(copula_correlation(j, 4, 0.9))[1] for j in (1, 2))
    assert abs(logs.mean() - expected) < 4 * logs.std() / np.sqrt(len(logs)), (logs.mean(), expected)
    with pytest.raises(ValueError, match="inside"):
        copula_log_density(np.zeros((1, 4, 2)))
