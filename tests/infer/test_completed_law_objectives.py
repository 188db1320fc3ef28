"""The objectives give the same losses and gradients with the factored completed law
(:class:`~pyro_mcvae.distributions.CompletedGMRF`) as with the dense GMRF built before it
(``GMRF(covariance_matrix=H S H^T + C)``): both laws draw through the same map (the dense
reference borrows the factored draw), so what differs is the log density, the entropy and the KL
the objectives read, and how they are computed."""

import pyro
import pytest
import torch

from pyro_mcvae.distributions import GMRF, complete_from_prior
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import SubsetELBO, make_objective
from pyro_mcvae.models import build_model
from pyro_mcvae.models import layouts

M, D = 3, 2


class DenseReference(GMRF):
    """The completed law as one dense GMRF (the construction before CompletedGMRF), drawing with
    the factored law's map so both objectives see the same draws."""

    def rsample(self, sample_shape=torch.Size()):
        return self._factored.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._factored = self._factored.expand(batch_shape)
        return new


def dense_completion(loc, covariance, present, prior, d, groups=None):
    law = complete_from_prior(loc, covariance, present, prior, d, groups=groups)
    ref = DenseReference(law.mean, covariance_matrix=law.covariance_matrix, num_components=present.shape[-1],
                         component_dim=d, validate_args=False)
    ref._factored = law
    return ref


def losses_and_grads(model, objective, x, mask):
    model.zero_grad()
    pyro.set_rng_seed(11)
    loss = objective.loss_and_grads(model.model, model.guide, x, mask=mask)
    return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]


F64, F32 = (torch.float64, 1e-10), (torch.float32, 1e-5)
CASES = [("meanfield", "subsets", F64), ("meanfield", "subsets", F32), ("meanfield", "subsets-coupled", F64),
         ("meanfield", "mask", F32), ("trace", "subsets", F64), ("trace", "mask", F32),
         ("iwae", "subsets", F32), ("dreg", "subsets", F64), ("dreg", "mask", F32)]


@pytest.mark.parametrize("kind,setting,precision", CASES)
def test_losses_and_gradients_equal_the_dense_law(kind, setting, precision, monkeypatch):
    """``subsets``: SubsetELBO (encode_once) with the whole tuple, every component given alone and
    a random pair per datum, with each base objective (``-coupled``: one coupled coordinate per
    block); ``mask``: the base objective on data where a component is absent from some rows."""
    dtype, rtol = precision
    seed_everything(0)
    model = build_model("gmrf", [D] * M, hidden=(8,), block_dim=D,
                        coupled_dims=1 if setting == "subsets-coupled" else None).to(dtype)
    with torch.no_grad():  # couplings in the prior and the posterior
        model.prior.offdiag.normal_(0, 0.5)
        for p in model.guide.global_net.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(6, M, D, dtype=dtype)
    objective, mask = make_objective(kind, num_particles=3 if kind in ("iwae", "dreg") else 1), None
    if setting == "mask":
        mask = torch.ones(6, M, dtype=torch.bool)
        mask[::3, 1] = False
        mask[1, 2] = False
    else:
        rows = torch.cat([torch.ones(1, M, dtype=torch.bool), torch.eye(M, dtype=torch.bool)])
        pairs = torch.tensor([[True, True, False], [False, True, True], [True, False, True]])
        objective = SubsetELBO(objective, rows, num_random=1, pool=pairs, score="all", per_example=True,
                               encode_once=True)
    factored = losses_and_grads(model, objective, x, mask)
    monkeypatch.setattr(layouts, "complete_from_prior", dense_completion)
    dense = losses_and_grads(model, objective, x, mask)
    assert factored[0] == pytest.approx(dense[0], rel=rtol, abs=rtol)
    assert len(factored[1]) == len(dense[1]) > 0
    for got, want in zip(factored[1], dense[1]):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(1.0, float(want.abs().max())))
