"""The per-coordinate observation laws against scipy's densities (float64) and torch's own laws
(values and gradients, float32 and float64), and the likelihood modules that use them."""

import numpy as np
import pytest
import pyro.distributions as dist
import scipy.stats
import torch

from pyro_mcvae.distributions import CoordinateLaplace, CoordinateNormal
from pyro_mcvae.models.likelihoods import ComponentLikelihood

LAWS = {"laplace": (CoordinateLaplace, dist.Laplace, scipy.stats.laplace),
        "normal": (CoordinateNormal, dist.Normal, scipy.stats.norm)}
# Scale shapes against loc (3, 4, 5): per coordinate (the likelihoods'), per datum, full, scalar.
SCALE_SHAPES = [(5,), (4, 1), (3, 4, 5), ()]


def _case(kind, scale_shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(3, 4, 5, generator=gen, dtype=dtype)
    scale = torch.rand(scale_shape, generator=gen, dtype=dtype) + 0.2
    value = torch.randn(4, 5, generator=gen, dtype=dtype) * 2  # broadcast against loc's batch
    return loc, scale, value


@pytest.mark.parametrize("kind", LAWS)
@pytest.mark.parametrize("scale_shape", SCALE_SHAPES)
def test_log_density_equals_scipy(kind, scale_shape):
    ours, _, ref = LAWS[kind]
    loc, scale, value = _case(kind, scale_shape, torch.float64)
    got = ours(loc, scale).log_prob(value)
    s = scale.expand(loc.shape).numpy()
    want = ref.logpdf(np.broadcast_to(value.numpy(), loc.shape), loc.numpy(), s).sum(-1)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", LAWS)
@pytest.mark.parametrize("scale_shape", SCALE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_equal_the_torch_law(kind, scale_shape, dtype):
    """loc, scale and value all need gradients; a random cotangent on the batch."""
    ours, torch_law, _ = LAWS[kind]
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    loc, scale, value = _case(kind, scale_shape, dtype, seed=1)
    weight = torch.randn(3, 4, dtype=dtype, generator=torch.Generator().manual_seed(2))
    grads = []
    for build in (lambda l, s: ours(l, s), lambda l, s: torch_law(l, s.expand(l.shape)).to_event(1)):
        leaves = [t.clone().requires_grad_() for t in (loc, scale, value)]
        lp = build(leaves[0], leaves[1]).log_prob(leaves[2])
        (lp * weight).sum().backward()
        grads.append([lp.detach()] + [t.grad for t in leaves])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, **tol)


def test_laplace_gradient_at_a_tie_is_zero_like_torch():
    """Where x equals loc, torch's |.| has gradient 0 (sign(0)); ours too."""
    loc = torch.tensor([[0.5, -1.0]], requires_grad=True)
    CoordinateLaplace(loc, torch.tensor([0.3, 0.7])).log_prob(torch.tensor([0.5, 2.0])).sum().backward()
    assert loc.grad[0, 0] == 0 and loc.grad[0, 1] == pytest.approx(1 / 0.7)


@pytest.mark.parametrize("kind", LAWS)
def test_moments_sampling_expand_and_mask(kind):
    ours, torch_law, _ = LAWS[kind]
    loc, scale = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([0.5, 1.0, 2.0])
    law = ours(loc, scale)
    ref = torch_law(loc, scale.expand(loc.shape))
    assert law.batch_shape == (1,) and law.event_shape == (3,)
    torch.testing.assert_close(law.mean, ref.mean)
    torch.testing.assert_close(law.variance, ref.variance)
    torch.manual_seed(0)
    draws = law.expand((40000,)).sample()
    assert draws.shape == (40000, 3)
    se = ref.stddev / 200  # 4 standard errors of the mean of 40,000 draws
    assert ((draws.mean(0) - loc[0]).abs() < 4 * se[0]).all()
    torch.testing.assert_close(draws.var(0), ref.variance[0], rtol=0.05, atol=0.0)
    x = torch.zeros(2, 3)
    masked = ours(torch.zeros(2, 3), scale).mask(torch.tensor([True, False])).log_prob(x)
    assert masked[1] == 0 and masked[0] == ours(torch.zeros(3), scale).log_prob(x[0])
    assert law.rsample().requires_grad is False and ours(loc.requires_grad_(), scale).rsample().requires_grad


def test_bad_scale_shape_is_one_line_error():
    with pytest.raises(ValueError, match="must broadcast to loc's shape"):
        CoordinateLaplace(torch.zeros(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="must broadcast to loc's shape"):
        CoordinateNormal(torch.zeros(1, 3), torch.ones(2, 3))


@pytest.mark.parametrize("kind", ["laplace", "normal"])
@pytest.mark.parametrize("scale", ["learned", 0.75])
def test_component_likelihood_matches_the_torch_law(kind, scale):
    """The likelihood module's law has the torch law's density and the same gradient for a
    learned scale."""
    lik = ComponentLikelihood(kind, 6, scale=scale, init_scale=0.3)
    params = torch.randn(4, 6, requires_grad=True)
    x = torch.randn(4, 6)
    lp = lik(params).log_prob(x)
    torch_law = dist.Normal if kind == "normal" else dist.Laplace
    ref = torch_law(params, lik.log_scale.exp().expand_as(params)).to_event(1).log_prob(x)
    torch.testing.assert_close(lp, ref)
    if lik.learned:
        g = torch.autograd.grad(lp.sum(), lik.log_scale)[0]
        g_ref = torch.autograd.grad(ref.sum(), lik.log_scale)[0]
        torch.testing.assert_close(g, g_ref)
