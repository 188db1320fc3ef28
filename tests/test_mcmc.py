"""Persistent HMC, the log-partition gradient estimator and the NN-MRF energy."""

import math

import pytest
import torch
from torch import nn

from pyro_mcvae.infer import seed_everything
from pyro_mcvae.mcmc import PersistentHMC, log_partition_surrogate
from pyro_mcvae.models.nnmrf import EnergyMRF, NeuralMRFEnergy, NeuralMRFPrior


class GaussianEnergy(nn.Module):
    """E(z) = 1/2 sum_i lam_i (z_i - mu_i)^2: log Z = sum_i 1/2 log(2 pi / lam_i), so
    d log Z / d mu = 0 and d log Z / d lam_i = -1 / (2 lam_i)."""

    def __init__(self, mu, lam):
        super().__init__()
        self.mu = nn.Parameter(torch.as_tensor(mu, dtype=torch.float64))
        self.log_lam = nn.Parameter(torch.as_tensor(lam, dtype=torch.float64).log())

    def forward(self, z):
        return 0.5 * (self.log_lam.exp() * (z - self.mu) ** 2).sum(-1)

    @torch.no_grad()
    def exact_draws(self, n):
        return torch.randn(n, len(self.mu), dtype=torch.float64) * (-0.5 * self.log_lam).exp() + self.mu


MU, LAM = [0.3, -1.0], [2.0, 0.5]


def test_hmc_on_a_quadratic_energy_reproduces_the_gaussian_with_good_diagnostics():
    seed_everything(0)
    cov = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.7]])
    mu = torch.tensor([1.0, -1.0, 0.5])
    prec = torch.linalg.inv(cov)
    energy = lambda z: 0.5 * (((z - mu) @ prec) * (z - mu)).sum(-1)  # noqa: E731
    hmc = PersistentHMC(energy, torch.randn(8, 3), step_size=0.2, num_steps=8, warmup=200, keep=1000)
    hmc.step(1200)
    draws = torch.stack(hmc._draws, 1).reshape(-1, 3)
    torch.testing.assert_close(draws.mean(0), mu, atol=0.08, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.12, rtol=0.08)
    d = hmc.diagnostics()
    assert d["max_rhat"] < 1.02 and d["min_ess_bulk"] > 500 and d["divergences"] == 0
    assert 0.5 < d["acceptance_rate"] < 1.0 and d["chains"] == 8


def test_log_partition_gradient_matches_the_closed_form():
    seed_everything(1)
    energy = GaussianEnergy(MU, LAM)
    log_partition_surrogate(energy, energy.exact_draws(200_000)).backward()
    # d log Z / d log lam_i = lam_i * (-1 / (2 lam_i)) = -1/2; d log Z / d mu = 0.
    torch.testing.assert_close(energy.log_lam.grad, torch.full((2,), -0.5, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(energy.mu.grad, torch.zeros(2, dtype=torch.float64), atol=0.01, rtol=0)
    # The same from persistent HMC chains instead of exact draws.
    energy.zero_grad()
    hmc = PersistentHMC(energy, torch.zeros(16, 2, dtype=torch.float64), step_size=0.3, num_steps=6,
                        warmup=150, keep=600)
    hmc.step(750)
    draws = torch.stack(hmc._draws, 1).reshape(-1, 2)
    energy.zero_grad()
    log_partition_surrogate(energy, draws).backward()
    torch.testing.assert_close(energy.log_lam.grad, torch.full((2,), -0.5, dtype=torch.float64), atol=0.05, rtol=0)


def test_energy_law_log_prob_has_the_normalised_gradient():
    """For a Gaussian energy, grad of EnergyMRF.log_prob equals grad of the exact Normal log density."""
    seed_everything(2)
    energy = GaussianEnergy(MU, LAM)
    samples = energy.exact_draws(400_000)
    z = torch.tensor([[0.7, 0.1], [-0.4, -2.0]], dtype=torch.float64)
    EnergyMRF(energy, samples).log_prob(z).sum().backward()
    got = energy.log_lam.grad.clone()
    log_lam = torch.tensor(LAM, dtype=torch.float64).log().requires_grad_()
    exact = torch.distributions.Normal(torch.tensor(MU, dtype=torch.float64), (-0.5 * log_lam).exp())
    exact.log_prob(z).sum().backward()
    torch.testing.assert_close(got, log_lam.grad, atol=0.02, rtol=0)
    value = EnergyMRF(energy, samples).log_prob(z)
    torch.testing.assert_close(value, -energy(z))  # the surrogate term adds nothing to the value


def test_neural_energy_respects_the_graph_and_confinement():
    energy = NeuralMRFEnergy(3, 2, hidden=(8,), graph=torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]]).bool())
    assert energy.rows.tolist() == [0] and energy.cols.tolist() == [1]
    z = torch.randn(5, 6)
    assert energy(z).shape == (5,)
    far = 1e3 * torch.randn(4, 6)
    assert (energy(far) > 1e4).all()  # the quadratic term dominates far away
    with pytest.raises(ValueError, match="confinement"):
        NeuralMRFEnergy(2, 2, confinement=0.0)
    with pytest.raises(ValueError, match="symmetric"):
        NeuralMRFEnergy(2, 2, graph=torch.tensor([[1, 1], [0, 1]]).bool())


def test_prior_advances_its_chains_in_training_and_samples():
    seed_everything(3)
    prior = NeuralMRFPrior(2, 2, hidden=(8,), num_chains=8, transitions=2, warmup=5)
    before = prior.chains.clone()
    for _ in range(10):  # the chains share one accept/reject step, so one call may not move them
        law = prior()
    assert not torch.equal(prior.chains, before) and law.event_shape == (4,)
    prior.eval()
    kept = prior.chains.clone()
    prior()
    assert torch.equal(prior.chains, kept)  # evaluation does not move the chains
    draws = prior.sample(20, thin=2)
    assert draws.shape == (20, 4) and torch.isfinite(draws).all()
    assert math.isfinite(prior.diagnostics()["max_rhat"])


def test_gmrf_guide_with_an_nn_mrf_prior_trains_and_generates(copula_tensor, tmp_path):
    from pyro_mcvae import TrainConfig, build_model, fit

    seed_everything(0)
    model = build_model("nnmrf", [2] * 4, block_dim=2, hidden=(16,), potential_hidden=(16,),
                        hmc_warmup=10)  # short warm-up: diagnostics from epoch 2
    result = fit(model, copula_tensor[:512], TrainConfig(epochs=5, batch_size=128, lr=3e-3, elbo="trace"),
                 progress=False, out_dir=tmp_path)
    assert result.losses[-1] < result.losses[0] - 0.5, result.losses
    # The chains' ArviZ diagnostics are logged every epoch (NaN until 4 draws are recorded).
    import csv

    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 5 and {"chain_max_rhat", "chain_min_ess_bulk", "chain_divergences"} <= set(rows[0])
    last = rows[-1]
    assert float(last["chain_max_rhat"]) >= 0.99 and float(last["chain_min_ess_bulk"]) > 0
    assert int(last["chain_divergences"]) >= 0 and "chain_max_rhat" in result.history[-1]
    model.eval()
    out = model.sample(16)
    assert [o.shape for o in out] == [(16, 2)] * 4 and all(torch.isfinite(o).all() for o in out)
    out = model.condition({0: copula_tensor[:3, 0]}, num_samples=2)
    assert [o.shape for o in out] == [(2, 3, 2)] * 4 and all(torch.isfinite(o).all() for o in out)
    torch.testing.assert_close(out[0], copula_tensor[:3, 0].expand(2, 3, 2))


def test_conditioning_an_energy_prior_by_hmc_matches_the_gaussian_conditional():
    """With a quadratic energy 1/2 z^T P z (P coupling two 1-d blocks) in place of the neural one,
    z1 | z0 is N(-P10 / P11 z0, 1 / P11) in closed form."""

    class Coupled(nn.Module):
        def forward(self, z):
            return 0.5 * (1.0 * z[:, 0] ** 2 + 1.6 * z[:, 0] * z[:, 1] + 2.0 * z[:, 1] ** 2)

    seed_everything(4)
    prior = NeuralMRFPrior(2, 1, hidden=(4,))
    prior.energy = Coupled()
    z0 = torch.tensor([[2.0], [-1.0]])
    draws = prior.condition({0: z0}, num_samples=800, warmup=200, thin=3)
    assert draws.shape == (800, 2, 1)
    torch.testing.assert_close(draws.mean(0), -0.8 / 2.0 * z0, atol=0.08, rtol=0)
    torch.testing.assert_close(draws.var(0), torch.full((2, 1), 0.5), atol=0.08, rtol=0)
    assert prior.last_condition_diagnostics["divergences"] == 0
