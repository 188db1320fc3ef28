"""The ALMRF model: asymmetric Laplace prior and guide with the GMRF block structure."""

import math

import pyro
import pytest
import torch
from pyro_mcvae.infer.objectives import TraceELBO

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.distributions import MultivariateAsymmetricLaplace, PriorCompletion, RowGroups
from pyro_mcvae.infer import seed_everything


def almrf(prior="precision"):
    seed_everything(0)
    model = MCVAE.build([2, 3, 2], latent_dim=2, hidden=(16,), guide="almrf", prior=prior).double()
    with torch.no_grad():  # correlated blocks and a skew, so the checks below are not trivial
        model.guide.global_net.net[-1].weight.normal_(0, 0.5)
        model.prior.offdiag.normal_(0, 1.0)
        model.prior.skew.normal_(0, 0.5)
    return model, [torch.rand(5, k, dtype=torch.float64) for k in (2, 3, 2)]


def test_each_block_marginal_comes_from_its_own_encoder():
    model, xs = almrf()
    q = model.guide.posterior(xs)
    assert isinstance(q, MultivariateAsymmetricLaplace) and q.event_shape == (6,)
    for k in range(3):
        marg = q.marginal([k])
        loc, var = model.guide.encode([xs[k]], [k])
        skew = model.guide._skew([xs[k]], var, [k])
        torch.testing.assert_close(marg.loc, loc[:, 0])
        torch.testing.assert_close(marg.skew, skew[:, 0])
        torch.testing.assert_close(marg.covariance_matrix, torch.diag_embed(var[:, 0]))


@pytest.mark.parametrize("prior", ["precision", "covariance"])
def test_prior_is_a_valid_law_for_any_parameters(prior):
    model, _ = almrf(prior)
    law = model.prior()
    z = law.sample((1000,))
    lp = law.log_prob(z)
    assert torch.isfinite(lp).all()
    sigma = law.covariance_matrix
    assert torch.linalg.eigvalsh(sigma).min() > 0


def test_training_lowers_the_loss_and_generation_works(copula_tensor):
    seed_everything(0)
    model = MCVAE.build([2] * 4, latent_dim=2, hidden=(16, 16), guide="almrf")
    result = fit(model, copula_tensor[:1024], TrainConfig(epochs=6, batch_size=128, lr=3e-3, elbo="trace"),
                 progress=False)
    assert result.losses[-1] < result.losses[0] - 1.0, result.losses
    data = {1: copula_tensor[:6, 1], 3: copula_tensor[:6, 3]}
    out = model.condition(data, num_samples=4, use_mean=False)
    assert [o.shape for o in out] == [(4, 6, 2)] * 4
    torch.testing.assert_close(out[1], copula_tensor[:6, 1].expand(4, 6, 2))
    assert torch.isfinite(out[0]).all() and out[0].std(0).mean() > 0
    assert [s.shape for s in model.sample(7)] == [(7, 2)] * 4


def test_conditional_latent_follows_the_prior_conditioned_on_the_observed_means():
    model, xs = almrf()
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.guide.conditional_latent(model.prior(), [xs[0]], [0], 4000, use_mean=True)
        loc, var = model.guide.encode([xs[0]], [0])
        z0 = loc[:, 0] + model.guide._skew([xs[0]], var, [0])[:, 0]  # the observed marginal's mean
        want = model.prior().condition({0: z0}).sample((4000,))
    torch.testing.assert_close(z[..., :2], z0.expand(4000, 5, 2))
    torch.testing.assert_close(z[..., 2:].mean(0), want.mean(0), atol=0.15, rtol=0.1)


def test_absent_components_are_completed_from_the_prior_conditional():
    """With the same components absent in every row, q(z) = q(z_A) p(z_B | z_A): the density is
    the present blocks' posterior times the prior's conditional, z_A follows q_A and z_B the
    prior conditioned on z_A, and the ELBO is that of the present components alone."""
    model, xs = almrf()
    mask = torch.tensor([[True, False, True]] * 5)
    torch.manual_seed(0)
    with torch.no_grad():
        q = model.guide._posterior(xs, mask)
        assert isinstance(q, PriorCompletion) and q.batch_shape == (5,) and q.event_shape == (6,)
        z = q.sample((4000,))  # (4000, 5, 6)
        q_a, prior, ia = q.observed_law, model.prior(), [0, 1, 4, 5]
        want = q_a.log_prob(z[..., ia]) + prior.log_prob(z) - prior.marginal([0, 2]).log_prob(z[..., ia])
        torch.testing.assert_close(q.log_prob(z), want)
        # q_A is the block construction over the present components alone (no couplings to the
        # absent block, whose data the global network sees as zeros).
        g = model.guide
        seen = [xs[0], torch.zeros_like(xs[1]), xs[2]]
        loc, var = g.encoder(seen)
        keep = [0, 2]
        alone = MultivariateAsymmetricLaplace.from_blocks(
            loc[:, keep], g._skew(seen, var)[:, keep], var[:, keep], g.global_net(seen)[:, keep][:, :, keep],
            eps=g.eps, delta=g.delta, mode=g.mode, validate=False)
        torch.testing.assert_close(q_a.loc, alone.loc)
        torch.testing.assert_close(q_a.skew, alone.skew)
        torch.testing.assert_close(q_a.covariance_matrix, alone.covariance_matrix)
        torch.testing.assert_close(z[..., ia].mean(0), q_a.mean, atol=0.1, rtol=0.05)
        cond = prior.condition({0: z[:, 0, :2], 2: z[:, 0, 4:]}).sample()  # same z_A, fresh z_B
        torch.testing.assert_close(z[:, 0, 2:4].mean(0), cond.mean(0), atol=0.1, rtol=0.1)
    loss = TraceELBO().loss(model.model, model.guide, xs, mask=mask)
    assert math.isfinite(loss)


def test_rows_missing_different_components_each_get_their_own_completion():
    """Rows of one batch missing different components (one row complete): the guide's law is, row
    by row, the law that row's pattern gives on its own (q itself, or q(z_A) p(z_B | z_A) with the
    GIG parameter of its |A|), and the ELBO is finite."""
    model, xs = almrf()
    mask = torch.tensor([[True, False, True], [True, True, True], [False, True, False], [True, False, True],
                         [True, True, False]])
    torch.manual_seed(0)
    with torch.no_grad():
        q = model.guide._posterior(xs, mask)
        assert isinstance(q, RowGroups) and q.batch_shape == (5,) and q.event_shape == (6,)
        z = q.sample((3,))
        for b in range(5):
            alone = model.guide._posterior([x[b:b + 1] for x in xs], mask[b:b + 1])
            assert isinstance(alone, MultivariateAsymmetricLaplace if bool(mask[b].all()) else PriorCompletion)
            torch.testing.assert_close(q.log_prob(z)[:, b], alone.log_prob(z[:, b:b + 1])[:, 0])
    assert math.isfinite(TraceELBO().loss(model.model, model.guide, xs, mask=mask))


def test_a_prior_other_than_precision_or_covariance_is_refused():
    with pytest.raises(ValueError, match="ALMRF prior"):
        MCVAE.build([2, 2], 2, guide="almrf", prior="standard")
    pyro.clear_param_store()
