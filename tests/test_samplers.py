"""Post-hoc latent samplers: the EM of the Gaussian mixture, and fitting / generating for every model."""

import numpy as np
import pytest
import torch
import torch.distributions as D

from pyro_mcvae.infer import seed_everything
from pyro_mcvae.models import build_model, get_method
from pyro_mcvae.samplers import GaussianMixture, LatentSampler, fit_latent_sampler

MODELS = ["gmrf", "almrf", "diagonal", "mvae", "mmvae", "mopoe", "mmvaeplus"]

WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
COVS = torch.stack([
    torch.tensor([[1.0, 0.5], [0.5, 1.0]]),
    torch.tensor([[0.5, 0.0], [0.0, 2.0]]),
    torch.tensor([[1.5, -0.6], [-0.6, 0.8]]),
]).to(torch.float64)


def three_blobs(n=3000, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(COVS)
    return MEANS[labels] + (chol[labels] @ eps.unsqueeze(-1)).squeeze(-1)


def matched(gm):
    """The fitted components reordered to the true ones (nearest mean)."""
    order = torch.cdist(MEANS, gm.means).argmin(-1)
    assert sorted(order.tolist()) == [0, 1, 2]
    return gm.weights[order], gm.means[order], gm.covariances[order]


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_recovers_three_separated_gaussians(covariance):
    x = three_blobs()
    gm = GaussianMixture(3, covariance=covariance, seed=0, tol=1e-8, max_iter=200).fit(x)
    assert gm.converged and 1 <= gm.n_iter <= 200
    weights, means, covs = matched(gm)
    assert torch.allclose(weights, WEIGHTS, atol=0.03)
    assert torch.allclose(means, MEANS, atol=0.15)
    if covariance == "full":
        assert torch.allclose(covs, COVS, rtol=0.12, atol=0.05)
        mix = D.MixtureSameFamily(D.Categorical(gm.weights), D.MultivariateNormal(gm.means, gm.covariances))
    else:
        assert torch.allclose(covs, COVS.diagonal(dim1=-2, dim2=-1), rtol=0.12, atol=0.05)
        mix = D.MixtureSameFamily(D.Categorical(gm.weights), D.Independent(D.Normal(gm.means, gm.covariances.sqrt()), 1))
    probe = torch.cat([x[:50], torch.randn(20, 2, dtype=torch.float64) * 8])
    assert torch.allclose(gm.log_prob(probe), mix.log_prob(probe), rtol=1e-10, atol=1e-10)
    assert gm.lower_bound == pytest.approx(float(mix.log_prob(x).mean()), rel=1e-10)
    # seeded: the same fit and the same draws; another draw stream differs
    again = GaussianMixture(3, covariance=covariance, seed=0, tol=1e-8, max_iter=200).fit(x)
    assert torch.equal(again.means, gm.means) and torch.equal(again.covariances, gm.covariances)
    assert torch.equal(again.sample(100), gm.sample(100))
    assert not torch.equal(gm.sample(100), gm.sample(100))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(gm.sample(7, generator=g1), gm.sample(7, generator=g2))


def test_samples_follow_the_fitted_mixture():
    gm = GaussianMixture(3, seed=0, tol=1e-8).fit(three_blobs())
    draws = gm.sample(20000)
    assert draws.dtype == torch.float64 and draws.shape == (20000, 2)
    mix_mean = (gm.weights[:, None] * gm.means).sum(0)
    assert torch.allclose(draws.mean(0), mix_mean, atol=0.15)


def test_one_component_is_the_sample_mean_and_biased_covariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    reg = 1e-3
    gm = GaussianMixture(1, covariance="full", reg=reg, seed=3).fit(x)
    centred = x - x.mean(0)
    assert torch.allclose(gm.weights, torch.ones(1, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(gm.means[0], x.mean(0), rtol=0, atol=1e-12)
    expected = centred.T @ centred / x.shape[0] + reg * torch.eye(4, dtype=torch.float64)
    assert torch.allclose(gm.covariances[0], expected, rtol=0, atol=1e-12)
    assert gm.converged
    exact = D.MultivariateNormal(x.mean(0), expected).log_prob(x)
    assert torch.allclose(gm.log_prob(x), exact, rtol=0, atol=1e-10)


def test_float32_data_keeps_its_dtype():
    x = three_blobs(300).float()
    gm = GaussianMixture(2, seed=0).fit(x)
    assert gm.sample(5).dtype == torch.float32 and gm.log_prob(x[:5]).dtype == torch.float32


def tiny_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, generator=g) for _ in range(3)]


@pytest.mark.parametrize("name", MODELS)
def test_fit_and_generate_for_every_model(name):
    torch.manual_seed(0)
    model = build_model(name, [3, 3, 3], **{get_method(name).latent_field: 2})
    data = tiny_data()
    expected_latent = model.guide.reconstruction_latent(data).shape[-1]
    sampler = fit_latent_sampler(model, data, num_components=3, batch_size=16, seed=0)
    assert isinstance(sampler, LatentSampler)
    assert sampler.mixture.means.shape == (3, expected_latent)
    z = sampler.sample(11)
    assert z.shape == (11, expected_latent) and z.dtype == torch.float32
    out = sampler.generate(11)
    assert len(out) == 3 and all(x.shape == (11, 3) for x in out)
    prior_out = model.sample(11)
    assert [x.shape for x in out] == [x.shape for x in prior_out]
    # the same seed gives identical latents and decodings (fresh samplers: each keeps its stream)
    def fresh():
        return fit_latent_sampler(model, data, num_components=3, batch_size=16, seed=0)
    assert torch.equal(fresh().sample(11), fresh().sample(11))
    assert all(torch.equal(a, b) for a, b in zip(fresh().generate(5), fresh().generate(5)))
    assert torch.equal(fit_latent_sampler(model, data, num_components=3, batch_size=7, seed=0).sample(4),
                       fresh().sample(4))  # the batching does not change the encodings
    # posterior draws instead of means: seeded too, and the global RNG stream untouched
    state = torch.get_rng_state()
    drawn = fit_latent_sampler(model, data, num_components=2, use_mean=False, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(drawn.sample(6), fit_latent_sampler(model, data, num_components=2, use_mean=False,
                                                           seed=4).sample(6))
    assert model.training  # eval mode only while encoding


def test_bad_input_is_refused():
    x = three_blobs(20)
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture(0)
    with pytest.raises(ValueError, match="covariance"):
        GaussianMixture(2, covariance="tied")
    with pytest.raises(ValueError, match="exceeds the number of data points"):
        GaussianMixture(21).fit(x)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        GaussianMixture(2).fit(x[:, 0])
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixture(2).sample(3)
    with pytest.raises(ValueError, match="positive integer"):
        GaussianMixture(2).fit(x).sample(0)
    model = build_model("gmrf", [3, 3, 3], block_dim=2)
    with pytest.raises(ValueError, match="exceeds the number of data points"):
        fit_latent_sampler(model, tiny_data(5), num_components=6)
    nan_data = tiny_data(10)
    nan_data[1][2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_latent_sampler(model, nan_data, num_components=2)
    with pytest.raises(ValueError, match="num_components"):
        fit_latent_sampler(model, tiny_data(10), num_components=0)


def test_latent_sampler_scores_are_the_copula_metrics_of_the_fitted_samplers():
    """``evaluate.latent_sampler_scores`` scores, for each mixture size and protocol, exactly the
    tuples that ``fit_latent_sampler(...).generate`` draws with the same seed."""
    from pyro_mcvae.evaluate import _stack, latent_sampler_scores
    from pyro_mcvae.metrics import copula_metrics

    seed_everything(0)
    model = build_model("gmrf", [2, 2, 2], hidden=(8,), block_dim=2)
    train, test = torch.randn(300, 3, 2), np.random.default_rng(0).normal(size=(50, 3, 2))
    scores = latent_sampler_scores(model, train, test, (1, 3), seed=7)
    assert set(scores) == {1, 3} and set(scores[3]) == {"sample", "mean"}
    for c in (1, 3):  # the decoder means (protocol "mean", the second: seed + 1) are reproduced exactly
        sampler = fit_latent_sampler(model, train, num_components=c, seed=7)
        parts = sampler.generate(50, False, torch.Generator().manual_seed(8))
        assert scores[c]["mean"] == copula_metrics(_stack(parts), test)
        assert scores[c]["sample"]["joint_w1_mean"] != scores[c]["mean"]["joint_w1_mean"]


# -- the anchored mixture: one block from its own mixture, the rest from the prior's conditional --
def _random_gmrf(m=3, d=2, seed=0):
    from pyro_mcvae.distributions import GMRF
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m * d, m * d, generator=g, dtype=torch.float64)
    cov = a @ a.T / (m * d) + 0.3 * torch.eye(m * d, dtype=torch.float64)
    loc = torch.randn(m * d, generator=g, dtype=torch.float64)
    return GMRF(loc, covariance_matrix=cov, num_components=m, component_dim=d)


def _fixed_mixture(weights, means, covs):
    gm = GaussianMixture(len(weights))
    gm.weights, gm.means, gm.covariances = (torch.as_tensor(np.asarray(t), dtype=torch.float64)
                                             for t in (weights, means, covs))
    gm.dtype, gm._generator = torch.float64, torch.Generator().manual_seed(0)
    return gm


def _anchored_moments(prior, k, mean_k, cov_k):
    """Dense float64 mean and covariance of ``z_k ~ N(mean_k, cov_k)``, ``z_-k ~ p(z_-k | z_k)``."""
    d, m = prior.component_dim, prior.num_components
    cov, loc = prior.covariance_matrix.numpy(), prior.loc.numpy()
    a = np.arange(k * d, (k + 1) * d)
    b = np.setdiff1d(np.arange(m * d), a)
    gain = np.linalg.solve(cov[np.ix_(a, a)], cov[np.ix_(a, b)])  # S_aa^-1 S_ab
    schur = cov[np.ix_(b, b)] - cov[np.ix_(b, a)] @ gain
    mean = np.empty(m * d)
    mean[a], mean[b] = mean_k, loc[b] + (mean_k - loc[a]) @ gain
    out = np.empty((m * d, m * d))
    out[np.ix_(a, a)], out[np.ix_(a, b)] = cov_k, cov_k @ gain
    out[np.ix_(b, a)], out[np.ix_(b, b)] = (cov_k @ gain).T, schur + gain.T @ cov_k @ gain
    return mean, out


def test_anchored_mixture_density_is_the_mixture_of_its_gaussian_laws_dense_float64():
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal
    from pyro_mcvae.samplers import AnchoredMixture
    prior = _random_gmrf()
    g = torch.Generator().manual_seed(1)
    mixtures, laws = {}, []
    for k in (0, 2):  # two anchors, two mixture components each
        means = torch.randn(2, 2, generator=g, dtype=torch.float64) * 2
        covs = torch.stack([torch.tensor([[0.5, 0.1], [0.1, 0.3]]), torch.tensor([[1.2, -0.4], [-0.4, 0.7]])]).double()
        weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
        mixtures[k] = _fixed_mixture(weights, means, covs)
        laws += [(w / 2, *_anchored_moments(prior, k, mu.numpy(), c.numpy())) for w, mu, c in zip(weights, means, covs)]
    law = AnchoredMixture(prior, mixtures, dtype=torch.float64)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64) * 2
    expected = logsumexp([np.log(float(w)) + multivariate_normal(mu, c).logpdf(z.numpy()) for w, mu, c in laws], axis=0)
    np.testing.assert_allclose(law.log_prob(z).numpy(), expected, rtol=0, atol=1e-10)


def test_anchored_mixture_with_the_prior_marginal_as_mixture_is_the_prior():
    from pyro_mcvae.samplers import AnchoredMixture
    prior = _random_gmrf(m=4, d=3, seed=3)
    marg = {k: prior.marginal([k]) for k in range(4)}
    mixtures = {k: _fixed_mixture([1.0], marg[k].loc[None], marg[k].covariance_matrix[None]) for k in range(4)}
    z = prior.sample((40,))
    law = AnchoredMixture(prior, mixtures, dtype=torch.float64)
    torch.testing.assert_close(law.log_prob(z), prior.log_prob(z), rtol=0, atol=1e-10)


def test_anchored_mixture_draws_have_the_closed_form_moments():
    """One anchor, one Gaussian: the law is Gaussian with the dense moments; the sample mean within
    4 standard errors per coordinate, the sample covariance within 4 of its standard errors."""
    from pyro_mcvae.samplers import AnchoredMixture
    prior = _random_gmrf(seed=5)
    mean_k, cov_k = np.array([1.0, -2.0]), np.array([[0.4, 0.15], [0.15, 0.9]])
    law = AnchoredMixture(prior, {1: _fixed_mixture([1.0], mean_k[None], cov_k[None])}, dtype=torch.float64)
    n = 100_000
    z = law.sample(n, generator=torch.Generator().manual_seed(0)).numpy()
    mean, cov = _anchored_moments(prior, 1, mean_k, cov_k)
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(z.mean(0) - mean) < 4 * se), (z.mean(0) - mean) / se
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    assert np.all(np.abs(np.cov(z.T) - cov) < 4 * cov_se), (np.cov(z.T) - cov) / cov_se
    # a uniform anchor: each anchor's share of the draws is 1/2 (its block then sits on its mixture)
    two = AnchoredMixture(prior, {0: _fixed_mixture([1.0], [[50.0, 50.0]], [np.eye(2) * 1e-4]),
                                  2: _fixed_mixture([1.0], mean_k[None], cov_k[None])}, dtype=torch.float64)
    share = float((two.sample(20_000, generator=torch.Generator().manual_seed(1))[:, 0] > 40).double().mean())
    assert abs(share - 0.5) < 4 * (0.25 / 20_000) ** 0.5


@pytest.mark.parametrize("name", ["gmrf", "diagonal"])
def test_fit_anchored_sampler_for_block_models_seeded(name):
    from pyro_mcvae.samplers import AnchoredMixture, fit_anchored_sampler
    torch.manual_seed(0)
    model = build_model(name, [3, 3, 3], block_dim=2)
    data = tiny_data()
    sampler = fit_anchored_sampler(model, data, num_components=2, seed=0)
    assert isinstance(sampler.mixture, AnchoredMixture) and sampler.mixture.anchors == [0, 1, 2]
    z = sampler.sample(9)
    assert z.shape == (9, 6) and z.dtype == torch.float32 and torch.isfinite(sampler.log_prob(z)).all()
    assert [x.shape for x in sampler.generate(5)] == [(5, 3)] * 3
    fresh = fit_anchored_sampler(model, data, num_components=2, seed=0)
    assert torch.equal(fresh.sample(9), z)
    # each anchor's block is fitted to that block's encodings
    enc = model.guide.reconstruction_latent(data).detach()
    only = fit_anchored_sampler(model, data, num_components=1, anchors=[1])
    torch.testing.assert_close(only.mixture.mixtures[1].means[0].float(), enc[:, 2:4].mean(0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, message", [("mvae", "needs a block-latent model"),
                                           ("almrf", "conditions the prior in closed form")])
def test_fit_anchored_sampler_refuses_models_it_cannot_condition(name, message):
    from pyro_mcvae.samplers import fit_anchored_sampler
    model = build_model(name, [3, 3, 3], **{get_method(name).latent_field: 2})
    with pytest.raises(ValueError, match=message):
        fit_anchored_sampler(model, tiny_data(), num_components=2)


def test_anchored_mixture_fitted_weights_recover_the_weights_of_its_own_draws():
    """Draws from an anchored law with weights (0.8, 0.2): maximum likelihood gives them back within
    4 binomial standard errors; log_prob with fitted weights is the weighted dense mixture."""
    from pyro_mcvae.samplers import AnchoredMixture
    prior = _random_gmrf(seed=7)
    mixtures = {0: _fixed_mixture([0.5, 0.5], [[3.0, 0.0], [-3.0, 1.0]], [np.eye(2) * 0.3] * 2),
                2: _fixed_mixture([1.0], [[0.0, 4.0]], [np.eye(2) * 0.5])}
    truth = AnchoredMixture(prior, mixtures, dtype=torch.float64)
    truth.weights = torch.tensor([0.8, 0.2], dtype=torch.float64)
    n = 20_000
    z = truth.sample(n, generator=torch.Generator().manual_seed(3))
    fitted = AnchoredMixture(prior, mixtures, dtype=torch.float64).fit_weights(z)
    assert abs(float(fitted.weights[0]) - 0.8) < 4 * (0.16 / n) ** 0.5, fitted.weights
    uniform = AnchoredMixture(prior, mixtures, dtype=torch.float64)
    assert float(fitted.log_prob(z).mean()) > float(uniform.log_prob(z).mean())
    terms = uniform._anchor_log_probs(z[:20])
    torch.testing.assert_close(fitted.log_prob(z[:20]), torch.logsumexp(terms + fitted.weights.log(), -1))
