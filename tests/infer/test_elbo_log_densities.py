"""MeanFieldELBO evaluates the latent sites' log densities only where its KL has no closed form:
its losses and gradients equal Pyro's TraceMeanField_ELBO (with this library's beta) for a model
with analytic KLs (the GMRF, with and without subset terms, one and several particles) and one
whose prior has none (the ALMRF), with Pyro's validation off and on."""

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import MeanFieldELBO, SubsetELBO
from pyro_mcvae.infer.objectives.elbo import _BetaELBO
from pyro_mcvae.models import build_model

M, D = 3, 2


class PyroMeanField(_BetaELBO, TraceMeanField_ELBO):
    """The reference: Pyro's own traces and loss, with the same beta and strata."""


def losses_and_grads(model, objective, x, mask=None, beta=0.3):
    model.zero_grad()
    pyro.set_rng_seed(3)
    loss = objective.loss_and_grads(model.model, model.guide, x, mask=mask, beta=beta)
    return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def build(kind):
    seed_everything(0)
    model = build_model(kind, [D] * M, hidden=(8,), block_dim=2).double()
    if kind == "gmrf":
        with torch.no_grad():
            model.prior.offdiag.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kind,particles,subsets", [("gmrf", 1, False), ("gmrf", 3, False), ("gmrf", 1, True),
                                                    ("almrf", 1, False)])
@pytest.mark.parametrize("validate", [False, True])
def test_same_losses_and_gradients_as_pyros_traces(kind, particles, subsets, validate):
    model = build(kind)
    x = torch.randn(5, M, D, dtype=torch.float64)
    mask = torch.ones(5, M, dtype=torch.bool)
    mask[1, 2] = False
    results = []
    for cls in (MeanFieldELBO, PyroMeanField):
        objective = cls(num_particles=particles)
        if subsets:
            rows = torch.cat([torch.ones(1, M, dtype=torch.bool), torch.eye(M, dtype=torch.bool)])
            objective = SubsetELBO(objective, rows, score="all")
        with pyro.validation_enabled(validate):
            results.append(losses_and_grads(model, objective, x, mask))
    (loss, grads), (ref_loss, ref_grads) = results
    assert loss == pytest.approx(ref_loss, rel=1e-10, abs=1e-10)
    assert len(grads) == len(ref_grads) > 0
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


def test_latent_log_densities_are_left_out_without_validation():
    model = build("gmrf")
    x = torch.randn(4, M, D, dtype=torch.float64)
    with pyro.validation_enabled(False):
        model_trace, guide_trace = MeanFieldELBO()._get_trace(model.model, model.guide, (x,), {})
    assert "log_prob" not in model_trace.nodes["z"] and "score_parts" not in guide_trace.nodes["z"]
    assert all("log_prob_sum" in site for name, site in model_trace.nodes.items()
               if site["type"] == "sample" and site["is_observed"])
