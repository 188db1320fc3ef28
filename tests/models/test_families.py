"""Normal and Laplace posteriors and priors for the baselines; every objective trains every model."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SEEDS, private
from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.distributions import latent_law
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import SubsetELBO
from pyro_mcvae.models import StandardPrior


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, family=st.sampled_from(["normal", "laplace"]))
def test_latent_law_has_the_given_mean_and_standard_deviation(seed, family):
    rng = np.random.default_rng(seed)
    loc, std = rng.standard_normal(5), rng.uniform(0.1, 3.0, 5)
    law = latent_law(family, torch.as_tensor(loc), torch.as_tensor(std))
    np.testing.assert_allclose(law.mean.numpy(), loc)
    np.testing.assert_allclose(law.stddev.numpy(), std, rtol=1e-12)
    x = rng.standard_normal(5)
    if family == "laplace":  # density written out: exp(-|x - mu| / b) / (2 b), b = std / sqrt(2)
        b = std / math.sqrt(2)
        want = -np.abs(x - loc) / b - np.log(2 * b)
    else:
        want = -0.5 * ((x - loc) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(law.log_prob(torch.as_tensor(x)).numpy(), want, rtol=1e-10)


def test_bad_family_is_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        latent_law("student", torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match="family"):
        MCVAE.build([2, 2], 2, guide="mmvae", family="cauchy")
    with pytest.raises(ValueError, match=r"GMRFConfig has no field\(s\) \['family'\]"):
        MCVAE.build([2, 2], 2, guide="gmrf", family="laplace")


def test_standard_prior_has_unit_variance_in_both_families():
    for family in ("normal", "laplace"):
        law = StandardPrior(4, family)()
        assert law.event_shape == (4,)
        torch.testing.assert_close(law.variance, torch.ones(4))
        torch.testing.assert_close(law.mean, torch.zeros(4))


def test_laplace_product_of_experts_is_moment_matched():
    seed_everything(0)
    model = MCVAE.build([2, 2, 2], 3, hidden=(16,), guide="mvae", family="laplace").double()
    xs = [torch.rand(5, 2, dtype=torch.float64) for _ in range(3)]
    q = model.guide.posterior(xs)
    assert isinstance(q.base_dist, torch.distributions.Laplace)
    loc, var = (t.detach().numpy() for t in model.guide.encode(xs))
    prec = 1.0 + (1.0 / var).sum(1)  # unit-variance prior expert plus the experts' precisions
    np.testing.assert_allclose(q.mean.detach().numpy(), (loc / var).sum(1) / prec, rtol=1e-10)
    np.testing.assert_allclose(q.variance.detach().numpy(), 1.0 / prec, rtol=1e-10)


def test_subset_elbo_stacks_every_term_into_one_batch():
    calls = []

    class Recorder:
        def loss(self, model, guide, xs, *args, mask=None, **kwargs):
            calls.append((xs, mask))
            return 0.0

    subsets = torch.tensor([[True, True, True], [True, False, False], [False, False, True]])
    xs = [torch.arange(4.0).reshape(2, 2) + 10 * k for k in range(3)]
    given_mask = torch.tensor([[True, True, False], [True, True, True]])
    SubsetELBO(Recorder(), subsets).loss(None, None, xs, mask=given_mask)
    (stacked, mask), = calls
    for k in range(3):
        torch.testing.assert_close(stacked[k], torch.cat([xs[k]] * 3))
    want = torch.cat([row.expand(2, 3) & given_mask for row in subsets])
    assert torch.equal(mask, want)


OBJECTIVES = ["meanfield", "trace", "iwae", "dreg"]


@pytest.mark.parametrize("guide", ["gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus"])
@pytest.mark.parametrize("elbo", OBJECTIVES)
def test_every_objective_lowers_every_models_loss(guide, elbo, copula_tensor):
    seed_everything(0)
    model = MCVAE.build([2] * 4, latent_dim=2, hidden=(16, 16), guide=guide, **private(guide))
    data = copula_tensor[:512]
    config = TrainConfig(epochs=5, batch_size=128, lr=5e-3, elbo=elbo, num_particles=2)
    result = fit(model, data, config, progress=False)
    assert result.losses[-1] < result.losses[0] - 0.5, result.losses


@pytest.mark.parametrize("guide", ["gmrf", "diagonal", "mvae", "mmvae", "mopoe", "mmvaeplus"])
def test_every_model_generates_from_any_subset_through_one_interface(guide):
    seed_everything(0)
    model = MCVAE.build([2, 3, 2], 2, hidden=(8,), guide=guide, **private(guide))
    xs = [torch.rand(5, k) for k in (2, 3, 2)]
    for observed in ({0}, {1, 2}, {0, 2}):
        data = {k: xs[k] for k in observed}
        out = model.condition(data, num_samples=4, use_mean=False, sample_likelihood=True)
        assert [o.shape for o in out] == [(4, 5, k) for k in (2, 3, 2)]
        for k in range(3):
            if k in observed:
                torch.testing.assert_close(out[k], xs[k].expand(4, 5, -1))
            else:
                assert torch.isfinite(out[k]).all() and out[k].std(0).mean() > 0
    assert [o.shape for o in model.reconstruct(xs)] == [(5, 2), (5, 3), (5, 2)]
    with pytest.raises(ValueError, match="every component is observed"):
        model.condition(dict(enumerate(xs)))
    with pytest.raises(ValueError, match="observed component"):
        model.condition({3: xs[0]})
