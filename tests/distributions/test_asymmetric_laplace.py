"""Multivariate asymmetric Laplace: log K_nu, density, moments, marginals, exact conditioning."""

import math

import numpy as np
import pyro.distributions as pdist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import kve

from helpers import SEEDS, random_spd
from pyro_mcvae.distributions import MultivariateAsymmetricLaplace as MAL
from pyro_mcvae.distributions import log_bessel_k, sample_gig

ORDERS = [0.0, 0.5, 1.0, 2.5, 3.0, 7.0, 15.5, 31.0, 63.0, 127.0]
ARGS = [1e-8, 1e-4, 1e-2, 0.1, 0.5, 1.0, 3.0, 10.0, 50.0, 300.0, 2000.0, 1e4]


def test_log_bessel_k_matches_scipy_over_a_wide_grid():
    nu, x = np.meshgrid(ORDERS, ARGS, indexing="ij")
    got = log_bessel_k(torch.as_tensor(nu), torch.as_tensor(x)).numpy()
    with np.errstate(over="ignore", divide="ignore"):
        want = np.log(kve(nu, x)) - x
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-11, atol=1e-11)
    # Where SciPy overflows: mpmath in arbitrary precision.
    import mpmath

    want_mp = [float(mpmath.log(mpmath.besselk(a, b))) for a, b in zip(nu[~finite], x[~finite])]
    np.testing.assert_allclose(got[~finite], want_mp, rtol=1e-11)
    assert (~finite).sum() >= 4 and np.isfinite(got).all()


def test_log_bessel_k_gradient_is_the_derivative():
    x = torch.tensor([1e-3, 0.3, 5.0, 40.0, 900.0], dtype=torch.float64, requires_grad=True)
    for nu in (0.0, 3.5, 20.0):
        x.grad = None
        log_bessel_k(nu, x).sum().backward()
        # d/dx log K_nu(x) = -K_{nu-1}(x)/K_nu(x) - nu/x
        xs = x.detach().numpy()
        want = -np.exp(np.log(kve(nu - 1, xs)) - np.log(kve(nu, xs))) - nu / xs
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-8)


def test_one_dimension_is_pyros_asymmetric_laplace():
    mu, m, s2 = 0.3, 0.7, 1.5
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    law = MAL(t([mu]), t([m]), covariance_matrix=t([[s2]]), num_components=1)
    gamma = math.sqrt(m * m + 2 * s2)
    # Right and left scales s2 / (gamma -+ m): geometric mean sqrt(s2 / 2), ratio (gamma-m)/(gamma+m).
    ref = pdist.AsymmetricLaplace(t(mu), t(math.sqrt(s2 / 2)), t(math.sqrt((gamma - m) / (gamma + m))))
    x = torch.linspace(-6.0, 7.0, 27, dtype=torch.float64)
    torch.testing.assert_close(law.log_prob(x[:, None]), ref.log_prob(x), rtol=1e-12, atol=1e-12)


def test_density_integrates_to_one_in_one_and_two_dimensions():
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    law1 = MAL(t([0.2]), t([-1.1]), covariance_matrix=t([[0.7]]), num_components=1)
    density = lambda v: float(law1.log_prob(t([[v]])).exp())  # noqa: E731
    total = integrate.quad(density, -np.inf, 0.2)[0] + integrate.quad(density, 0.2, np.inf)[0]
    assert total == pytest.approx(1.0, abs=1e-8)
    # 2-d: polar coordinates around the location (the density has a log singularity there),
    # radius r = e^s so that the integrand r^2 f is smooth; trapezoid rule on a fine grid.
    law2 = MAL(t([0.1, -0.2]), t([0.5, -0.3]), scale_tril=t([[1.0, 0.0], [0.6, 0.8]]), num_components=2)
    s = torch.linspace(-25.0, math.log(80.0), 1500, dtype=torch.float64)
    theta = torch.arange(128, dtype=torch.float64) * (2 * math.pi / 128)
    r = s.exp()[:, None]
    pts = torch.stack([0.1 + r * theta.cos(), -0.2 + r * theta.sin()], -1)
    integrand = law2.log_prob(pts).exp() * r**2
    total = torch.trapezoid(integrand.sum(1) * (2 * math.pi / 128), s)
    assert float(total) == pytest.approx(1.0, abs=1e-7)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, m=st.integers(1, 3), d=st.integers(1, 2))
def test_samples_have_mean_mu_plus_m_and_covariance_sigma_plus_mm(seed, m, d):
    rng = np.random.default_rng(seed)
    n = m * d
    sigma = random_spd(rng, n, log10_scale=0.3)
    mu, skew = rng.standard_normal(n), rng.standard_normal(n)
    law = MAL(torch.as_tensor(mu), torch.as_tensor(skew), covariance_matrix=torch.as_tensor(sigma),
              num_components=m)
    torch.manual_seed(seed % 2**31)
    z = law.rsample((100_000,)).numpy()
    cov = sigma + np.outer(skew, skew)
    se = np.sqrt(np.diag(cov) / 100_000)
    np.testing.assert_array_less(np.abs(z.mean(0) - (mu + skew)), 5 * se)
    np.testing.assert_allclose(np.cov(z.T).reshape(n, n), cov, atol=0.08 * np.abs(cov).max())
    torch.testing.assert_close(law.mean, torch.as_tensor(mu + skew))


def test_rsample_is_reparameterised():
    loc = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    skew = torch.ones(4, dtype=torch.float64, requires_grad=True)
    law = MAL(loc, skew, covariance_matrix=torch.eye(4, dtype=torch.float64), num_components=2)
    law.rsample((10,)).sum().backward()
    assert loc.grad is not None and skew.grad is not None and skew.grad.abs().sum() > 0


def test_marginal_is_the_sub_block_law():
    rng = np.random.default_rng(0)
    sigma = random_spd(rng, 6)
    law = MAL(torch.as_tensor(rng.standard_normal(6)), torch.as_tensor(rng.standard_normal(6)),
              covariance_matrix=torch.as_tensor(sigma), num_components=3)
    marg = law.marginal([0, 2])
    # The marginal density is the joint integrated over the other block: compare by Monte Carlo
    # of the moments (a marginal of the mixture representation keeps the same W).
    z = law.sample((100_000,))[:, [0, 1, 4, 5]]
    torch.testing.assert_close(marg.mean, law.mean[[0, 1, 4, 5]])
    torch.testing.assert_close(z.mean(0), marg.mean, atol=0.05, rtol=0)
    assert marg.event_shape == (4,) and marg.num_components == 2


@pytest.mark.parametrize("lam,chi,psi", [(-0.5, 1.7, 2.4), (1.0, 1e-6, 2.0), (-3.0, 40.0, 2.0),
                                          (0.5, 300.0, 0.01), (-15.0, 0.3, 2.5)])
def test_gig_sampler_against_scipy(lam, chi, psi):
    from scipy.special import kve
    from scipy.stats import geninvgauss, kstest

    torch.manual_seed(0)
    draws = sample_gig(lam, torch.full((4,), chi, dtype=torch.float64), psi, (20_000,))
    assert draws.shape == (20_000, 4) and bool((draws > 0).all())
    eta, omega = math.sqrt(chi / psi), math.sqrt(chi * psi)
    ref = geninvgauss(lam, omega, scale=eta)
    assert kstest(draws[:, 0].numpy(), ref.cdf).pvalue > 1e-3
    mean = eta * kve(lam + 1, omega) / kve(lam, omega)  # closed form
    assert float(draws.mean()) == pytest.approx(mean, rel=5 * ref.std() / mean / math.sqrt(80_000))


def test_conditional_law_matches_importance_sampling_of_the_joint():
    """E[z_B | z_A] and E[z_B z_B^T | z_A] of the exact conditional sampler against
    self-normalised importance sampling with the joint density (proposal: a wide Student t)."""
    rng = np.random.default_rng(3)
    sigma = random_spd(rng, 4, log10_scale=0.2)
    law = MAL(torch.as_tensor(rng.standard_normal(4) * 0.3),
              torch.tensor([0.8, -0.5, 0.4, 0.6], dtype=torch.float64),
              covariance_matrix=torch.as_tensor(sigma), num_components=2, component_dim=2)
    z_a = torch.tensor([0.9, -0.4], dtype=torch.float64)
    torch.manual_seed(0)
    cond = law.condition({0: z_a})
    draws = cond.sample((100_000,))  # (S, 2)
    proposal = pdist.StudentT(3.0, torch.zeros(2, dtype=torch.float64), 2.5).to_event(1)
    props = proposal.sample((200_000,))
    logw = law.log_prob(torch.cat([z_a.expand(len(props), 2), props], -1)) - proposal.log_prob(props)
    w = torch.softmax(logw, 0)
    mean_is = (w[:, None] * props).sum(0)
    second_is = (w[:, None, None] * props[:, :, None] * props[:, None, :]).sum(0)
    torch.testing.assert_close(draws.mean(0), mean_is, atol=0.02, rtol=0)
    second = (draws[:, :, None] * draws[:, None, :]).mean(0)
    torch.testing.assert_close(second, second_is, atol=0.05, rtol=0.03)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="exactly one"):
        MAL(torch.zeros(2), torch.zeros(2), num_components=1)
    with pytest.raises(ValueError, match="dividing"):
        MAL(torch.zeros(3), torch.zeros(3), covariance_matrix=torch.eye(3), num_components=2)
    law = MAL(torch.zeros(4), torch.zeros(4), covariance_matrix=torch.eye(4), num_components=2)
    with pytest.raises(ValueError, match="every component is observed"):
        law.condition({0: torch.zeros(2), 1: torch.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        law.condition({0: torch.zeros(3)})
