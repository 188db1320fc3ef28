"""MMVAE and MoPoE guides: stratified mixture posteriors over a shared latent."""

import itertools

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro_mcvae.infer.objectives import TraceELBO
from scipy.special import logsumexp
from scipy.stats import norm

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.infer import seed_everything


def build(guide, dims=(2, 2, 2), latent=2):
    seed_everything(0)
    model = MCVAE.build(list(dims), latent_dim=latent, hidden=(16,), guide=guide).double()
    return model, [torch.rand(4, k, dtype=torch.float64) for k in dims]


def experts_of(model, xs, guide):
    """The mixture components written independently: single experts or every subset's product."""
    loc, var = (t.detach().numpy() for t in model.guide.encode(xs))
    m = loc.shape[1]
    if guide == "mmvae":
        return [(loc[:, k], var[:, k]) for k in range(m)]
    out = []
    for size in range(1, m + 1):
        for subset in itertools.combinations(range(m), size):
            prec = sum(1.0 / var[:, k] for k in subset)
            out.append((sum(loc[:, k] / var[:, k] for k in subset) / prec, 1.0 / prec))
    return out


@pytest.mark.parametrize("guide,strata", [("mmvae", 3), ("mopoe", 7)])
def test_guide_draws_one_per_stratum_scored_by_the_mixture(guide, strata):
    model, xs = build(guide)
    tr = poutine.trace(model.guide).get_trace(xs)
    z = tr.nodes["z"]["value"].detach().numpy()
    assert z.shape == (strata, 4, 2)
    comps = experts_of(model, xs, guide)
    assert len(comps) == strata
    logq = tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]).detach().numpy()
    for k in range(strata):
        per = np.stack([norm.logpdf(z[k], mu, np.sqrt(v)).sum(-1) for mu, v in comps])
        np.testing.assert_allclose(logq[k], logsumexp(per, axis=0) - np.log(strata), rtol=1e-10)


@pytest.mark.parametrize("guide", ["mmvae", "mopoe"])
def test_loss_is_the_weighted_stratified_elbo(guide):
    model, xs = build(guide)
    pyro.set_rng_seed(11)
    tr = poutine.trace(model.guide).get_trace(xs)
    z = tr.nodes["z"]["value"]
    logq = tr.nodes["z"]["fn"].log_prob(z)
    # Independent assembly: sum_k w_k [log p(x | z_k) + log N(z_k; 0, I) - log q(z_k)], w_k = 1/K.
    recon = sum(lik(p).log_prob(x) for lik, p, x in zip(model.likelihoods, model.decoder(model._decoder_input(z)), xs))
    logp = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    want = -((recon + logp - logq).mean(0)).sum().detach()
    pyro.set_rng_seed(11)  # the objective's guide run draws the same z (its strata plate is added around it)
    got = TraceELBO().loss(model.model, model.guide, xs)
    assert got == pytest.approx(want.item(), rel=1e-9)


def test_mopoe_weights_leave_out_subsets_with_absent_components():
    model, _ = build("mopoe")
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True]])
    w = model.guide.stratum_weights(mask, 3)
    assert w.shape == (7, 3)
    torch.testing.assert_close(w.sum(0), torch.ones(3, dtype=w.dtype))
    assert int((w[:, 1] > 0).sum()) == 3 and int((w[:, 2] > 0).sum()) == 1  # {0},{2},{0,2}; {2}
    assert (w[:, 0] > 0).all()


@pytest.mark.parametrize("guide", ["mmvae", "mopoe"])
def test_absent_component_data_do_not_enter_the_loss(guide):
    model, xs = build(guide)
    changed = [xs[0], xs[1] + 5.0, xs[2]]
    mask = torch.tensor([[True, False, True]]).expand(4, 3)

    def loss(data, m):
        pyro.set_rng_seed(2)
        return TraceELBO().loss(model.model, model.guide, data, mask=m)

    assert loss(xs, mask) == pytest.approx(loss(changed, mask), rel=1e-9)
    assert loss(xs, None) != pytest.approx(loss(changed, None), rel=1e-3)


@pytest.mark.parametrize("guide", ["mmvae", "mopoe"])
def test_training_lowers_the_loss_and_generates(guide, copula_tensor):
    seed_everything(0)
    model = MCVAE.build([2] * 4, latent_dim=3, hidden=(16, 16), guide=guide)
    result = fit(model, copula_tensor, TrainConfig(epochs=4, batch_size=128, lr=3e-3, elbo="trace"), progress=False)
    assert result.losses[-1] < result.losses[0] - 1.0, result.losses
    out = model.condition({1: copula_tensor[:5, 1], 3: copula_tensor[:5, 3]}, num_samples=2)
    assert [o.shape for o in out] == [(2, 5, 2)] * 4


def test_mmvae_conditional_latent_is_a_mixture_of_the_observed_experts():
    model, xs = build("mmvae")
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.guide.conditional_latent(model.prior(), [xs[0], xs[2]], [0, 2], 40000)
        loc, var = model.guide.encode([xs[0], xs[2]], [0, 2])
    # Mixture mean and variance of two equally weighted experts, computed independently.
    mean = loc.mean(1)
    second = (var + loc ** 2).mean(1)
    torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), second - mean ** 2, atol=0.03, rtol=0.05)


def test_stratum_density_scores_each_draw_by_its_own_component_and_bounds_the_elbo():
    model, xs = build("mopoe")
    jensen = MCVAE.build([2, 2, 2], latent_dim=2, hidden=(16,), guide="mopoe",
                         density="stratum").double()
    jensen.load_state_dict(model.state_dict())
    tr = poutine.trace(jensen.guide).get_trace(xs)
    z = tr.nodes["z"]["value"].detach().numpy()
    logq = tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]).detach().numpy()
    for k, (mu, v) in enumerate(experts_of(model, xs, "mopoe")):
        np.testing.assert_allclose(logq[k], norm.logpdf(z[k], mu, np.sqrt(v)).sum(-1), rtol=1e-10)
    # sum_k w_k ELBO_k <= ELBO of the mixture (Jensen), so the loss is higher on average.
    losses = []
    for m in (model, jensen):
        pyro.set_rng_seed(0)
        losses.append(TraceELBO(num_particles=400).loss(m.model, m.guide, xs))
    assert losses[1] > losses[0]
    with pytest.raises(ValueError, match="density"):
        MCVAE.build([2, 2], 2, guide="mmvae", density="exact")


# -- one draw per datum from the mixture (strata="one") ---------------------------------------------
def build_one(guide="mopoe", strata="one"):
    seed_everything(0)
    return MCVAE.build([2, 2, 2], latent_dim=2, hidden=(16,), guide=guide, strata=strata).double()


def test_mixture_draw_picks_components_at_their_weights():
    """Two far-apart components of weights 0.2 / 0.8: the share of draws near each is its weight
    (within 4 standard errors), and each draw is exactly its component's reparameterisation."""
    from pyro_mcvae.distributions import StratifiedMixture
    from pyro_mcvae.models import MixtureDraw

    loc = torch.tensor([[[-10.0], [10.0]]], requires_grad=True)  # (batch 1, K 2, 1)
    mix = StratifiedMixture(pyro.distributions.Normal(loc, 1.0).to_event(1), logits=torch.tensor([0.2, 0.8]).log())
    torch.manual_seed(0)
    z = MixtureDraw(mix).rsample((20000,))
    assert z.shape == (20000, 1, 1)
    share = (z > 0).double().mean().item()
    assert abs(share - 0.8) < 4 * (0.8 * 0.2 / 20000) ** 0.5, share
    # d z / d loc_k is 1 for the draws of component k, 0 for the others: a pathwise gradient.
    (grad,) = torch.autograd.grad(z.sum(), loc)
    assert grad[0, 1, 0].item() == (z > 0).sum().item() and grad[0, 0, 0].item() == (z < 0).sum().item()
    torch.testing.assert_close(MixtureDraw(mix).log_prob(z[:5]), mix.log_prob(z[:5]))


def mixture_draw_of(model, xs):
    from pyro_mcvae.models import MixtureDraw

    return MixtureDraw(model.guide.posterior(xs))


@pytest.mark.parametrize("guide", ["mmvae", "mopoe"])
def test_one_draw_matches_the_mixture_moments(guide):
    model = build_one(guide)
    _, xs = build(guide)
    torch.manual_seed(1)
    with torch.no_grad():
        z = mixture_draw_of(model, xs).sample((40000,))  # (N, batch 4, 2)
    comps = experts_of(model, xs, guide)
    mean = np.mean([mu for mu, _ in comps], 0)
    second = np.mean([v + mu ** 2 for mu, v in comps], 0)
    np.testing.assert_allclose(z.mean(0).numpy(), mean, atol=0.03)
    np.testing.assert_allclose(z.var(0).numpy(), second - mean ** 2, atol=0.03, rtol=0.05)


def test_one_draw_decodes_once_and_needs_the_mixture_density():
    from pyro_mcvae.infer.objectives.base import MultimodalObjective

    _, xs = build("mopoe")
    for strata, draws in (("every", 7), ("one", 1)):  # one latent per subset, or one per datum
        model = build_one(strata=strata)
        model_fn, guide_fn, *_ = TraceELBO()._programs(model.model, model.guide, (xs,), {})
        guide_tr = poutine.trace(guide_fn).get_trace(xs)
        model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(xs)
        assert guide_tr.nodes["z"]["value"].shape == (draws, 4, 2)
        # the decoders' laws: one per latent drawn
        assert all(model_tr.nodes[f"x{k}"]["fn"].batch_shape == (draws, 4) for k in range(3)), strata
        assert MultimodalObjective.strata_weights(model.guide, (xs,), {}).shape == (draws, 4)
    with pytest.raises(ValueError, match="density='mixture'"):
        MCVAE.build([2, 2], 2, guide="mopoe", strata="one", density="stratum")
    with pytest.raises(ValueError, match="strata must be"):
        MCVAE.build([2, 2], 2, guide="mopoe", strata="some")


@pytest.mark.parametrize("guide", ["mmvae", "mopoe"])
def test_one_draw_loss_and_gradient_are_unbiased_for_the_stratified_ones(guide):
    """The same weights under both draws: over 300 independent estimates each, the mean loss and
    the mean gradient of the encoders' first layer agree within 4 standard errors (both are
    unbiased for the mixture's ELBO and its gradient)."""
    every, one = build_one(guide, "every"), build_one(guide, "one")
    one.load_state_dict(every.state_dict())
    _, xs = build(guide)
    stats = {}
    for name, m in (("every", every), ("one", one)):
        params = [p for n, p in m.guide.named_parameters() if "encoder" in n][:2]
        losses, grads = [], []
        for rep in range(300):
            pyro.set_rng_seed(1000 + rep)
            loss = TraceELBO().differentiable_loss(m.model, m.guide, xs)
            g = torch.autograd.grad(loss, params)
            losses.append(loss.item())
            grads.append(torch.cat([t.flatten() for t in g]).numpy())
        stats[name] = (np.array(losses), np.stack(grads))
    (l_every, g_every), (l_one, g_one) = stats["every"], stats["one"]
    se = np.sqrt(l_every.var(ddof=1) / len(l_every) + l_one.var(ddof=1) / len(l_one))
    assert abs(l_every.mean() - l_one.mean()) < 4 * se, (l_every.mean(), l_one.mean(), se)
    g_se = np.sqrt(g_every.var(0, ddof=1) / len(g_every) + g_one.var(0, ddof=1) / len(g_one))
    z = np.abs(g_every.mean(0) - g_one.mean(0)) / np.maximum(g_se, 1e-12)
    assert z.max() < 4.5, z.max()  # ~30 coordinates: 4.5 standard errors leaves room for the maximum
    assert l_one.std() > l_every.std()  # the price: one draw per datum varies more than seven
