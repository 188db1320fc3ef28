"""The importance-weighted objective and its DReG gradient, against closed forms and Pyro's ELBO."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_mcvae import MCVAE
from pyro_mcvae.distributions import GMRF, StratifiedMixture
from pyro_mcvae.infer import ImportanceWeightedELBO, detach_distribution, make_elbo, seed_everything

X = 1.5  # one observation of the linear Gaussian model, repeated over the batch


def linear_gaussian(n=4000, loc=0.2, log_scale=-0.5):
    """z ~ N(0, 1), x | z ~ N(z, 1): log p(x) = log N(x; 0, 2) in closed form."""
    x = torch.full((n,), X, dtype=torch.float64)
    a = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)

    def model(x, beta=1.0, mask=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, beta=1.0, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a, b.exp()))

    return x, a, b, model, guide


def analytic_elbo(loc, scale):
    """E_q[log p(x, z) - log q(z)] for q = N(loc, scale^2) in the linear Gaussian model."""
    e_sq = scale**2 + loc**2
    log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * e_sq
    log_lik = -0.5 * math.log(2 * math.pi) - 0.5 * (X**2 - 2 * X * loc + e_sq)
    entropy = 0.5 * math.log(2 * math.pi * math.e * scale**2)
    return log_prior + log_lik + entropy


def test_bound_is_the_elbo_at_one_sample_and_tightens_to_the_log_evidence():
    x, a, b, model, guide = linear_gaussian()
    log_px = dist.Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(X)).item()
    elbo = analytic_elbo(0.2, math.exp(-0.5))
    seed_everything(0)
    bounds = {k: -ImportanceWeightedELBO(k).loss(model, guide, x) / len(x) for k in (1, 4, 64, 2000)}
    assert bounds[1] == pytest.approx(elbo, abs=0.03)  # MC error of 4000 draws ~ 0.01
    assert bounds[1] < bounds[4] < bounds[64] < bounds[2000] <= log_px + 1e-3
    assert bounds[2000] == pytest.approx(log_px, abs=2e-3)


def test_dreg_gradient_has_the_iwae_mean_and_less_spread():
    x, a, b, model, guide = linear_gaussian()
    grads = {}
    for dreg in (False, True):
        seed_everything(1)
        draws = []
        for _ in range(8):
            a.grad = b.grad = None
            ImportanceWeightedELBO(10, dreg=dreg).loss_and_grads(model, guide, x)
            draws.append(torch.stack([a.grad, b.grad]) / len(x))
        grads[dreg] = torch.stack(draws)
    plain, dreg = grads[False], grads[True]
    stderr = (plain.std(0) ** 2 / 8 + dreg.std(0) ** 2 / 8).sqrt()
    assert torch.all((plain.mean(0) - dreg.mean(0)).abs() < 4 * stderr)
    assert torch.all(dreg.std(0) < plain.std(0))


def test_loss_and_grads_returns_the_same_value_as_loss():
    x, a, b, model, guide = linear_gaussian(n=50)
    for dreg in (False, True):
        seed_everything(3)
        value = ImportanceWeightedELBO(5, dreg=dreg).loss(model, guide, x)
        seed_everything(3)
        assert ImportanceWeightedELBO(5, dreg=dreg).loss_and_grads(model, guide, x) == pytest.approx(value)


@pytest.mark.parametrize("guide", ["gmrf", "diagonal", "mvae", "mmvae", "mopoe", "mmvaeplus"])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_one_sample_bound_equals_pyro_trace_elbo(guide, beta):
    """K = 1 with the same random numbers is Pyro's Trace_ELBO: site masks, strata weights and beta
    enter the same way (MVAE: without the sub-sampled terms)."""
    seed_everything(0)
    prior = "diagonal" if guide == "diagonal" else "precision"
    model = MCVAE.build([2, 2, 2], 2, hidden=(8,), guide=guide, prior=prior, private_dim=1).double()
    xs = torch.rand(6, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, True]] * 3)
    for m in (None, mask):
        kwargs = {"beta": beta} | ({} if m is None else {"mask": m})
        seed_everything(5)
        want = Trace_ELBO().loss(model.model, model.guide, xs, **kwargs)
        seed_everything(5)
        got = ImportanceWeightedELBO(1).loss(model.model, model.guide, xs, **kwargs)
        assert got == pytest.approx(want, rel=1e-9)


def test_detached_distributions_pass_gradients_to_the_value_only():
    loc = torch.randn(3, 4, requires_grad=True)
    value = torch.randn(3, 4, requires_grad=True)
    laws = [
        dist.Normal(loc, 1.5).to_event(1),
        GMRF(loc, scale_tril=torch.eye(4) * 2, num_components=2),
        StratifiedMixture(dist.Normal(loc.unsqueeze(-2).expand(3, 2, 4), 1.0).to_event(1)),
    ]
    for law in laws:
        frozen = detach_distribution(law)
        torch.testing.assert_close(frozen.log_prob(value), law.log_prob(value))
        loc.grad = value.grad = None
        frozen.log_prob(value).sum().backward()
        assert loc.grad is None and value.grad is not None and value.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="torch distribution"):
        detach_distribution(loc)


def test_objective_names_and_bad_sample_counts():
    assert isinstance(make_elbo("dreg", 3), ImportanceWeightedELBO) and make_elbo("dreg", 3).dreg
    assert make_elbo("iwae", 7).num_samples == 7
    with pytest.raises(ValueError, match="elbo must be one of"):
        make_elbo("vimco")
    with pytest.raises(ValueError, match="positive integer"):
        ImportanceWeightedELBO(0)
