"""The non-Gaussian-copula data: exact population properties on large seeded samples, the
benchmark's marginals, determinism and bad input.

Tolerances: a mean of per-sample statistics is checked within 5 of its standard errors (computed
from the same sample); Kendall's tau within 5 * sqrt(2 (1 - tau^2) / n), a bound on its standard
deviation. The samples are seeded, so every number below is fixed."""

import itertools

import numpy as np
import pytest
import scipy.stats
from scipy.special import ndtri

from pyro_mcvae.data import NonGaussianDataset, make_nongaussian_splits, nongaussian_population, sample_nongaussian
from pyro_mcvae.data.copula import copula_correlation
from pyro_mcvae.data.nongaussian import t_joint_exceedance, t_tail_dependence, x_pair_moments

N = 200_000
RHO, DF = 0.9, 2.0
PAIRS = [(k, l, j) for j in range(2) for k, l in itertools.combinations(range(4), 2)]


@pytest.fixture(scope="module")
def x_sample():
    return sample_nongaussian("x", N, 11)


@pytest.fixture(scope="module")
def t_sample():
    return sample_nongaussian("t", N, 12)


def within(values, exact, k=5.0):
    values = np.asarray(values, dtype=np.float64)
    se = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - exact) < k * se + 1e-12, (values.mean(), exact, se)


def kendall_within(a, b, exact, k=5.0):
    tau = scipy.stats.kendalltau(a, b).statistic
    assert abs(tau - exact) < k * np.sqrt(2 * (1 - exact ** 2) / len(a)), (tau, exact)


@pytest.mark.parametrize("kind", ["x", "t"])
def test_marginals_are_the_benchmarks_uniforms(kind, x_sample, t_sample):
    sample = {"x": x_sample, "t": t_sample}[kind]
    assert sample.shape == (N, 4, 2) and sample.dtype == np.float32
    assert np.all((sample >= 0) & (sample <= 1))
    for k, j in itertools.product(range(4), range(2)):
        assert scipy.stats.kstest(sample[:, k, j], "uniform").pvalue > 1e-3


def test_x_has_zero_correlation_but_the_gaussian_copulas_strength(x_sample):
    exact = x_pair_moments(RHO)
    z = ndtri(x_sample.astype(np.float64))
    assert np.all(np.isfinite(z))
    for k, l, j in PAIRS:
        u, v, a, b = x_sample[:, k, j] - 0.5, x_sample[:, l, j] - 0.5, z[:, k, j], z[:, l, j]
        within(12 * u * v, exact["pearson"])  # Pearson of U(0,1) = Spearman: 12 E[(u-1/2)(v-1/2)]
        within(a * b, exact["product"])
        within(a * b > 0, exact["same_sign"])
        within(np.abs(a * b), exact["abs_product"])
        within((a * b) ** 2, exact["square_product"])
        kendall_within(u, v, exact["kendall"])
    # coordinates independent of each other, as in the copula benchmark
    within(z[:, 0, 0] ** 2 * z[:, 0, 1] ** 2, 1.0)


def test_x_closed_forms_are_the_gaussian_copulas_where_they_should_be():
    # The even moments equal the Gaussian pair's: check the closed forms on an exact Gaussian draw.
    exact = x_pair_moments(RHO)
    g = np.random.default_rng(5).multivariate_normal([0, 0], [[1, -RHO], [-RHO, 1]], N)
    within(np.abs(g[:, 0] * g[:, 1]), exact["abs_product"])
    within((g[:, 0] * g[:, 1]) ** 2, exact["square_product"])
    assert exact["square_correlation"] == pytest.approx((exact["square_product"] - 1) / 2)


def test_t_kendall_tau_is_the_elliptical_closed_form(t_sample):
    for k, l, j in PAIRS:
        r = copula_correlation(j + 1, 4, RHO)[k, l]
        kendall_within(t_sample[:, k, j], t_sample[:, l, j], (2 / np.pi) * np.arcsin(r))


def test_t_tail_dependence(t_sample):
    lam = t_tail_dependence(RHO, DF)
    assert lam == pytest.approx(0.7176856, abs=1e-6)
    # the finite-level formula tends to the coefficient
    assert t_joint_exceedance(1 - 1e-9, RHO, DF) == pytest.approx(lam, abs=1e-6)
    # empirical P(U_l > q | U_k > q) (and the lower tail) at q = 0.99 against the exact value at
    # that level; about 2000 exceedances, so a binomial standard error near 0.01: 5 of them.
    q = 0.99
    exact = t_joint_exceedance(q, RHO, DF)
    assert exact == pytest.approx(0.7203, abs=1e-3)
    for k, l in [(0, 1), (1, 2), (0, 3)]:
        u, v = t_sample[:, k, 1], t_sample[:, l, 1]  # coordinate 2: all pairs +rho
        for a, b in ((u, v), (1 - u, 1 - v)):  # upper and lower tails
            hit = a > q
            p = np.mean(b[hit] > q)
            assert abs(p - exact) < 5 * np.sqrt(exact * (1 - exact) / hit.sum()), (p, exact)
    # the Gaussian copula's level-0.99 value is far lower (its coefficient is 0)
    g = np.random.default_rng(3).multivariate_normal([0, 0], [[1, RHO], [RHO, 1]], N)
    a = g > scipy.stats.norm.ppf(q)
    assert np.mean(a[a[:, 0], 1]) < exact - 0.1


def test_splits_are_seeded_and_independent():
    a = make_nongaussian_splits("x", 100, 50, seed=3)
    b = make_nongaussian_splits("x", 100, 50, seed=3)
    assert isinstance(a, NonGaussianDataset) and a.num_components == 4 and a.num_coordinates == 2
    for name in ("train", "test", "reference"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.train.shape == (100, 4, 2) and a.test.shape == a.reference.shape == (50, 4, 2)
    assert not np.array_equal(a.test, a.reference)
    train_ss = np.random.SeedSequence(3).spawn(3)[0]
    np.testing.assert_array_equal(a.train, sample_nongaussian("x", 100, train_ss))
    assert not np.array_equal(make_nongaussian_splits("x", 100, 50, seed=4).train, a.train)
    pop = nongaussian_population(a, 30)
    np.testing.assert_array_equal(pop, sample_nongaussian("x", 30, 3 + 10_000))
    t = make_nongaussian_splits("t", 20, 10, seed=3, num_components=3, num_coordinates=1, df=4.0)
    assert (t.kind, t.df, t.train.shape) == ("t", 4.0, (20, 3, 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="y"), "kind"),
    (dict(n=0), "n must"),
    (dict(n=2.5), "n must"),
    (dict(rho=1.0), "rho"),
    (dict(df=0.0), "df"),
    (dict(num_components=1), "num_components"),
    (dict(num_coordinates=0), "num_coordinates"),
    (dict(num_components=4, rho=-0.9), "positive definite"),
])
def test_bad_input(kwargs, match):
    args = dict(kind="x", n=10, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        sample_nongaussian(args.pop("kind"), args.pop("n"), args.pop("seed"), **args)


def test_bad_exceedance_level():
    for q in (0.3, 1.0):
        with pytest.raises(ValueError, match="q must"):
            t_joint_exceedance(q, RHO, DF)
