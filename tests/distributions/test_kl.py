"""The analytic KL between GMRFs (used by TraceMeanField_ELBO) against an independent closed form,
against Monte Carlo, and inside the MCVAE's ELBO (Trace_ELBO vs TraceMeanField_ELBO, beta)."""

from contextlib import contextmanager

import numpy as np
import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.distributions import GMRF
from pyro_mcvae.infer.objectives import MeanFieldELBO, TraceELBO

import pyro_mcvae

from helpers import SEEDS, make_gmrf, random_spd


# ---------------------------------------------------------------------------------------------
# Independent closed form (numpy float64)
# ---------------------------------------------------------------------------------------------
def np_kl(mu_q, s_q, mu_p, s_p):
    """KL(N(mu_q, S_q) || N(mu_p, S_p)) for one pair."""
    k = mu_q.shape[-1]
    dm = mu_p - mu_q
    _, logdet_p = np.linalg.slogdet(s_p)
    _, logdet_q = np.linalg.slogdet(s_q)
    return 0.5 * (
        np.trace(np.linalg.solve(s_p, s_q)) + dm @ np.linalg.solve(s_p, dm) - k + logdet_p - logdet_q
    )


def kl_spd(rng, n, batch=()):
    """The random SPD matrices of these tests: a smaller ridge and spread than the default."""
    return random_spd(rng, n, batch, ridge=0.2, log10_scale=0.5)


def q_and_p(rng, m, d, batch):
    """q built from a covariance, p from a precision; returns the GMRFs and their numpy
    means / covariances."""
    n = m * d
    mu_q, mu_p = rng.standard_normal((batch, n)), rng.standard_normal((batch, n))
    s_q, s_p = kl_spd(rng, n, (batch,)), kl_spd(rng, n, (batch,))
    q = make_gmrf("covariance", mu_q, s_q, m, d)
    p = make_gmrf("precision", mu_p, s_p, m, d)
    return q, p, (mu_q, s_q, mu_p, s_p)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 5),
    d=st.integers(1, 3),
    batch=st.integers(1, 4),
    seed=SEEDS,
)
def test_kl_matches_closed_form(m, d, batch, seed):
    rng = np.random.default_rng(seed)
    q, p, (mu_q, s_q, mu_p, s_p) = q_and_p(rng, m, d, batch)
    for a, b, args in ((q, p, (mu_q, s_q, mu_p, s_p)), (p, q, (mu_p, s_p, mu_q, s_q))):
        kl = torch.distributions.kl_divergence(a, b)
        assert kl.shape == (batch,)
        ref = np.array([np_kl(*(x[i] for x in args)) for i in range(batch)])
        np.testing.assert_allclose(kl.numpy(), ref, rtol=1e-5, atol=1e-10)
    # KL of a distribution with itself is zero
    np.testing.assert_allclose(torch.distributions.kl_divergence(q, q).numpy(), 0.0, atol=1e-9)


def test_kl_broadcasts_unbatched_prior():
    """A prior of batch shape () against a guide of batch (B,), as in the model (after expand)."""
    rng = np.random.default_rng(4)
    m, d, batch = 3, 2, 4
    q, _, (mu_q, s_q, _, _) = q_and_p(rng, m, d, batch)
    mu_p, s_p = rng.standard_normal(m * d), kl_spd(rng, m * d)
    p = make_gmrf("precision", mu_p, s_p, m, d)
    kl = torch.distributions.kl_divergence(q, p.expand((batch,)))
    ref = np.array([np_kl(mu_q[i], s_q[i], mu_p, s_p) for i in range(batch)])
    np.testing.assert_allclose(kl.numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("m,d", [(2, 1), (3, 2)])
def test_kl_matches_monte_carlo(m, d):
    rng = np.random.default_rng(100 + m)
    batch = 3
    q, p, _ = q_and_p(rng, m, d, batch)
    torch.manual_seed(0)
    n = 200_000
    z = q.sample((n,))  # (n, batch, M*d)
    diff = (q.log_prob(z) - p.log_prob(z)).numpy()
    est, se = diff.mean(0), diff.std(0, ddof=1) / np.sqrt(n)
    kl = torch.distributions.kl_divergence(q, p).numpy()
    assert np.all(np.abs(est - kl) < 4 * se), (est, kl, se)


# ---------------------------------------------------------------------------------------------
# Inside the MCVAE ELBO
# ---------------------------------------------------------------------------------------------
@contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(seed=0):
    """Small MCVAE with a non-trivial prior (non-zero mean, strong coupling in the precision)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = pyro_mcvae.MCVAE.build([2, 2, 2], latent_dim=2, hidden=(16,))
    with torch.no_grad():
        model.prior.loc.normal_(0.0, 0.5)
        model.prior.offdiag.normal_(0.0, 1.0)
        model.prior.raw_diag.uniform_(-0.5, 1.0)
    xs = torch.randn(6, 3, 2)
    return model, xs


def model_kl_sum_numpy(model, xs):
    """sum_n KL(q(z | x_n) || p(z)) from the posterior / prior matrices, closed form in numpy."""
    with torch.no_grad():
        q = model.guide.posterior(list(xs.unbind(1)))  # posterior takes the list form
        p = model.prior()
        mu_q = q.loc.double().numpy()
        s_q = q.covariance_matrix.double().numpy()
        mu_p = p.loc.double().numpy()
        s_p = np.linalg.inv(p.precision_matrix.double().numpy())  # the prior is a precision GMRF
    assert mu_q.shape == (xs.shape[0], 6) and mu_p.shape == (6,)
    return sum(np_kl(mu_q[i], s_q[i], mu_p, s_p) for i in range(mu_q.shape[0]))


def elbo_loss(elbo_cls, model, xs, beta, seed, num_particles):
    pyro.set_rng_seed(seed)
    elbo = elbo_cls(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    return float(elbo.loss(model.model, model.guide, xs, beta=beta))


def test_meanfield_kl_is_the_closed_form():
    """With one particle both losses use the same z (same seed); their difference is
    log q(z) - log p(z) - KL, whose mean over many z is zero."""
    with default_dtype(torch.float64):
        model, xs = build_model()
        kl_sum = model_kl_sum_numpy(model, xs)
        assert kl_sum > 1.0  # the prior is far from the posterior: the check is not vacuous
        n_seeds, particles = 8, 2000
        diffs = []
        for seed in range(n_seeds):
            tr = elbo_loss(TraceELBO, model, xs, 1.0, seed, particles)
            mf = elbo_loss(MeanFieldELBO, model, xs, 1.0, seed, particles)
            diffs.append(tr - mf)
        diffs = np.array(diffs)
        assert diffs.std() > 0  # Trace_ELBO really estimates the KL by sampling
        se = diffs.std(ddof=1) / np.sqrt(n_seeds)
        assert abs(diffs.mean()) < 4 * se + 1e-9, (diffs.mean(), se)
        # and the Monte Carlo noise is small compared with the KL being tested
        assert se < 0.05 * kl_sum


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-8), (torch.float32, 2e-4)])
def test_beta_scales_the_kl(dtype, rtol):
    """loss(beta) = reconstruction + beta * KL_sum; beta = 0 leaves the reconstruction only."""
    with default_dtype(dtype):
        model, xs = build_model(seed=3)
        kl_sum = model_kl_sum_numpy(model, xs)
        seed = 17
        losses = {
            b: elbo_loss(MeanFieldELBO, model, xs, b, seed, num_particles=4)
            for b in (0.0, 0.5, 1.0, 2.0)
        }
        scale = abs(losses[1.0]) + kl_sum
        np.testing.assert_allclose(losses[1.0] - losses[0.5], 0.5 * kl_sum, rtol=0, atol=rtol * scale)
        for b in (0.5, 1.0, 2.0):
            np.testing.assert_allclose(losses[b], losses[0.0] + b * kl_sum, rtol=0, atol=rtol * scale)
        # Trace_ELBO with beta = 0 ignores the latent site too: same reconstruction term
        tr0 = elbo_loss(TraceELBO, model, xs, 0.0, seed, num_particles=4)
        np.testing.assert_allclose(tr0, losses[0.0], rtol=0, atol=rtol * scale)


def test_posterior_accepts_the_tensor_form():
    pyro.set_rng_seed(0)
    model = pyro_mcvae.MCVAE.build([2, 2, 2], latent_dim=2, hidden=(8,))
    xs = torch.randn(3, 3, 2)  # batch == M: no shape error, a silently different answer
    torch.testing.assert_close(
        model.guide.posterior(xs).loc, model.guide.posterior(list(xs.unbind(1))).loc
    )


# ---------------------------------------------------------------------------------------------
# The KL of a block-assembled posterior (from its distinct entries) and a precision prior's factors
# ---------------------------------------------------------------------------------------------
def dense_kl(loc_q, cov_q, loc_p, prec_p):
    """KL(N(loc_q, cov_q) || N(loc_p, prec_p^-1)) from dense matrices (torch float64, autograd)."""
    k = loc_q.shape[-1]
    diff = (loc_p - loc_q).unsqueeze(-1)
    trace = torch.linalg.solve(torch.linalg.inv(prec_p), cov_q).diagonal(dim1=-2, dim2=-1).sum(-1)
    maha = (diff.transpose(-1, -2) @ prec_p @ diff)[..., 0, 0]
    return 0.5 * (trace + maha - k - torch.linalg.slogdet(prec_p)[1] - torch.linalg.slogdet(cov_q)[1])


@pytest.mark.parametrize("m,d,c,mode", [(4, 2, 2, "blockwise"), (3, 3, 2, "blockwise"), (4, 16, 16, "blockwise"),
                                        (3, 2, 2, "elementwise")])
def test_kl_of_assembled_posterior_and_its_gradients_match_dense_float64(m, d, c, mode):
    """q = GMRF.from_blocks (covariance) against a prior from_blocks (precision), in float32: the KL
    reads tr(Q_p S_q) from q's distinct entries. Value and gradients (all blocks, both means)
    equal a dense float64 KL of the same matrices."""
    rng = np.random.default_rng(m * 100 + d)
    batch = 5
    leaves = {
        "loc_q": rng.standard_normal((batch, m, d)), "var_q": rng.uniform(0.2, 2.0, (batch, m, d)),
        "off_q": rng.standard_normal((batch, m, m, c, c)), "loc_p": rng.standard_normal((m, d)),
        "var_p": rng.uniform(0.5, 2.0, (m, d)), "off_p": rng.standard_normal((m, m, c, c)),
    }

    def kl_and_grads(dtype, dense):
        t = {k: torch.as_tensor(v, dtype=dtype).requires_grad_(True) for k, v in leaves.items()}
        kw = dict(mode=mode, validate=False)
        if dense:
            cov_q = assemble_block_covariance(t["var_q"], t["off_q"], **kw)
            prec_p = assemble_block_covariance(t["var_p"], t["off_p"], eps=0.99, **kw)
            kl = dense_kl(t["loc_q"].flatten(-2), cov_q, t["loc_p"].flatten(), prec_p)
        else:
            q = GMRF.from_blocks(t["loc_q"], t["var_q"], t["off_q"], **kw)
            p = GMRF.from_blocks(t["loc_p"], t["var_p"], t["off_p"], parameterization="precision", eps=0.99, **kw)
            assert "covariance" in q._packed
            kl = torch.distributions.kl_divergence(q, p.expand((batch,)))
        return kl, dict(zip(t, torch.autograd.grad(kl.sum(), list(t.values()))))

    kl, grads = kl_and_grads(torch.float32, dense=False)
    ref, ref_grads = kl_and_grads(torch.float64, dense=True)
    assert float(ref.detach().min()) > 1.0  # a KL far from zero: every term matters
    torch.testing.assert_close(kl.double(), ref, rtol=2e-6, atol=0)
    for name, g in grads.items():
        r = ref_grads[name]
        assert float((g.double() - r).abs().max() / r.abs().max()) < 2e-5, name


def test_precision_gmrf_forms_its_factors_on_first_use():
    """Given a precision Q = R R^T, the law's log-determinant comes from R alone (what the KL needs);
    the covariance's factor R^-T is formed only when asked, and equals torch's."""
    rng = np.random.default_rng(7)
    n, batch = 6, 4
    prec = torch.as_tensor(np.linalg.inv(kl_spd(rng, n)))
    loc = torch.as_tensor(rng.standard_normal(n))
    p = GMRF(loc, precision_matrix=prec, num_components=3)
    big = p.expand((batch,))
    np.testing.assert_allclose(float(big._log_det_covariance()), -np.linalg.slogdet(prec.numpy())[1], rtol=1e-12)
    assert "_tril" not in p.__dict__ and "_tril" not in big.__dict__
    torch_law = torch.distributions.MultivariateNormal(loc, precision_matrix=prec)
    torch.testing.assert_close(p.scale_tril, torch_law.scale_tril, rtol=0, atol=0)
    z = torch.as_tensor(rng.standard_normal((3, n)))
    torch.testing.assert_close(big.log_prob(z[:, None].expand(3, batch, n)), torch_law.log_prob(z)[:, None].expand(3, batch))
    assert "_tril" in big.__dict__ and "_tril" in p.expand((2,)).__dict__  # formed once, kept by expand
