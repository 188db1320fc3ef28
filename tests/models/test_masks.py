"""Absent components: the prior-conditional completion of block posteriors, and masks in every model."""

import numpy as np
import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro_mcvae.infer.objectives import MeanFieldELBO, TraceELBO
from scipy.stats import multivariate_normal

from helpers import SEEDS, random_spd, private
from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.distributions import GMRF, complete_from_prior
from pyro_mcvae.infer import seed_everything


def numpy_kl(mu0, s0, mu1, s1):
    """KL(N(mu0, s0) || N(mu1, s1)), written out independently."""
    k = len(mu0)
    s1_inv = np.linalg.inv(s1)
    diff = mu1 - mu0
    return 0.5 * (np.trace(s1_inv @ s0) + diff @ s1_inv @ diff - k
                  + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1])


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
    prior = "diagonal" if guide == "diagonal" else "precision"
    model = MCVAE.build([2, 2, 2], 2, hidden=(16,), guide=guide, prior=prior, **private(guide)).double()
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
