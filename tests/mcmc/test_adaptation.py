"""The warm-up adapters alone: dual averaging finds the step of a target acceptance, the moving
moments are numpy's (weighted) means and variances, the regularised mass is SPD, the ChEES
gradient is the derivative of its criterion, and its Adam ascent finds a quarter period."""

import math

import numpy as np
import pytest
import torch

from pyro_mcvae.mcmc import (CrossChainMoments, DualAveraging, EuclideanMetric, TrajectoryAdapter, chees_gradient,
                             leapfrog, regularised_inverse_mass)


def test_dual_averaging_finds_the_root_of_a_noisy_acceptance_curve():
    """Acceptance ``exp(-(eps / 1.5)^2)`` plus noise of sd 0.1: the averaged step reaches the step
    of acceptance 0.8, ``1.5 sqrt(-log 0.8) = 0.7087``, within 3 %."""
    rng = np.random.default_rng(0)
    da = DualAveraging(math.log(0.05))
    for _ in range(3000):
        eps = math.exp(da.x)
        da.update(0.8 - (math.exp(-(eps / 1.5) ** 2) + 0.1 * rng.standard_normal()))
    assert math.exp(da.x_bar) == pytest.approx(1.5 * math.sqrt(-math.log(0.8)), rel=0.03)


def test_dual_averaging_of_one_leapfrog_step_reaches_the_target_acceptance_on_a_gaussian():
    """HMC with one leapfrog step (MALA) on a 10-d standard Gaussian, states drawn exactly: dual
    averaging on the chains' mean acceptance, then the averaged step accepts 0.80 +- 0.01."""
    torch.manual_seed(0)
    c, d = 1000, 10
    metric = EuclideanMetric(torch.ones(d, dtype=torch.float64))

    def energy_and_grad(z):
        return 0.5 * (z * z).sum(-1), z

    def mean_acceptance(eps):
        z = torch.randn(c, d, dtype=torch.float64)
        p = metric.sample_momentum(z)
        e, g = energy_and_grad(z)
        h = torch.full((c, 1), eps, dtype=torch.float64)
        z1, p1, e1, _ = leapfrog(z, p, e, g, h, torch.ones(c, 1, dtype=torch.float64), 1, energy_and_grad, metric)
        delta = e1 + metric.kinetic(p1) - e - metric.kinetic(p)
        return float(torch.exp(torch.clamp(-delta, max=0.0)).mean())

    da = DualAveraging(math.log(0.1))
    for _ in range(300):
        da.update(0.8 - mean_acceptance(math.exp(da.x)))
    eps = math.exp(da.x_bar)
    assert 0.3 < eps < 1.5  # far from the start
    assert abs(np.mean([mean_acceptance(eps) for _ in range(10)]) - 0.8) < 0.01


def _batches(seed, t, c, d):
    rng = np.random.default_rng(seed)
    shift = rng.normal(0.0, 2.0, size=(t, 1, d))  # the batches' means differ: the shift term matters
    return rng.normal(size=(t, c, d)) * rng.uniform(0.5, 2.0, size=d) + shift


def test_moments_at_welfords_rate_are_numpys_mean_variance_and_covariance():
    """``rate_floor=0``: after ``t`` batches, the mean, variance and covariance of all ``t C``
    states (numpy, population normalisation)."""
    x = _batches(0, 13, 7, 3)
    moments = CrossChainMoments(torch.as_tensor(x[0]), rate_floor=0.0)
    for batch in x:
        moments.update(torch.as_tensor(batch), covariance=True)
    flat = x.reshape(-1, 3)
    np.testing.assert_allclose(moments.mean.numpy(), flat.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(moments.var.numpy(), flat.var(0), rtol=1e-12)
    np.testing.assert_allclose(moments.cov.numpy(), np.cov(flat.T, bias=True), rtol=0, atol=1e-12)
    moments.restart()  # a new warm-up forgets everything
    moments.update(torch.as_tensor(x[2]), covariance=True)
    np.testing.assert_allclose(moments.var.numpy(), x[2].var(0), rtol=1e-12)
    np.testing.assert_allclose(moments.cov.numpy(), np.cov(x[2].T, bias=True), rtol=0, atol=1e-12)


def test_grouped_moments_are_per_group_and_the_covariance_is_pooled_within_groups():
    x = _batches(1, 9, 12, 3)
    groups = torch.arange(12) % 3
    moments = CrossChainMoments(torch.as_tensor(x[0]), groups, rate_floor=0.0)
    for batch in x:
        moments.update(torch.as_tensor(batch), covariance=True)
    per_group = [x[:, groups.numpy() == g].reshape(-1, 3) for g in range(3)]
    np.testing.assert_allclose(moments.mean.numpy(), [s.mean(0) for s in per_group], rtol=0, atol=1e-12)
    np.testing.assert_allclose(moments.var.numpy(), [s.var(0) for s in per_group], rtol=1e-12)
    np.testing.assert_allclose(moments.pooled_var().numpy(), np.mean([s.var(0) for s in per_group], 0), rtol=1e-12)
    within = np.mean([np.cov(s.T, bias=True) for s in per_group], 0)
    np.testing.assert_allclose(moments.cov.numpy(), within, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moments.center().numpy(), moments.mean.numpy()[groups.numpy()])


def test_moments_with_a_rate_floor_are_exponentially_weighted():
    """Past ``t = 1 / floor`` the batches weigh ``r_i prod_{j > i} (1 - r_j)``: numpy's weighted
    mean and variance with those weights."""
    x = _batches(2, 30, 5, 2)
    floor = 0.2
    moments = CrossChainMoments(torch.as_tensor(x[0]), rate_floor=floor)
    rates = [max(1.0 / t, floor) for t in range(1, 31)]
    for batch in x:
        moments.update(torch.as_tensor(batch))
    w = np.array([r * np.prod([1 - s for s in rates[i + 1:]]) for i, r in enumerate(rates)])
    assert w.sum() == pytest.approx(1.0) and w[-1] / w[0] > 100  # recent batches count more
    weights = np.repeat(w, 5) / 5
    flat = x.reshape(-1, 2)
    mean = np.average(flat, axis=0, weights=weights)
    np.testing.assert_allclose(moments.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(moments.var.numpy(), np.average((flat - mean) ** 2, axis=0, weights=weights), rtol=1e-12)


def test_the_regularised_mass_is_spd_from_fewer_chains_than_dimensions_and_the_variance_from_many():
    rng = np.random.default_rng(3)
    few = CrossChainMoments(torch.as_tensor(rng.normal(size=(2, 5))), rate_floor=0.0)
    few.update(torch.as_tensor(rng.normal(size=(2, 5))), covariance=True)  # a rank-1 covariance
    assert torch.linalg.matrix_rank(few.cov) == 1
    dense = regularised_inverse_mass(few, dense=True)
    assert torch.equal(dense, dense.T) and torch.linalg.eigvalsh(dense).min() > 5e-4  # SPD: Cholesky works
    scales = np.array([0.5, 1.0, 3.0])
    many = CrossChainMoments(torch.zeros(4000, 3, dtype=torch.float64), rate_floor=0.0)
    for _ in range(20):
        many.update(torch.as_tensor(rng.normal(size=(4000, 3)) * scales), covariance=True)
    np.testing.assert_allclose(regularised_inverse_mass(many, dense=False).numpy(), scales ** 2, rtol=0.02)
    dense = regularised_inverse_mass(many, dense=True).numpy()  # 80,000 states: a 1.6 % standard error
    np.testing.assert_allclose(np.diag(dense), scales ** 2, rtol=0.05)
    np.testing.assert_allclose(dense - np.diag(np.diag(dense)), 0.0, atol=0.05)


def _exact_flow(z, p, t, inv_mass):
    """The exact Hamiltonian flow of ``E = |z|^2 / 2`` with inverse mass ``diag(s^2)`` for times ``t (C, 1)``."""
    s = inv_mass.sqrt()
    return (z * torch.cos(s * t) + s * p * torch.sin(s * t), -z / s * torch.sin(s * t) + p * torch.cos(s * t))


def test_chees_gradient_is_a_quarter_of_the_criterions_log_t_derivative():
    """Along the exact flow, ``4 x`` the gradient is ``d/dlog T (d(z') - d(z))^2`` (central finite
    differences in ``log T``, per chain; ``d`` the whitened squared distance from the centre)."""
    torch.manual_seed(5)
    inv_mass = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    metric = EuclideanMetric(inv_mass)
    z, m = torch.randn(8, 3, dtype=torch.float64), torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    p = metric.sample_momentum(z)
    t = torch.rand(8, 1, dtype=torch.float64) * 2 + 0.1
    one = torch.ones(1, dtype=torch.float64)

    def criterion(log_t):
        z1, _ = _exact_flow(z - m, p, log_t.exp(), inv_mass)
        return (metric.whitened_sq(z1) - metric.whitened_sq(z - m)) ** 2

    h = 1e-5
    derivative = (criterion(t.log() + h) - criterion(t.log() - h)) / (2 * h)
    z1, p1 = _exact_flow(z - m, p, t, inv_mass)
    per_chain = torch.stack([chees_gradient(z[i:i + 1], z1[i:i + 1] + m, p1[i:i + 1], one, t[i], m, metric)
                             for i in range(8)])
    torch.testing.assert_close(4 * per_chain, derivative, rtol=1e-6, atol=1e-8)
    # A divergent chain (alpha 0, here with a non-finite end) counts as zero in the chain mean.
    alpha = torch.ones(8, dtype=torch.float64)
    alpha[3] = 0.0
    z1_bad = (z1 + m).clone()
    z1_bad[3] = float("nan")
    got = chees_gradient(z, z1_bad, p1, alpha, t[:, 0], m, metric)
    torch.testing.assert_close(got, (per_chain.sum() - per_chain[3]) / 8)


def test_trajectory_adapter_climbs_to_a_quarter_period_of_a_gaussian():
    """On a 5-d standard Gaussian with exact trajectories, ``E[(d' - d)^2] = 4 D sin^2 T`` is
    largest at ``T = pi / 2``: from ``T = 0.1`` the averaged iterate lands within 10 %."""
    torch.manual_seed(6)
    c, d = 300, 5
    metric, zero = EuclideanMetric(torch.ones(d, dtype=torch.float64)), torch.zeros(d, dtype=torch.float64)
    adapter = TrajectoryAdapter(0.1)
    for i in range(250):
        t = math.exp(adapter.x)
        z = torch.randn(c, d, dtype=torch.float64)
        p = metric.sample_momentum(z)
        z1, p1 = _exact_flow(z, p, torch.full((c, 1), t, dtype=torch.float64), metric.inv_mass)
        g = chees_gradient(z, z1, p1, torch.ones(c, dtype=torch.float64), torch.full((c,), t, dtype=torch.float64),
                           zero, metric)
        adapter.update(float(g), step_size=0.05, max_steps=200)
        if i == 100:
            adapter.restart_average()
    assert adapter.averaged == pytest.approx(math.pi / 2, rel=0.1)
    # The bounds hold: at most max_steps steps, at least half a step.
    capped = TrajectoryAdapter(1.0)
    for _ in range(50):
        capped.update(1.0, step_size=0.1, max_steps=12)
    assert capped.averaged <= 1.2 + 1e-12 and capped.averaged > 1.1
