"""MMVAE+: shared mixture latent, modality-specific latents, auxiliary priors, generation."""

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.infer import ImportanceWeightedELBO, seed_everything
from pyro_mcvae.models import MMVAEPlusGuide

M, D, W = 3, 2, 2  # components, shared latent size, private latent size


def build(family="normal"):
    seed_everything(0)
    model = MCVAE.build([2] * M, latent_dim=D, hidden=(16,), guide="mmvaeplus", private_dim=W,
                        family=family).double()
    return model, [torch.rand(4, 2, dtype=torch.float64) for _ in range(M)]


def test_sites_and_densities_match_an_independent_computation():
    model, xs = build()
    tr = poutine.trace(model.guide).get_trace(xs)
    z, w = (tr.nodes[k]["value"].detach().numpy() for k in ("z", "w"))
    assert z.shape == (M, 4, D) and w.shape == (M, 4, M, W)
    loc, var = (t.detach().numpy() for t in model.guide.encode(xs))  # (4, M, D + W)
    zl, zv, wl, wv = loc[..., :D], var[..., :D], loc[..., D:], var[..., D:]
    # z: every stratum scored by the equally weighted mixture of the M shared experts.
    logq_z = tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]).detach().numpy()
    for m in range(M):
        per = np.stack([norm.logpdf(z[m], zl[:, k], np.sqrt(zv[:, k])).sum(-1) for k in range(M)])
        np.testing.assert_allclose(logq_z[m], logsumexp(per, 0) - np.log(M), rtol=1e-10)
    # w: only the stratum's own component is scored, by its encoder's q(w_m | x_m).
    logq_w = tr.nodes["w"]["fn"].log_prob(tr.nodes["w"]["value"]).detach().numpy()
    model_tr = poutine.trace(poutine.replay(model.model, trace=tr)).get_trace(xs)
    logp_w = model_tr.nodes["w"]["fn"].log_prob(model_tr.nodes["w"]["value"]).detach().numpy()
    for m in range(M):
        want = norm.logpdf(w[m, :, m], wl[:, m], np.sqrt(wv[:, m])).sum(-1)
        np.testing.assert_allclose(logq_w[m], want, rtol=1e-10)
        np.testing.assert_allclose(logp_w[m], norm.logpdf(w[m, :, m]).sum(-1), rtol=1e-10)


def test_cross_components_use_the_auxiliary_prior_which_learns():
    model, xs = build()
    tr = poutine.trace(model.guide).get_trace(xs)
    law = tr.nodes["w"]["fn"].base_dist.base_dist.base_dist  # the elementwise Normal (S, batch, M, W)
    own = torch.eye(M, dtype=torch.bool)[:, None, :].expand(M, 4, M)
    loc, var = model.guide.encode(xs)
    aux = model.guide.auxiliary_std().expand(M, 4, M, W)
    torch.testing.assert_close(law.loc[~own], torch.zeros_like(law.loc[~own]))
    torch.testing.assert_close(law.scale[~own], aux[~own])
    torch.testing.assert_close(law.loc[own], loc[..., D:].permute(1, 0, 2).reshape(-1, W))
    # The cross-reconstruction reaches r_j's parameters through the reparameterised draws.
    model, xs = build()
    ImportanceWeightedELBO(3, dreg=True).loss_and_grads(model.model, model.guide, xs)
    grad = model.guide.aux_raw_std.grad
    assert grad is not None and torch.all(grad.abs().sum(-1) > 0)


def test_conditional_generation_draws_missing_private_latents_from_the_auxiliary_prior():
    model, xs = build()
    with torch.no_grad():
        z = model.guide.conditional_latent(model.prior(), [xs[1]], [1], 20000)
        loc, _ = model.guide.encode([xs[1]], [1])
    assert z.shape == (20000, 4, D + M * W)
    w = z[..., D:].reshape(20000, 4, M, W)
    torch.testing.assert_close(w[:, :, 1], loc[:, 0, D:].expand(20000, 4, W))  # observed: the mean
    std = model.guide.auxiliary_std().detach()
    torch.testing.assert_close(w[:, :, [0, 2]].std(0).mean(0), std[[0, 2]], atol=0.02, rtol=0.02)
    out = model.condition({1: xs[1]}, num_samples=3)
    assert [o.shape for o in out] == [(3, 4, 2)] * M
    torch.testing.assert_close(out[1], xs[1].expand(3, 4, 2))
    assert [o.shape for o in model.sample(6)] == [(6, 2)] * M
    assert [o.shape for o in model.reconstruct(xs, use_mean=False)] == [(4, 2)] * M


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_training_with_the_importance_weighted_objective_lowers_the_loss(family, copula_tensor):
    seed_everything(0)
    model = MCVAE.build([2] * 4, latent_dim=2, hidden=(16, 16), guide="mmvaeplus", private_dim=1,
                        family=family)
    config = TrainConfig(epochs=4, batch_size=128, lr=3e-3, elbo="dreg", num_particles=3)
    result = fit(model, copula_tensor, config, progress=False)
    assert result.losses[-1] < result.losses[0] - 1.0, result.losses


def test_bad_private_sizes_are_refused():
    with pytest.raises(ValueError, match="private_dim"):
        MMVAEPlusGuide([2, 2], 2, 0)
    with pytest.raises(ValueError, match="private_dim"):
        MCVAE.build([2, 2], 2, guide="mmvaeplus", private_dim=1.5)


def test_the_likelihood_proposal_draws_every_present_private_latent_from_its_encoder():
    """MMVAEPlusGuide.proposal: the guide's sites and shapes under the strata plate; present
    components' w_j from q(w_j | x_j) in every stratum, absent ones from the unit prior."""
    from pyro_mcvae.infer.objectives.base import MultimodalObjective
    from pyro_mcvae.models import build_model

    torch.manual_seed(0)
    model = build_model("mmvaeplus", [2, 3, 2], hidden=(8,), private_dim=2).double()
    xs = [torch.randn(4, d, dtype=torch.float64) for d in (2, 3, 2)]
    mask = torch.tensor([[True, False, True]] * 4)

    class Wrap(MultimodalObjective):
        scales_latents = False

        def strata_weights(self, guide, args, kwargs):
            return MultimodalObjective.strata_weights(model.guide, args, kwargs)

    _, proposal, _, _, _ = Wrap()._programs(model.model, model.guide.proposal, (xs,), {"mask": mask})
    _, program, _, _, _ = Wrap()._programs(model.model, model.guide, (xs,), {"mask": mask})
    tr = poutine.trace(proposal).get_trace(xs, mask=mask)
    ref = poutine.trace(program).get_trace(xs, mask=mask)
    for name in ("z", "w"):
        assert tr.nodes[name]["value"].shape == ref.nodes[name]["value"].shape
    w_law = tr.nodes["w"]["fn"]
    loc, std = w_law.base_dist.loc, w_law.base_dist.scale  # (S, batch, M, d_w)
    (_, _), (w_loc, w_var) = model.guide._split(*model.guide.encoder(xs))
    for k, present in enumerate((True, False, True)):
        want_loc = w_loc[:, k] if present else torch.zeros_like(w_loc[:, k])
        want_std = w_var[:, k].sqrt() if present else torch.ones_like(w_var[:, k])
        torch.testing.assert_close(loc[:, :, k], want_loc.expand_as(loc[:, :, k]))
        torch.testing.assert_close(std[:, :, k], want_std.expand_as(std[:, :, k]))
