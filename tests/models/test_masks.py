"""Absent components: the prior-conditional completion of block posteriors, and masks in every model."""

import math

import numpy as np
import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro_mcvae.infer.objectives import MeanFieldELBO, TraceELBO
from scipy.stats import multivariate_normal

from helpers import SEEDS, numpy_kl, private, random_spd
from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.distributions import GMRF, complete_from_prior
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.models import build_model, method_names


def block_diagonal_in(cov, keep):
    """Zero the entries of ``cov`` between coordinates with different ``keep`` flags."""
    return cov * (keep[:, None] == keep[None, :])


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, m=st.integers(2, 4), d=st.integers(1, 3), diagonal_prior=st.booleans())
def test_completion_keeps_the_marginal_elbo_terms(seed, m, d, diagonal_prior):
    rng = np.random.default_rng(seed)
    n = m * d
    batch = 3
    present = rng.random((batch, m)) < 0.6
    present[np.arange(batch), rng.integers(0, m, batch)] = True
    if diagonal_prior:
        mu_p, cov_p = rng.standard_normal(n), np.diag(rng.uniform(0.3, 2.0, n))
        t = torch.as_tensor
        prior = pyro.distributions.Normal(t(mu_p), t(np.sqrt(np.diag(cov_p)))).to_event(1)
    else:
        mu_p, cov_p = rng.standard_normal(n), random_spd(rng, n)
        prior = GMRF(torch.as_tensor(mu_p), precision_matrix=torch.as_tensor(np.linalg.inv(cov_p)),
                     num_components=m, component_dim=d)
    mu_q = rng.standard_normal((batch, n))
    keep = np.repeat(present, d, axis=-1)
    cov_q = np.stack([block_diagonal_in(random_spd(rng, n), keep[b]) for b in range(batch)])
    q = complete_from_prior(torch.as_tensor(mu_q), torch.as_tensor(cov_q), torch.as_tensor(present),
                            prior, d)
    kl = torch.distributions.kl_divergence(q, prior).numpy()
    z = q.sample((5,)).numpy()  # (5, batch, n)
    log_ratio = (q.log_prob(torch.as_tensor(z)) - prior.log_prob(torch.as_tensor(z))).numpy()
    for b in range(batch):
        a = keep[b]
        qa = (mu_q[b, a], cov_q[b][np.ix_(a, a)])
        pa = (mu_p[a], cov_p[np.ix_(a, a)])
        np.testing.assert_allclose(kl[b], numpy_kl(*qa, *pa), rtol=1e-7, atol=1e-8)
        want = multivariate_normal(*qa).logpdf(z[:, b, a]) - multivariate_normal(*pa).logpdf(z[:, b, a])
        np.testing.assert_allclose(log_ratio[:, b], want, rtol=1e-7, atol=1e-7)


def test_completion_rejects_bad_input():
    prior = GMRF(torch.zeros(4), covariance_matrix=torch.eye(4), num_components=2)
    with pytest.raises(ValueError, match="True in every row"):
        complete_from_prior(torch.zeros(1, 4), torch.eye(4).expand(1, 4, 4),
                            torch.zeros(1, 2, dtype=torch.bool), prior, 2)
    with pytest.raises(ValueError, match="M\\*d = 4"):
        complete_from_prior(torch.zeros(1, 6), torch.eye(6).expand(1, 6, 6),
                            torch.ones(1, 2, dtype=torch.bool), prior, 2)
    with pytest.raises(ValueError, match="Gaussian"):
        complete_from_prior(torch.zeros(1, 4), torch.eye(4).expand(1, 4, 4),
                            torch.tensor([[True, False]]), pyro.distributions.Laplace(0.0, 1.0), 2)


def gmrf_model():
    seed_everything(0)
    model = MCVAE.build([2, 2, 2], latent_dim=2, hidden=(16,)).double()
    with torch.no_grad():  # a prior and a posterior with real correlations
        model.prior.offdiag.normal_(0, 1.0)
        model.guide.global_net.net[-1].weight.normal_(0, 0.5)
    return model, [torch.rand(5, 2, dtype=torch.float64) for _ in range(3)]


def test_gmrf_training_kl_is_the_kl_of_the_present_marginals():
    model, xs = gmrf_model()
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True]] + [[True, False, False]] * 2)

    def loss(beta):
        pyro.set_rng_seed(3)
        return MeanFieldELBO().loss(model.model, model.guide, xs, beta=beta, mask=mask)

    kl = (loss(1.0) - loss(0.5)) / 0.5
    # Independent assembly of q(z_A | x_A): encoders, global network on zeroed absent inputs,
    # no blocks to absent components; then the numpy KL against the prior's A-marginal.
    with torch.no_grad():
        zeroed = [torch.where(mask[:, k, None], x, 0.0) for k, x in enumerate(xs)]
        loc, var = model.guide.encoder(zeroed)
        pair = (mask[:, :, None] & mask[:, None, :])[..., None, None]
        off = model.guide.global_net(zeroed) * pair
        cov = assemble_block_covariance(var, off, eps=model.guide.eps).numpy()
        prior = model.prior()
        mu_p, cov_p = prior.loc.numpy(), prior.covariance_matrix.numpy()
    want = 0.0
    for b in range(5):
        a = np.repeat(mask[b].numpy(), 2)
        want += numpy_kl(loc[b].flatten().numpy()[a], cov[b][np.ix_(a, a)], mu_p[a], cov_p[np.ix_(a, a)])
    assert kl == pytest.approx(want, rel=1e-6)


def test_gmrf_guide_with_every_component_present_is_the_unmasked_guide():
    model, xs = gmrf_model()
    full = model.guide._posterior(xs)
    masked = model.guide._posterior(xs, torch.ones(5, 3, dtype=torch.bool))
    torch.testing.assert_close(masked.covariance_matrix, full.covariance_matrix)
    torch.testing.assert_close(masked.loc, full.loc)


@pytest.mark.parametrize("guide", ["gmrf", "diagonal", "mvae", "mmvae", "mopoe", "mmvaeplus"])
def test_absent_data_do_not_enter_the_loss_and_absence_changes_it(guide):
    seed_everything(0)
    model = MCVAE.build([2, 2, 2], 2, hidden=(16,), guide=guide, **private(guide)).double()
    xs = [torch.rand(6, 2, dtype=torch.float64) for _ in range(3)]
    changed = [xs[0], xs[1] + 5.0, xs[2]]
    mask = torch.tensor([[True, False, True], [False, False, True]] * 3)
    mask[:, 1] = False

    def loss(data, m):
        pyro.set_rng_seed(2)
        return TraceELBO().loss(model.model, model.guide, data, mask=m)

    assert loss(xs, mask) == pytest.approx(loss(changed, mask), rel=1e-9)
    assert loss(xs, None) != pytest.approx(loss(changed, None), rel=1e-3)
    assert loss(xs, mask) != pytest.approx(loss(xs, None), rel=1e-3)


@pytest.mark.parametrize("guide", ["gmrf", "mmvaeplus"])
def test_training_with_missing_components_lowers_the_loss(guide, copula_tensor):
    seed_everything(0)
    model = MCVAE.build([2] * 4, 2, hidden=(16, 16), guide=guide, **private(guide))
    mask = torch.rand(copula_tensor.shape[:2], generator=torch.Generator().manual_seed(0)) > 0.3
    mask[:, 0] = True
    elbo = "meanfield" if guide == "gmrf" else "dreg"
    config = TrainConfig(epochs=4, batch_size=128, lr=3e-3, elbo=elbo, num_particles=2)
    result = fit(model, copula_tensor, config, progress=False, mask=mask)
    assert result.losses[-1] < result.losses[0] - 1.0, result.losses


class Quadratic(torch.nn.Module):
    """The energy ``1/2 z^T Q(theta) z`` with ``Q(theta) = Q0 + theta D``: the law N(0, Q^-1)."""

    def __init__(self, q0, direction):
        super().__init__()
        self.q0, self.direction = q0, direction
        self.theta = torch.nn.Parameter(torch.zeros((), dtype=q0.dtype))

    def precision(self):
        return self.q0 + self.theta * self.direction

    def forward(self, z):
        return 0.5 * ((z @ self.precision()) * z).sum(-1)


def quadratic_prior(seed=0):
    """An NN-MRF prior over three 1-d blocks whose energy is quadratic with coupled blocks of
    different scales (standard deviations 1, 0.3 and 3), so its conditionals are known."""
    from pyro_mcvae.models.nnmrf import NeuralMRFPrior

    seed_everything(seed)
    corr = torch.tensor([[1.0, 0.8, 0.5], [0.8, 1.0, 0.3], [0.5, 0.3, 1.0]], dtype=torch.float64)
    sd = torch.tensor([1.0, 0.3, 3.0], dtype=torch.float64)
    cov = sd[:, None] * corr * sd[None, :]
    direction = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    prior = NeuralMRFPrior(3, 1, hidden=(4,)).double()
    prior.energy = Quadratic(torch.linalg.inv(cov), direction)
    return prior, cov


PATTERNS = torch.tensor([[True, False, True], [True, False, False], [False, True, True], [True, True, True]])


def test_nnmrf_completion_draws_the_gaussian_conditional_row_by_row():
    """NeuralMRFPrior.complete on rows missing different blocks, in one run: the completed blocks
    given the present ones follow N(S_BA S_AA^-1 z_A, S_BB - S_BA S_AA^-1 S_AB); whitened
    residuals have mean 0 and variance 1 within 4 standard errors per pattern (1000 rows each),
    present blocks and complete rows are returned unchanged."""
    prior, cov = quadratic_prior()
    n = 1000
    present = PATTERNS.repeat(n, 1)
    z = torch.randn(len(present), 3, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    out = prior.complete(z, present)
    assert torch.equal(out[present], z[present])
    for a in PATTERNS[:3]:
        b, rows = ~a, (present == a).all(-1)
        gain = cov[b][:, a] @ torch.linalg.inv(cov[a][:, a])
        cond = cov[b][:, b] - gain @ cov[a][:, b]
        white = (out[rows][:, b] - z[rows][:, a] @ gain.T) @ torch.linalg.inv(torch.linalg.cholesky(cond)).T
        assert abs(float(white.mean())) < 4 / math.sqrt(white.numel()), (a, float(white.mean()))
        assert abs(float(white.var(0).mean()) - 1) < 4 * math.sqrt(2 / n), (a, float(white.var(0).mean()))


def test_nnmrf_masked_elbo_gradient_is_unbiased():
    """The NN-MRF's completion of absent blocks scores log q_A(z_A) alone and draws z_B from the
    prior's conditional; the gradient of the surrogate -E(z) - log q(z) is then unbiased for the
    true masked ELBO term E_q[log p(z_A) - log q(z_A)] (closed form here: p is N(0, Q^-1)), in the
    posterior's mean and in a prior parameter theta (with grad log Z = -1/2 tr(Q^-1 D) added,
    which the model's chain samples estimate in training). 1500 rows per pattern, 4 standard
    errors. Drawing z_B from anything but the conditional (e.g. N(0, I)) fails it."""
    from pyro_mcvae.distributions import SampledCompletion

    prior, _ = quadratic_prior(1)
    energy = prior.energy
    n, patterns = 1500, PATTERNS[:3]
    present = patterns.repeat_interleave(n, 0)  # (3n, 3)
    mean = torch.tensor([[0.5, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.2, 2.0]], dtype=torch.float64,
                        requires_grad=True)  # one posterior mean per pattern (absent entries unused)
    sd = torch.tensor([0.6, 0.2, 1.5], dtype=torch.float64)
    a = present.to(torch.float64)
    loc = mean.repeat_interleave(n, 0) * a
    scale = torch.diag_embed(torch.where(present, sd, torch.ones_like(sd)))
    law = SampledCompletion(GMRF(loc, scale_tril=scale, num_components=3), present, prior.complete, 1)
    z = law.rsample()
    surrogate = -energy(z) - law.log_prob(z)  # (3n,)
    grads_theta = -0.5 * ((z @ energy.direction) * z).sum(-1).detach()  # d(-E)/dtheta per row
    grad_mean = torch.autograd.grad(surrogate.sum(), mean)[0]
    # Per-row path gradients in the mean: -(Q z)_A (the log q term's gradient is 0 exactly).
    rows_mean = -(z.detach() @ energy.precision().detach()) * a
    sigma = torch.linalg.inv(energy.precision().detach())
    for p, flags in enumerate(patterns):
        rows = slice(p * n, (p + 1) * n)
        torch.testing.assert_close(grad_mean[p], rows_mean[rows].sum(0))  # autograd = the formula
        m_a, s_a = mean[p, flags].detach(), torch.diag(sd[flags] ** 2)

        def elbo_term(theta, m_a=m_a, s_a=s_a, flags=flags):
            cov_a = torch.linalg.inv(energy.q0 + theta * energy.direction)[flags][:, flags]
            q_a = torch.distributions.MultivariateNormal(m_a, s_a)
            p_a = torch.distributions.MultivariateNormal(torch.zeros_like(m_a), cov_a)
            return -torch.distributions.kl_divergence(q_a, p_a)

        theta = torch.zeros((), dtype=torch.float64, requires_grad=True)
        want_theta = torch.autograd.grad(elbo_term(theta), theta)[0]
        got_theta = grads_theta[rows] + 0.5 * torch.trace(sigma @ energy.direction)  # - grad log Z
        want_mean = -torch.linalg.solve(sigma[flags][:, flags], m_a)
        got_mean = rows_mean[rows][:, flags]
        for got, want in ((got_theta[:, None], want_theta[None]), (got_mean, want_mean)):
            se = got.std(0) / math.sqrt(n)
            assert bool(((got.mean(0) - want).abs() < 4 * se).all()), (flags, got.mean(0), want, se)



def test_nnmrf_guide_completes_absent_components_with_the_prior_sampler():
    """The NN-MRF guide with absent components gives a SampledCompletion whose padded law meets
    its precondition (absent blocks N(0, I), uncoupled from the present ones) and whose draws
    keep the encoders' present blocks; importance-weighted objectives refuse it in one line."""
    from pyro_mcvae.distributions import SampledCompletion
    from pyro_mcvae.infer.objectives import make_objective

    seed_everything(0)
    model = build_model("nnmrf", [2, 3, 2], hidden=(8,), hmc_warmup=5, completion_warmup=10)
    xs = [torch.rand(5, d) for d in (2, 3, 2)]
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True], [True, True, False],
                         [False, False, True]])
    q = model.guide._posterior(xs, mask)
    assert isinstance(q, SampledCompletion) and q.batch_shape == (5,)
    a = mask.repeat_interleave(2, -1)
    loc, cov = q.padded_law.loc, q.padded_law.covariance_matrix
    assert bool((loc[~a] == 0).all()) and bool((cov[a[:, :, None] != a[:, None, :]] == 0).all())
    for b in range(5):
        torch.testing.assert_close(cov[b][~a[b]][:, ~a[b]], torch.eye(int((~a[b]).sum())))
    torch.manual_seed(1)
    z = q.sample()
    torch.manual_seed(1)
    torch.testing.assert_close(z[a], q.padded_law.sample()[a])
    with pytest.raises(ValueError, match="elbo='trace'"):
        make_objective("iwae", 2).loss(model.model, model.guide, xs, mask=mask)
    with pytest.raises(ValueError, match="completion_warmup must be a non-negative integer, got -1"):
        build_model("nnmrf", [2, 3], completion_warmup=-1)

# Settings that keep each method's few steps fast (the NN-MRF's chains and completion warm up briefly).
QUICK = {"nnmrf": {"hmc_warmup": 10, "completion_warmup": 20}}


@pytest.mark.parametrize("method", method_names())
def test_every_registered_method_trains_with_missing_components(method):
    """About 30% of the components missing at random (rows miss different ones, each row keeps
    one): four training steps with the method's default objective give finite losses, the same
    losses to rounding when the absent entries hold garbage (large finite values) instead of
    data, and other losses when the garbage is not masked."""
    dims = [3, 4, 2]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(48, d, generator=gen) for d in dims]
    mask = torch.rand(48, 3, generator=gen) > 0.3
    mask[~mask.any(1), 0] = True
    assert 0.2 < 1 - mask.float().mean() < 0.35 and len(torch.unique(mask, dim=0)) >= 4
    garbage = [torch.where(mask[:, k, None], x, 1e3 * torch.randn(x.shape, generator=gen)) for k, x in enumerate(xs)]

    def losses(data, m):
        seed_everything(0)
        model = build_model(method, dims, hidden=(8,), **QUICK.get(method, {}), **private(method))
        return fit(model, data, TrainConfig(epochs=2, batch_size=24, lr=1e-3), progress=False, mask=m).losses

    clean = losses(xs, mask)
    assert all(math.isfinite(v) for v in clean), clean
    assert losses(garbage, mask) == pytest.approx(clean, rel=1e-6)
    assert losses(garbage, None)[0] != pytest.approx(clean[0], rel=1e-3)
