"""The importance-weighted objective and its DReG gradient, against closed forms and Pyro's ELBO."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import private
from pyro_mcvae.infer.objectives import TraceELBO

from pyro_mcvae import MCVAE
from pyro_mcvae.distributions import GMRF, StratifiedMixture
from pyro_mcvae.infer import ImportanceWeightedELBO, detach_distribution, seed_everything
from pyro_mcvae.infer.objectives import make_objective as make_elbo

X = 1.5  # one observation of the linear Gaussian model, repeated over the batch


def linear_gaussian(n=4000, loc=0.2, log_scale=-0.5):
    """z ~ N(0, 1), x | z ~ N(z, 1): log p(x) = log N(x; 0, 2) in closed form."""
    x = torch.full((n,), X, dtype=torch.float64)
    a = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)
    return (x, a, b, *linear_gaussian_programs(a, b))


def linear_gaussian_programs(a, b):
    """The model ``z ~ N(0, 1), x | z ~ N(z, 1)`` and the guide ``z ~ N(a, exp(b))`` (``a``, ``b``
    scalars, or one entry per datum)."""

    def model(x, beta=1.0, mask=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, beta=1.0, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a, b.exp()))

    return model, guide


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
    model = MCVAE.build([2, 2, 2], 2, hidden=(8,), guide=guide, **private(guide)).double()
    xs = torch.rand(6, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, True]] * 3)
    for m in (None, mask):
        kwargs = {"beta": beta} | ({} if m is None else {"mask": m})
        seed_everything(5)
        want = TraceELBO().loss(model.model, model.guide, xs, **kwargs)
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


def test_detaching_a_block_assembled_gmrf_detaches_its_packed_entries():
    """GMRF.from_blocks keeps its covariance's distinct entries (a named tuple) for the KL: the
    detached copy holds them detached, and its KL passes no gradient to the blocks."""
    diag = (torch.rand(3, 2, 2) + 0.5).requires_grad_()
    off = torch.randn(3, 2, 2, 2, 2, requires_grad=True)
    q = GMRF.from_blocks(torch.zeros(3, 2, 2), diag, off)
    frozen = detach_distribution(q)
    assert q._packed["covariance"].values.requires_grad and not frozen._packed["covariance"].values.requires_grad
    p = GMRF(torch.zeros(4), precision_matrix=torch.eye(4) * 2, num_components=2)
    kl = torch.distributions.kl_divergence(frozen, p)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p))
    assert not kl.requires_grad


def test_objective_names_and_bad_sample_counts():
    assert isinstance(make_elbo("dreg", 3), ImportanceWeightedELBO) and make_elbo("dreg", 3).dreg
    assert make_elbo("iwae", 7).num_samples == 7
    with pytest.raises(ValueError, match="elbo must be one of"):
        make_elbo("vimco")
    with pytest.raises(ValueError, match="positive integer"):
        ImportanceWeightedELBO(0)


# --- Unbiasedness of DReG at every beta, against exact gradients (issue 12) ----------------------

from numpy.polynomial.hermite_e import hermegauss  # noqa: E402

from pyro_mcvae.distributions import StratifiedMixture as _Mixture  # noqa: E402
from pyro_mcvae.models.mmvae import StrataSite as _StrataSite  # noqa: E402

_NODES, _WEIGHTS = (torch.tensor(a, dtype=torch.float64) for a in hermegauss(120))
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # E f(eps), eps ~ N(0, 1), is sum_i g_i f(e_i)


def _normal_lp(v, m, s):
    return -0.5 * math.log(2 * math.pi) - torch.log(s) - 0.5 * ((v - m) / s) ** 2


def expected_log_mean_weight(log_w_nodes: torch.Tensor, k: int) -> torch.Tensor:
    """``E log (1/K) sum_k W_k`` for ``K`` iid weights with ``log W = log_w_nodes`` at the Gauss-Hermite
    nodes, exactly up to quadrature: Frullani's ``log y = int_0^inf (e^-t - e^-ty) dt / t`` gives
    ``E log sum_k W_k = int (e^-t - phi(t)^K) dt / t`` with the Laplace transform
    ``phi(t) = E e^{-tW}``, a one-dimensional integral for any ``K`` (t = e^u, trapezoid in u).
    Differentiable, so autograd gives the exact gradient."""
    c = (_WEIGHTS * log_w_nodes).sum()  # centring: E log sum W = c + E log sum W e^-c
    u = torch.linspace(-40.0, 60.0, 20001, dtype=torch.float64)
    phi = (_WEIGHTS * torch.exp(-u.exp()[:, None] * torch.exp(log_w_nodes - c))).sum(-1)
    return c + torch.trapezoid(torch.exp(-u.exp()) - phi**k, u) - math.log(k)


def exact_iwae_gradient(beta: float, k: int, loc=0.2, scale=0.6) -> torch.Tensor:
    """d/d(loc, log scale) of E log mean_k W_k in the linear Gaussian model, q = N(loc, scale^2)."""
    a = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(math.log(scale), dtype=torch.float64, requires_grad=True)
    z = a + b.exp() * _NODES
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    log_w = _normal_lp(torch.tensor(X, dtype=torch.float64), z, one) + beta * (
        _normal_lp(z, zero, one) - _normal_lp(z, a, b.exp()))
    return torch.stack(torch.autograd.grad(expected_log_mean_weight(log_w, k), (a, b)))


def test_frullani_quadrature_matches_direct_quadrature_at_one_and_two_samples():
    """The K-sample reference against plain (1-d and 2-d) Gauss-Hermite sums of log mean W."""
    z = 0.2 + 0.6 * _NODES
    log_w = _normal_lp(torch.tensor(X, dtype=torch.float64), z, torch.tensor(1.0, dtype=torch.float64))
    direct1 = (_WEIGHTS * log_w).sum()
    direct2 = (_WEIGHTS[:, None] * _WEIGHTS[None] * torch.logaddexp(log_w[:, None], log_w[None])).sum() - math.log(2)
    assert expected_log_mean_weight(log_w, 1).item() == pytest.approx(direct1.item(), abs=1e-10)
    assert expected_log_mean_weight(log_w, 2).item() == pytest.approx(direct2.item(), abs=1e-10)
    # the audit's numbers (beta 0.001 and 2.5, K = 2)
    torch.testing.assert_close(exact_iwae_gradient(0.001, 2), torch.tensor([1.118, -0.089], dtype=torch.float64),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(exact_iwae_gradient(2.5, 2), torch.tensor([0.489, 0.852], dtype=torch.float64),
                               atol=1e-3, rtol=0)


def per_datum_gradients(elbo, beta, n=20000, loc=0.2, scale=0.6, seed=0):
    """``n`` independent replicates of the estimator in one pass: each datum has its own copy of the
    guide's parameters, so its gradient lands in its own entry. Returns ``(n, 2)`` gradients of the
    bound (not the loss) in ``(loc, log scale)``."""
    x = torch.full((n,), X, dtype=torch.float64)
    a = torch.full((n,), loc, dtype=torch.float64, requires_grad=True)
    b = torch.full((n,), math.log(scale), dtype=torch.float64, requires_grad=True)
    model, guide = linear_gaussian_programs(a, b)
    seed_everything(seed)
    elbo.loss_and_grads(model, guide, x, beta=beta)
    return -torch.stack([a.grad, b.grad], -1)


@pytest.mark.parametrize("k", [1, 2, 8])
@pytest.mark.parametrize("beta", [0.0, 0.001, 0.3, 1.0, 2.5])
def test_dreg_gradient_is_unbiased_for_every_beta(beta, k):
    """The mean of 20,000 DReG gradients agrees with the exact gradient within 4 standard errors
    (the squared-weight estimator, right only at beta = 1 or K = 1, fails this at K = 2 and 8);
    plain IWAE too."""
    exact = exact_iwae_gradient(beta, k)
    for dreg in (True, False):
        g = per_datum_gradients(ImportanceWeightedELBO(k, dreg=dreg), beta)
        mean, se = g.mean(0), g.std(0) / math.sqrt(len(g))
        z = (mean - exact) / se
        assert torch.all(z.abs() < 4), (
            f"dreg={dreg} beta={beta} K={k}: mean {mean.tolist()} exact {exact.tolist()} ({z.tolist()} s.e.)")


def test_dreg_leaves_unscored_latent_entries_with_their_path_gradient():
    """MMVAE+: the draws w_j from the auxiliary priors (j not the stratum) are masked out of the
    density, so they have no score term and the DReG gradient of the auxiliary scales is the plain
    IWAE one. With the same random numbers the two are equal; before the fix they differed by
    +10.9, -19.0 and +7.7 standard errors (M = 3, K = 4, 40 replicates)."""
    seed_everything(0)
    model = MCVAE.build([2, 2, 2], 2, hidden=(16,), guide="mmvaeplus", private_dim=2).double()
    with torch.no_grad():  # a non-trivial decoder use of w
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    xs = torch.rand(200, 3, 2, dtype=torch.float64)
    grads = {}
    for dreg in (False, True):
        model.zero_grad()
        seed_everything(7)
        ImportanceWeightedELBO(4, dreg=dreg).loss_and_grads(model.model, model.guide, xs, beta=1.0)
        grads[dreg] = model.guide.aux_raw_std.grad.clone()
    assert grads[False].abs().sum() > 0
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-9, atol=1e-12)


def test_scored_entries_reads_masks_under_event_wrappers():
    from pyro_mcvae.infer.objectives import scored_entries

    scored = torch.tensor([[True, False], [False, True]])
    law = dist.Normal(torch.zeros(2, 2, 3), 1.0).to_event(1).mask(scored).to_event(1)
    got = scored_entries(law)
    assert got.shape == (2, 2, 1) and torch.equal(got.expand(2, 2, 3)[..., 0], scored)
    assert scored_entries(dist.Normal(torch.zeros(3), 1.0).to_event(1)) is None
    site_mask = torch.tensor([True, False])
    assert torch.equal(scored_entries(law, site_mask).expand(2, 2, 3)[..., 0], scored & site_mask[:, None])


class _ToyMixtureGuide:
    """A two-component stratified mixture posterior over a scalar latent, one per datum."""

    def __init__(self, n, loc=(0.2, 1.4), scale=(0.6, 0.9)):
        self.loc = torch.tensor(loc, dtype=torch.float64).repeat(n, 1).requires_grad_()
        self.log_scale = torch.tensor(scale, dtype=torch.float64).log().repeat(n, 1).requires_grad_()

    def stratum_weights(self, mask, batch, device=None, dtype=None):
        return torch.full((2, batch), 0.5, dtype=torch.float64)

    def __call__(self, x, beta=1.0, mask=None):
        mix = _Mixture(dist.Normal(self.loc.unsqueeze(-1), self.log_scale.exp().unsqueeze(-1)).to_event(1))
        with pyro.plate("data", len(x), dim=-1):  # the objective adds the strata plate
            pyro.sample("z", _StrataSite(mix))


def _toy_mixture_model(x, beta=1.0, mask=None):
    with pyro.plate("data", len(x), dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros(1, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.squeeze(-1), 1.0), obs=x)


def exact_stratified_gradient(k, beta=1.0, loc=(0.2, 1.4), scale=(0.6, 0.9)) -> torch.Tensor:
    """Exact gradient (loc_1, loc_2, log scale_1, log scale_2) of the stratified bound
    ``1/2 sum_s E_{z_1..K ~ q_s} log mean_k W(z_k)``, W scored by the mixture density."""
    a = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(scale, dtype=torch.float64).log().requires_grad_()
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    total = 0.0
    for s in range(2):
        z = a[s] + b[s].exp() * _NODES
        log_q = torch.logsumexp(torch.stack([_normal_lp(z, a[j], b[j].exp()) for j in range(2)]), 0) - math.log(2)
        log_w = _normal_lp(torch.tensor(X, dtype=torch.float64), z, one) + beta * (_normal_lp(z, zero, one) - log_q)
        total = total + 0.5 * expected_log_mean_weight(log_w, k)
    return torch.cat(torch.autograd.grad(total, (a, b)))


@pytest.mark.parametrize("k,beta", [(1, 1.0), (2, 0.3), (4, 1.0), (8, 1.0), (4, 2.5), (4, 0.0)])
@pytest.mark.parametrize("loc,scale", [((0.2, 1.4), (0.6, 0.9)), ((0.5, 0.7), (0.6, 0.7))])
def test_stratified_mixture_dreg_and_iwae_gradients_are_unbiased(k, beta, loc, scale):
    """Mixture guides (MMVAE, MoPoE, MMVAE+'s z): the mean of 40,000 gradients agrees with the exact
    stratified gradient within 4 standard errors for IWAE and for DReG with the responsibilities.
    The squared-weight form fails here by up to 326 standard errors (K = 8, overlapping components)."""
    n = 40000
    exact = exact_stratified_gradient(k, beta, loc, scale)
    spread = {}
    for dreg in (False, True):
        guide = _ToyMixtureGuide(n, loc, scale)
        seed_everything(3)
        ImportanceWeightedELBO(k, dreg=dreg).loss_and_grads(_toy_mixture_model, guide,
                                                             torch.full((n,), X, dtype=torch.float64),
                                                             beta=beta)
        g = -torch.cat([guide.loc.grad, guide.log_scale.grad], -1)
        mean, se = g.mean(0), g.std(0) / math.sqrt(n)
        assert torch.all(((mean - exact) / se).abs() < 4), (dreg, mean, exact, se)
        spread[dreg] = g.std(0)
    if k > 1 and beta == 1.0:  # the point of DReG: a smaller spread than IWAE's
        assert torch.all(spread[True] < spread[False]), spread


@pytest.mark.parametrize("guide", ["gmrf", "diagonal", "mvae"])
@pytest.mark.parametrize("k", [1, 5])
def test_iwae_bound_equals_pyro_renyi_elbo_at_alpha_zero(guide, k):
    """Pyro's RenyiELBO(alpha=0) is the IWAE bound: with the same random numbers our loss equals it
    (a plate shared by every site stays outside its log-mean-exp, as ours keeps each datum apart)."""
    from pyro.infer import RenyiELBO

    seed_everything(0)
    model = MCVAE.build([2, 2, 2], 2, hidden=(8,), guide=guide).double()
    xs = torch.rand(6, 3, 2, dtype=torch.float64)
    seed_everything(5)
    want = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=2).loss(
        model.model, model.guide, xs)
    seed_everything(5)
    got = ImportanceWeightedELBO(k).loss(model.model, model.guide, xs)
    assert got == pytest.approx(want, rel=1e-10)
