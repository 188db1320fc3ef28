"""CompletedGMRF, ``q(z_A | x_A) p(z_B | z_A)`` in factored form, against the dense construction
written out in NumPy float64: mean, covariance, log density, entropy, KL to the prior, the draw's
linear map and its sample moments, for random present patterns (mixed in one batch)."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import multivariate_normal

from helpers import numpy_kl, random_spd
from pyro_mcvae.distributions import GMRF, CompletedGMRF, complete_from_prior

CASES = [(2, 1), (3, 4), (4, 3), (5, 16)]  # (M, d)


def dense_completion(mu_q, cov_q, flags, mu_p, cov_p, d):
    """Mean and covariance of ``z_A ~ q_A``, ``z_B | z_A ~ p(z_B | z_A)`` (dense inverses)."""
    a = np.repeat(flags, d)
    b = ~a
    mean, cov = mu_q.copy(), np.zeros_like(cov_q)
    s_aa = cov_q[np.ix_(a, a)]
    cov[np.ix_(a, a)] = s_aa
    if b.any():
        gain = cov_p[np.ix_(b, a)] @ np.linalg.inv(cov_p[np.ix_(a, a)])
        mean[b] = mu_p[b] + gain @ (mu_q[a] - mu_p[a])
        cov[np.ix_(b, a)] = gain @ s_aa
        cov[np.ix_(a, b)] = (gain @ s_aa).T
        cov[np.ix_(b, b)] = cov_p[np.ix_(b, b)] - gain @ cov_p[np.ix_(a, b)] + gain @ s_aa @ gain.T
    return mean, cov


def random_case(m, d, batch=7, seed=0, diagonal_prior=False, precision=False):
    """A batch with mixed present patterns (one row with every component present, one with a
    single component), q's absent blocks holding junk couplings the completion must ignore."""
    rng = np.random.default_rng(seed + 10 * m + d)
    n = m * d
    present = rng.random((batch, m)) < 0.5
    present[np.arange(batch), rng.integers(0, m, batch)] = True
    present[0] = True
    present[1] = False
    present[1, m - 1] = True
    mu_q, cov_q = rng.standard_normal((batch, n)), random_spd(rng, n, (batch,))
    mu_p = rng.standard_normal(n)
    cov_p = np.diag(rng.uniform(0.3, 2.0, n)) if diagonal_prior else random_spd(rng, n)
    return present, mu_q, cov_q, mu_p, cov_p


def build(present, mu_q, cov_q, mu_p, cov_p, d, dtype, diagonal_prior=False, precision=False):
    t = lambda x: torch.as_tensor(x, dtype=dtype)  # noqa: E731
    m = present.shape[-1]
    if diagonal_prior:
        prior = dist.Normal(t(mu_p), t(np.sqrt(np.diag(cov_p)))).to_event(1)
    elif precision:
        prior = GMRF(t(mu_p), precision_matrix=t(np.linalg.inv(cov_p)), num_components=m, component_dim=d)
    else:
        prior = GMRF(t(mu_p), scale_tril=t(np.linalg.cholesky(cov_p)), num_components=m, component_dim=d)
    return complete_from_prior(t(mu_q), t(cov_q), torch.as_tensor(present), prior, d), prior


TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m,d", CASES)
@pytest.mark.parametrize("prior_kind", ["scale_tril", "precision", "diagonal"])
def test_moments_density_entropy_and_kl_equal_the_dense_construction(m, d, dtype, prior_kind):
    diagonal, precision = prior_kind == "diagonal", prior_kind == "precision"
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, diagonal_prior=diagonal)
    law, prior = build(present, mu_q, cov_q, mu_p, cov_p, d, dtype, diagonal, precision)
    assert isinstance(law, CompletedGMRF) and law.batch_shape == (len(present),)
    torch.manual_seed(0)
    z = law.sample((3,)).double().numpy()
    lp = law.log_prob(torch.as_tensor(z, dtype=dtype)).double().numpy()
    kl = torch.distributions.kl_divergence(law, prior)
    assert law.completed_with(prior)  # the factored rule, not the dense fallback
    tol = TOL[dtype]
    for row, flags in enumerate(present):
        want_mean, want_cov = dense_completion(mu_q[row], cov_q[row], flags, mu_p, cov_p, d)
        np.testing.assert_allclose(law.mean[row].double().numpy(), want_mean, **tol)
        np.testing.assert_allclose(law.covariance_matrix[row].double().numpy(), want_cov, **tol)
        np.testing.assert_allclose(lp[:, row], multivariate_normal(want_mean, want_cov).logpdf(z[:, row]), **tol)
        want_entropy = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * want_cov)[1]
        np.testing.assert_allclose(float(law.entropy()[row]), want_entropy, **tol)
        a = np.repeat(flags, d)
        want_kl = numpy_kl(mu_q[row][a], cov_q[row][np.ix_(a, a)], mu_p[a], cov_p[np.ix_(a, a)])
        np.testing.assert_allclose(float(kl[row]), want_kl, **tol)
        # the same number from the full laws (the conditional parts cancel)
        np.testing.assert_allclose(want_kl, numpy_kl(want_mean, want_cov, mu_p, cov_p), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m,d", CASES)
def test_the_draw_is_a_linear_map_whose_square_is_the_covariance(m, d):
    """``z = mean + F e``: ``F F^T`` equals the dense covariance (float64, 1e-10)."""
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, seed=1)
    law, _ = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float64)
    n = m * d
    eye = torch.eye(n, dtype=torch.float64)[:, None, :].expand(n, len(present), n)  # e = unit vectors
    shift = law._draw(torch.zeros(len(present), n, dtype=torch.float64))
    torch.testing.assert_close(shift, law.mean, rtol=1e-12, atol=1e-12)
    factor = (law._draw(eye) - shift).permute(1, 2, 0)  # (batch, n, n): column j is F e_j
    torch.testing.assert_close(factor @ factor.transpose(-1, -2), law.covariance_matrix, rtol=1e-10, atol=1e-10)


def test_sample_moments_in_standard_errors():
    m, d = 3, 2
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, batch=5, seed=2)
    law, _ = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float32)
    torch.manual_seed(3)
    z = law.sample((40000,)).double()
    cov = law.covariance_matrix.double()
    se = (cov.diagonal(dim1=-2, dim2=-1) / z.shape[0]).sqrt()
    assert float(((z.mean(0) - law.mean.double()) / se).abs().max()) < 4.5
    centred = z - law.mean.double()
    emp = torch.einsum("sbi,sbj->bij", centred, centred) / z.shape[0]
    # se of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / N) for Gaussian draws
    var_ii = cov.diagonal(dim1=-2, dim2=-1)
    se_cov = ((var_ii[..., :, None] * var_ii[..., None, :] + cov**2) / z.shape[0]).sqrt()
    assert float(((emp - cov) / se_cov).abs().max()) < 4.5


def test_kl_to_another_prior_takes_the_dense_rule():
    """Against a prior other than the completing one the conditional parts do not cancel: the
    KL is the full Gaussian one."""
    m, d = 3, 2
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, seed=4)
    law, prior = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float64)
    other = GMRF(prior.loc + 0.5, covariance_matrix=prior.covariance_matrix * 1.3, num_components=m)
    assert not law.completed_with(other) and law.completed_with(prior.expand((len(present),)))
    kl = torch.distributions.kl_divergence(law, other)
    for row, flags in enumerate(present):
        want_mean, want_cov = dense_completion(mu_q[row], cov_q[row], flags, mu_p, cov_p, d)
        want = numpy_kl(want_mean, want_cov, mu_p + 0.5, cov_p * 1.3)
        np.testing.assert_allclose(float(kl[row]), want, rtol=1e-9)


def test_expand_condition_and_batch_shapes():
    m, d = 3, 2
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, batch=4, seed=5)
    law, prior = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float64)
    wide = law.expand((2, 4))
    assert wide.batch_shape == (2, 4) and wide.rsample((3,)).shape == (3, 2, 4, m * d)
    z = law.sample((5,))
    torch.testing.assert_close(wide.log_prob(z[:, None]), law.log_prob(z)[:, None].expand(5, 2, 4))
    torch.testing.assert_close(torch.distributions.kl_divergence(wide, prior),
                               torch.distributions.kl_divergence(law, prior).expand(2, 4))
    dense = GMRF(law.mean, covariance_matrix=law.covariance_matrix, num_components=m)
    observed = {0: torch.randn(4, d, dtype=torch.float64)}
    got, want = law.condition(observed), dense.condition(observed)
    torch.testing.assert_close(got.mean, want.mean)
    torch.testing.assert_close(got.covariance_matrix, want.covariance_matrix)
    torch.testing.assert_close(law.scale_tril, dense.scale_tril)
    torch.testing.assert_close(law.variance, dense.variance)


def test_gradients_equal_the_dense_laws():
    """log_prob at draws that carry gradients, entropy and the KL: the same gradients with respect
    to q's mean and covariance and the prior's factor as the dense construction's (float64)."""
    m, d = 3, 2
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, batch=5, seed=6)
    t = lambda x: torch.as_tensor(x).clone().requires_grad_()  # noqa: E731
    leaves = [t(mu_q), t(np.linalg.cholesky(cov_q)), t(mu_p), t(np.linalg.cholesky(cov_p))]
    e = torch.randn(4, len(present), m * d, dtype=torch.float64)
    grads = []
    for factored in (True, False):
        lq, fq, lp, fp = leaves
        prior = GMRF(lp, scale_tril=torch.tril(fp), num_components=m)
        cov = torch.tril(fq) @ torch.tril(fq).transpose(-1, -2)
        law = complete_from_prior(lq, cov, torch.as_tensor(present), prior, d)
        z = law._draw(e)  # one draw map for both, so the objective is the same function
        if not factored:
            law = GMRF(law.mean, covariance_matrix=law.covariance_matrix, num_components=m)
        loss = (law.log_prob(z).sum() + law.entropy().sum() + torch.distributions.kl_divergence(law, prior).sum()
                - prior.log_prob(z).sum())
        grads.append(torch.autograd.grad(loss, leaves))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_under_bf16_autocast_the_algebra_runs_in_float32():
    m, d = 3, 4
    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, seed=7)
    law, prior = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, _ = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float32)
        torch.manual_seed(0)
        z = auto.rsample((2,))
        lp, kl, ent = auto.log_prob(z), torch.distributions.kl_divergence(auto, prior), auto.entropy()
    torch.manual_seed(0)
    assert z.dtype == lp.dtype == kl.dtype == torch.float32
    torch.testing.assert_close(z, law.rsample((2,)))
    torch.testing.assert_close(lp, law.log_prob(z))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(law, prior))
    torch.testing.assert_close(ent, law.entropy())


@pytest.mark.parametrize("m,d", CASES)
def test_completion_from_present_blocks_equals_the_dense_one(m, d):
    """``groups`` (only the present blocks of q, as ``present_blocks`` gives them, rows shuffled
    between groups) in place of the dense covariance: the same mean, draws, log density, KL,
    dense covariance (zero off the present blocks of q) and expansion."""
    from pyro_mcvae.distributions.completed_gmrf import present_blocks

    present, mu_q, cov_q, mu_p, cov_p = random_case(m, d, seed=3)
    dense, prior = build(present, mu_q, cov_q, mu_p, cov_p, d, torch.float64)
    flags = torch.as_tensor(present)
    cov = torch.as_tensor(cov_q)
    order = torch.randperm(len(flags), generator=torch.Generator().manual_seed(0))
    half = len(order) // 2  # two calls over disjoint rows, as a caller assembling pieces would
    groups = (present_blocks(cov[order[:half]], flags[order[:half]], d, rows=order[:half])
              + present_blocks(cov[order[half:]], flags[order[half:]], d, rows=order[half:]))
    law = complete_from_prior(torch.as_tensor(mu_q), None, flags, prior, d, groups=groups)
    torch.testing.assert_close(law.loc, dense.loc)
    e = torch.randn(3, *dense.batch_shape, dense.event_shape[0], dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(law._draw(e), dense._draw(e))
    z = dense._draw(e)
    torch.testing.assert_close(law.log_prob(z), dense.log_prob(z))
    torch.testing.assert_close(torch.distributions.kl_divergence(law, prior),
                               torch.distributions.kl_divergence(dense, prior))
    torch.testing.assert_close(law.covariance_matrix, dense.covariance_matrix)
    torch.testing.assert_close(law.expand((2, len(flags))).log_prob(z[:2]), dense.expand((2, len(flags))).log_prob(z[:2]))
    with pytest.raises(ValueError, match="exactly one of covariance and groups"):
        complete_from_prior(torch.as_tensor(mu_q), cov, flags, prior, d, groups=groups)
