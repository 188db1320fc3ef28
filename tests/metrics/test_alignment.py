"""The alignment measurements against exact constructions: canonical correlations of a
covariance built with known ones, their sample version, and the linear probe against the Bayes
accuracy of two Gaussian classes."""

import math

import pytest
import torch

from pyro_mcvae.metrics.alignment import canonical_correlations, linear_probe, sample_canonical_correlations


def _orthogonal(n, gen):
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _known_cc_covariance(rho, p, q, gen):
    """Covariance of (a, b), a in R^p, b in R^q, whose canonical correlations are ``rho``:
    whitened cross-covariance diag(rho), then arbitrary invertible maps on each group."""
    k = len(rho)
    cross = torch.zeros(p, q, dtype=torch.float64)
    cross[range(k), range(k)] = torch.tensor(rho, dtype=torch.float64)
    white = torch.cat([torch.cat([torch.eye(p, dtype=torch.float64), cross], 1),
                       torch.cat([cross.T, torch.eye(q, dtype=torch.float64)], 1)])
    ma = _orthogonal(p, gen) @ torch.diag(torch.rand(p, generator=gen, dtype=torch.float64) + 0.5)
    mb = _orthogonal(q, gen) @ torch.diag(torch.rand(q, generator=gen, dtype=torch.float64) + 0.5)
    m = torch.block_diag(ma, mb)
    return m @ white @ m.T


def test_canonical_correlations_recover_the_construction():
    gen = torch.Generator().manual_seed(0)
    rho = [0.95, 0.7, 0.3]
    cov = _known_cc_covariance(rho, 4, 5, gen)
    cc = canonical_correlations(cov, range(4), range(4, 9))
    assert cc.shape == (4,)
    torch.testing.assert_close(cc, torch.tensor(rho + [0.0], dtype=torch.float64), atol=1e-10, rtol=0)
    # Symmetric in the two groups, and invariant to permuting coordinates inside a group.
    torch.testing.assert_close(canonical_correlations(cov, range(4, 9), range(4))[:4], cc, atol=1e-10, rtol=0)
    torch.testing.assert_close(canonical_correlations(cov, [2, 0, 3, 1], range(4, 9)), cc, atol=1e-10, rtol=0)


def test_sample_canonical_correlations_converge():
    gen = torch.Generator().manual_seed(1)
    rho = [0.9, 0.5]
    cov = _known_cc_covariance(rho, 3, 3, gen)
    n = 200_000
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    cc = sample_canonical_correlations(x[:, :3], x[:, 3:])
    # Sampling error of a canonical correlation is about (1 - rho^2) / sqrt(n).
    assert abs(cc[0] - 0.9) < 5 * (1 - 0.81) / math.sqrt(n) + 1e-3
    assert abs(cc[1] - 0.5) < 5 * (1 - 0.25) / math.sqrt(n) + 1e-3
    assert cc[2] < 0.01


def test_sample_canonical_correlations_reject_bad_input():
    with pytest.raises(ValueError, match="paired"):
        sample_canonical_correlations(torch.zeros(10, 2), torch.zeros(9, 2))
    with pytest.raises(ValueError, match="more samples"):
        sample_canonical_correlations(torch.zeros(4, 2), torch.zeros(4, 2))


def test_linear_probe_reaches_the_bayes_accuracy_of_two_gaussians():
    """Two classes N(+-delta/2 e, I) in 5-d: the Bayes classifier is linear, accuracy
    Phi(delta / 2)."""
    gen = torch.Generator().manual_seed(2)
    delta, p, n = 2.0, 5, 20_000
    direction = torch.nn.functional.normalize(torch.randn(p, generator=gen, dtype=torch.float64), dim=0)

    def draw(n):
        y = torch.randint(0, 2, (n,), generator=gen)
        x = torch.randn(n, p, generator=gen, dtype=torch.float64) + (y[:, None] - 0.5) * delta * direction
        return 3.0 * x + 7.0, y  # the probe standardises: scale and shift do not matter

    probe = linear_probe(*draw(n))
    test_x, test_y = draw(n)
    bayes = 0.5 * (1 + math.erf(delta / 2 / math.sqrt(2)))
    se = math.sqrt(bayes * (1 - bayes) / n)
    assert abs(probe.accuracy(test_x, test_y) - bayes) < 4 * se + 0.005
    assert probe.predict(test_x).shape == (n,)
