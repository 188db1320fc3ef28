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


def test_row_groups_join_the_groups_laws_row_by_row():
    """Rows 0, 2 from one law and rows 1, 3, 4 from another (near-deterministic draws at distinct
    means): draws and densities land on their own rows, also after expanding to particles."""
    import pyro.distributions as dist
    from pyro_mcvae.distributions import RowGroups

    first = dist.Normal(torch.tensor([[0.0, 0.0], [2.0, 2.0]]), 1e-6).to_event(1)
    second = dist.Normal(torch.tensor([[10.0, 10.0], [30.0, 30.0], [40.0, 40.0]]), 1e-6).to_event(1)
    law = RowGroups([first, second], [torch.tensor([0, 2]), torch.tensor([1, 3, 4])])
    assert law.batch_shape == (5,) and law.event_shape == (2,) and law.has_rsample
    want = torch.tensor([0.0, 10.0, 2.0, 30.0, 40.0])
    torch.testing.assert_close(law.rsample((3,)), want[:, None].expand(3, 5, 2), atol=1e-4, rtol=0)
    value = torch.randn(3, 5, 2)
    lp = law.log_prob(value)
    torch.testing.assert_close(lp[:, [0, 2]], first.log_prob(value[:, [0, 2]]))
    torch.testing.assert_close(lp[:, [1, 3, 4]], second.log_prob(value[:, [1, 3, 4]]))
    wide = law.expand((4, 5))
    assert wide.batch_shape == (4, 5) and wide.sample().shape == (4, 5, 2)
    torch.testing.assert_close(wide.log_prob(value[0]), lp[0].expand(4, 5))
    with pytest.raises(ValueError, match="partition"):
        RowGroups([first, second], [torch.tensor([0, 1]), torch.tensor([1, 3, 4])])


def padded_case(seed=0, m=3, d=2):
    """A posterior over the present blocks of each row (rows miss different components),
    padded with N(0, I) uncoupled absent blocks, as the block guides build it."""
    rng = np.random.default_rng(seed)
    n, t = m * d, torch.as_tensor
    present = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=bool)
    loc, cov = np.zeros((len(present), n)), np.tile(np.eye(n), (len(present), 1, 1))
    for row, flags in enumerate(present):
        a = np.repeat(flags, d)
        loc[row, a] = rng.standard_normal(a.sum())
        cov[row][np.ix_(a, a)] = random_spd(rng, int(a.sum()))
    padded = GMRF(t(loc), covariance_matrix=t(cov), num_components=m, component_dim=d)
    return padded, t(present), loc, cov


def test_sampled_completion_scores_the_present_blocks_alone():
    """log_prob is log q_A(z_A) of each row's present blocks (dense SciPy reference), whatever
    the absent blocks hold; draws keep the padded law's present blocks (with their gradient)
    and take the absent ones from the sampler."""
    from scipy.stats import multivariate_normal
    from pyro_mcvae.distributions import SampledCompletion

    padded, present, loc, cov = padded_case()
    filler = torch.full((6,), 7.0, dtype=torch.float64)

    def complete(z, given):
        return torch.where(given.repeat_interleave(2, -1), z, filler)

    law = SampledCompletion(padded, present, complete, 2)
    torch.manual_seed(0)
    z = law.sample((5,))  # (5, 4, 6)
    a = present.repeat_interleave(2, -1)
    assert bool((z[:, ~a] == 7.0).all()) and law.expand((5, 4)).log_prob(z).shape == (5, 4)
    lp = law.log_prob(z + 3.0 * ~a)  # the absent blocks' values do not matter
    for row in range(4):
        keep = a[row].numpy()
        want = multivariate_normal(loc[row, keep], cov[row][np.ix_(keep, keep)]).logpdf(z[:, row, keep].numpy())
        np.testing.assert_allclose(lp[:, row].numpy(), want, rtol=1e-10, atol=1e-10)
    loc_t = padded.loc.clone().requires_grad_()
    again = SampledCompletion(GMRF(loc_t, covariance_matrix=padded.covariance_matrix, num_components=3),
                              present, complete, 2)
    again.rsample().sum().backward()
    torch.testing.assert_close(loc_t.grad, a.to(torch.float64))  # dz_A / dloc = 1, nothing to z_B
    with pytest.raises(ValueError, match="True in every row"):
        SampledCompletion(padded, torch.zeros(4, 3, dtype=torch.bool), complete, 2)
