"""PriorCompletion, q(z_A) p(z_B | z_A) by its density: equal to the closed-form Gaussian completion."""

import numpy as np
import pytest
import torch

from helpers import random_spd
from pyro_mcvae.distributions import GMRF, PriorCompletion, complete_from_prior


def gaussian_case(seed=0, m=3, d=2, batch=4, present=(0, 2)):
    rng = np.random.default_rng(seed)
    n, t = m * d, torch.as_tensor
    prior = GMRF(t(rng.standard_normal(n)), covariance_matrix=t(random_spd(rng, n)), num_components=m,
                 component_dim=d)
    idx = np.concatenate([np.arange(k * d, (k + 1) * d) for k in present])
    na = len(idx)
    q_a = GMRF(t(rng.standard_normal((batch, na))), covariance_matrix=t(random_spd(rng, na, (batch,))),
               num_components=len(present), component_dim=d)
    # The same q_A embedded in a full (M*d) posterior with no couplings to the absent blocks.
    loc = np.zeros((batch, n))
    loc[:, idx] = q_a.loc.numpy()
    cov = np.tile(np.eye(n), (batch, 1, 1))
    cov[np.ix_(range(batch), idx, idx)] = q_a.covariance_matrix.numpy()
    mask = torch.zeros(batch, m, dtype=torch.bool)
    mask[:, list(present)] = True
    closed = complete_from_prior(t(loc), t(cov), mask, prior, d)
    return prior, q_a, closed


def test_density_equals_the_closed_form_gaussian_completion():
    prior, q_a, closed = gaussian_case()
    law = PriorCompletion(q_a, prior, [0, 2], 3, 2)
    torch.manual_seed(0)
    z = closed.sample((7,))  # (7, 4, 6)
    torch.testing.assert_close(law.log_prob(z), closed.log_prob(z))
    torch.testing.assert_close(law.expand((7, 4)).log_prob(z), closed.log_prob(z))


def test_samples_follow_the_completed_law():
    prior, q_a, closed = gaussian_case()
    law = PriorCompletion(q_a, prior, [0, 2], 3, 2)
    torch.manual_seed(1)
    z = law.sample((20000,))
    assert z.shape == (20000, 4, 6)
    torch.testing.assert_close(z.mean(0), closed.mean, atol=0.06, rtol=0.05)
    cov = torch.einsum("sbi,sbj->bij", z - z.mean(0), z - z.mean(0)) / (z.shape[0] - 1)
    torch.testing.assert_close(cov, closed.covariance_matrix, atol=0.1, rtol=0.1)


def test_bad_arguments_are_named():
    prior, q_a, _ = gaussian_case()
    with pytest.raises(ValueError, match="proper subset"):
        PriorCompletion(q_a, prior, [], 3, 2)
    with pytest.raises(ValueError, match="event shape \\(2,\\)"):
        PriorCompletion(q_a, prior, [1], 3, 2)
    with pytest.raises(ValueError, match="prior must have batch shape"):
        PriorCompletion(q_a, prior.expand((4,)), [0, 2], 3, 2)


def test_completion_moments_per_row_against_dense_float64():
    """Every row of one batch with its own present set (and a row with all present): the completed
    mean and covariance against the joint law of ``z_A ~ q_A``, ``z_B | z_A ~ p(z_B | z_A)``
    written out with dense inverses; an all-present row is ``q`` itself, exactly."""
    rng = np.random.default_rng(5)
    m, d = 4, 2
    n, t = m * d, torch.as_tensor
    mu_p, cov_p = rng.standard_normal(n), random_spd(rng, n)
    prior = GMRF(t(mu_p), covariance_matrix=t(cov_p), num_components=m, component_dim=d)
    present = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 1]], dtype=bool)
    loc = rng.standard_normal((len(present), n))
    cov = random_spd(rng, n, (len(present),))
    closed = complete_from_prior(t(loc), t(cov), t(present), prior, d)
    for row, flags in enumerate(present):
        a = np.repeat(flags, d)
        b = ~a
        q_cov = np.where(np.outer(a, a), cov[row], 0.0)  # q's couplings to absent blocks are ignored
        if not b.any():
            assert torch.equal(closed.mean[row], t(loc[row]))
            assert torch.equal(closed.covariance_matrix[row], t(0.5 * (cov[row] + cov[row].T)))
            continue
        gain = cov_p[np.ix_(b, a)] @ np.linalg.inv(cov_p[np.ix_(a, a)])
        want_mean, want_cov = np.empty(n), np.empty((n, n))
        want_mean[a] = loc[row, a]
        want_mean[b] = mu_p[b] + gain @ (loc[row, a] - mu_p[a])
        s_aa = q_cov[np.ix_(a, a)]
        want_cov[np.ix_(a, a)] = s_aa
        want_cov[np.ix_(b, a)] = gain @ s_aa
        want_cov[np.ix_(a, b)] = (gain @ s_aa).T
        want_cov[np.ix_(b, b)] = (cov_p[np.ix_(b, b)] - gain @ cov_p[np.ix_(a, b)]) + gain @ s_aa @ gain.T
        np.testing.assert_allclose(closed.mean[row].numpy(), want_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(closed.covariance_matrix[row].numpy(), want_cov, rtol=1e-10, atol=1e-10)
