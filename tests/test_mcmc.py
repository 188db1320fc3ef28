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
    """Correlated Gaussian, only 8 chains (the cross-chain mass estimate rests on few chains):
    mean within 5 standard errors (from ArviZ's ESS), covariance within a few percent."""
    seed_everything(0)
    cov = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.7]])
    mu = torch.tensor([1.0, -1.0, 0.5])
    prec = torch.linalg.inv(cov)
    energy = lambda z: 0.5 * (((z - mu) @ prec) * (z - mu)).sum(-1)  # noqa: E731
    hmc = PersistentHMC(energy, torch.randn(8, 3), step_size=0.2, num_steps=8, warmup=200, keep=1000)
    hmc.step(1200)
    d = hmc.diagnostics()
    draws = hmc.draws.reshape(-1, 3)
    se = (cov.diagonal() / d["min_ess_bulk"]).sqrt()
    assert ((draws.mean(0) - mu).abs() < 5 * se).all(), (draws.mean(0), mu, se)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.08, rtol=0.05)
    assert d["max_rhat"] < 1.02 and d["min_ess_bulk"] > 1000 and d["divergences"] == 0, d
    assert d["mixing_ok"] and d["warnings"] == "", d
    assert 0.7 < d["acceptance_rate"] < 0.9 and d["chains"] == 8 and d["draws_per_chain"] == 1000


# The audit's setting (issue 12): E(z) = 1/2 * 1.7 * |z|^2 in 3-d, 256 chains, step 0.3, 8 leapfrog
# steps. omega = sqrt(1.7), and the leapfrog turns by acos(1 - (0.3 omega)^2 / 2) per step: 8 steps
# make 3.1495 rad, within 0.01 of pi, so a fixed trajectory maps z to about -z every transition.
AUDIT_LAMBDA, AUDIT_CHAINS, AUDIT_STEP, AUDIT_STEPS = 1.7, 256, 0.3, 8


def audit_energy(z):
    return 0.5 * AUDIT_LAMBDA * z.pow(2).sum(-1)


def lag1(x: torch.Tensor) -> float:
    """Lag-1 autocorrelation of ``x (chains, draws)`` around the pooled mean."""
    x = x - x.mean()
    return float((x[:, 1:] * x[:, :-1]).mean() / (x * x).mean())


def test_adaptive_jittered_hmc_mixes_the_squared_norm_of_the_audit_quadratic():
    """The default sampler on the audit's setting: |z|^2 decorrelates (lag-1 autocorrelation below
    0.5; the old summed-potential Pyro HMC gave 0.994) and the variance is exact to 5 % and to
    5 standard errors. 1,000 kept draws as in the audit; warm-up 300 transitions."""
    seed_everything(12)
    init = torch.randn(AUDIT_CHAINS, 3, dtype=torch.float64)  # not the target's scale
    hmc = PersistentHMC(audit_energy, init, step_size=AUDIT_STEP, num_steps=AUDIT_STEPS, warmup=300, keep=1000)
    hmc.step(1300)
    d = hmc.diagnostics()
    z = hmc.draws  # (C, S, D)
    sq = z.pow(2).sum(-1)
    assert lag1(sq) < 0.5, lag1(sq)
    assert d["lag1_autocorr_sqnorm"] < 0.5 and d["lag1_autocorr_energy"] < 0.5, d
    var, exact = z.reshape(-1, 3).var(0), 1 / AUDIT_LAMBDA
    # z_i^2 decorrelates like |z|^2 here (isotropic): its ESS is about ess_bulk_sqnorm, and
    # Var(z_i^2) = 2 sigma^4 gives the standard error of the variance.
    se = exact * math.sqrt(2 / d["ess_bulk_sqnorm"])
    assert ((var - exact).abs() < 0.05 * exact).all() and ((var - exact).abs() < 5 * se).all(), (var, exact, se)
    assert d["mixing_ok"] and d["divergences"] == 0, d
    assert d["mean_leapfrog_steps"] <= AUDIT_STEPS  # cheaper than the resonant fixed trajectory


def test_a_resonant_fixed_trajectory_is_flagged_although_per_coordinate_ess_is_huge():
    """Plain HMC (no adaptation, no jitter) at the resonant setting, started from exact draws:
    coordinates alternate sign, so ArviZ counts more effective draws per coordinate than draws,
    while |z|^2 and the energy do not move. The energy and |z|^2 diagnostics must say so."""
    seed_everything(13)
    init = torch.randn(AUDIT_CHAINS, 3, dtype=torch.float64) / math.sqrt(AUDIT_LAMBDA)
    hmc = PersistentHMC(audit_energy, init, step_size=AUDIT_STEP, num_steps=AUDIT_STEPS, warmup=0, keep=400,
                        jitter=0.0, adapt_step_size=False, adapt_trajectory=False, adapt_mass=False)
    hmc.step(400)
    d = hmc.diagnostics()
    draws = AUDIT_CHAINS * 400
    per_1000 = {k: 1000 * d[k] / draws for k in ("min_ess_bulk", "ess_bulk_sqnorm", "ess_bulk_energy")}
    msg = f"per 1000 draws: {per_1000}; diagnostics {d}"
    assert d["step_size"] == AUDIT_STEP and d["mean_leapfrog_steps"] == AUDIT_STEPS, msg  # plain HMC
    assert per_1000["min_ess_bulk"] > 1000, msg  # antithetic: more "effective" draws than draws
    assert per_1000["ess_bulk_sqnorm"] < 10 and per_1000["ess_bulk_energy"] < 10, msg
    assert d["lag1_autocorr_sqnorm"] > 0.95 and not d["mixing_ok"], msg
    assert "resonant" in d["warnings"] and "|z - mean|^2" in d["warnings"], msg


class DoubleWell(nn.Module):
    """E(z) = a sum_i (z_i^2 - 1)^2: independent non-Gaussian coordinates with exact draws by
    inverse CDF on a fine grid and moments by quadrature."""

    def __init__(self, a: float = 2.0):
        super().__init__()
        self.a = a
        x = torch.linspace(-3.5, 3.5, 200_001, dtype=torch.float64)
        w = torch.exp(-a * (x * x - 1) ** 2)
        cdf = torch.cumsum((w[1:] + w[:-1]) / 2, 0)
        self.x, self.cdf = x, torch.cat([torch.zeros(1, dtype=torch.float64), cdf / cdf[-1]])
        p = w / w.sum()
        self.moments = {k: float((p * x**k).sum()) for k in (2, 4)}

    def forward(self, z):
        return self.a * ((z * z - 1) ** 2).sum(-1)

    def exact_draws(self, *shape):
        u = torch.rand(*shape, dtype=torch.float64)
        i = torch.searchsorted(self.cdf, u).clamp(1, len(self.x) - 1)
        c0, c1 = self.cdf[i - 1], self.cdf[i]
        return self.x[i - 1] + (u - c0) / (c1 - c0) * (self.x[i] - self.x[i - 1])


@pytest.mark.parametrize("inv_mass", [(1.0, 1.0), (0.5, 2.0), ((1.0, 0.6), (0.6, 0.8))])
def test_per_chain_transitions_leave_a_non_gaussian_target_invariant(inv_mass):
    """Chains started from exact draws stay exact: after 5 jittered transitions with a large step
    (acceptance 0.6 to 0.85, so the Metropolis correction matters: accepting every non-divergent
    proposal puts E z^2 and E z^4 5 to 70 standard errors off), E z^2 and E z^4 of every
    coordinate over 20,000 independent chains match the quadrature within 4 standard errors."""
    seed_everything(14)
    target = DoubleWell()
    chains = 20_000
    hmc = PersistentHMC(target, target.exact_draws(chains, 2), step_size=0.3, num_steps=3, warmup=0, keep=0,
                        jitter=0.3, adapt_step_size=False, adapt_trajectory=False, adapt_mass=False)
    hmc.inv_mass = torch.tensor(inv_mass, dtype=torch.float64)
    z = hmc.step(5)
    d = hmc.diagnostics()
    assert 0.4 < d["acceptance_rate"] < 0.9, d
    for k, exact in target.moments.items():
        values = z**k
        se = values.std(0) / math.sqrt(chains)
        assert ((values.mean(0) - exact).abs() < 4 * se).all(), (k, values.mean(0), exact, se)


def correlated_gaussian(d: int, rho: float, scales):
    """Equicorrelated Gaussian with per-coordinate ``scales``: covariance and energy."""
    corr = torch.full((d, d), rho, dtype=torch.float64).fill_diagonal_(1.0)
    s = torch.as_tensor(scales, dtype=torch.float64)
    cov = corr * s[:, None] * s[None, :]
    prec = torch.linalg.inv(cov)
    return cov, lambda z: 0.5 * ((z @ prec) * z).sum(-1)


def test_dense_mass_mixes_a_correlated_target_at_a_fraction_of_the_diagonal_mass_cost():
    """6-d Gaussian, correlation 0.95 between all coordinates, scales 1..3 (the trained NN-MRF
    prior's coordinates correlate at +-0.8), 64 chains. Both masses mix, but the diagonal one
    needs long trajectories across the narrow directions (measured: 19 leapfrog steps per
    transition, energy ESS 235 per 1000 draws) where the dense one whitens the target (2 steps,
    538): per gradient evaluation the dense mass is over 5x as efficient. Its draws have the
    target's covariance to 5 %."""
    cov, energy = correlated_gaussian(6, 0.95, torch.linspace(1.0, 3.0, 6))
    per_gradient = {}
    for dense in (False, True):
        seed_everything(21)
        hmc = PersistentHMC(energy, torch.randn(64, 6, dtype=torch.float64), step_size=0.1, num_steps=8,
                            warmup=200, keep=300, dense_mass=dense)
        hmc.step(500)
        d = hmc.diagnostics()
        assert d["mixing_ok"] and d["divergences"] == 0, (dense, d)
        per_gradient[dense] = d["ess_bulk_energy"] / d["mean_leapfrog_steps"]
    assert hmc.inv_mass.shape == (6, 6)
    torch.testing.assert_close(torch.cov(hmc.draws.reshape(-1, 6).T), cov, atol=0.0, rtol=0.05)
    assert per_gradient[True] > 5 * per_gradient[False], per_gradient


def test_a_restarted_warmup_readapts_to_a_moved_energy_and_clears_the_draws():
    """After the energy's scale grows 3x (as an NN-MRF prior's does in training) the mass
    adapted to the old energy is 9x too heavy; restart_warmup adapts to the new one (inverse
    mass within 30 % of 9), and the diagnostics then cover the new draws alone."""
    seed_everything(22)
    scale = {"s": 1.0}
    energy = lambda z: 0.5 * (z / scale["s"]).pow(2).sum(-1)  # noqa: E731
    hmc = PersistentHMC(energy, torch.randn(32, 4, dtype=torch.float64), warmup=200, keep=100)
    hmc.step(300)
    assert ((hmc.inv_mass - 1.0).abs() < 0.3).all(), hmc.inv_mass
    scale["s"] = 3.0
    hmc.step(100)
    assert hmc.draws_per_chain == 100 and ((hmc.inv_mass - 1.0).abs() < 0.3).all()  # frozen
    hmc.restart_warmup(200)
    assert hmc.draws_per_chain == 0 and hmc.transitions == 400 and hmc.warmup == 600
    hmc.step(250)
    d = hmc.diagnostics()
    assert d["draws_per_chain"] == 50 and ((hmc.inv_mass / 9.0 - 1.0).abs() < 0.3).all(), hmc.inv_mass
    var = hmc.draws.reshape(-1, 4).var(0)
    assert ((var / 9.0 - 1).abs() < 0.25).all(), var
    with pytest.raises(ValueError, match="warmup"):
        hmc.restart_warmup(-1)


def test_the_sampler_follows_a_changing_energy_and_leaves_its_parameters_alone():
    """Nothing about the energy is cached across step() calls: after the energy's mean moves the
    chains follow; step() works under no_grad and puts no gradient on the energy's parameters."""
    seed_everything(15)
    energy = GaussianEnergy(MU, LAM)
    hmc = PersistentHMC(energy, torch.zeros(64, 2, dtype=torch.float64), warmup=100, keep=100)
    with torch.no_grad():  # as a caller may: the sampler enables the gradient it needs itself
        hmc.step(100)
        energy.mu.add_(3.0)  # the training step changed the energy
        hmc.step(100)
    assert energy.mu.grad is None and energy.log_lam.grad is None
    sd = torch.tensor(LAM, dtype=torch.float64).rsqrt()
    se = sd / math.sqrt(hmc.diagnostics()["min_ess_bulk"])
    assert ((hmc.draws[:, -50:].reshape(-1, 2).mean(0) - energy.mu.detach()).abs() < 6 * se * math.sqrt(2)).all()


def test_diagnostics_are_plain_values_and_inference_data_carries_energy_and_sqnorm():
    import arviz as az

    seed_everything(16)
    hmc = PersistentHMC(audit_energy, torch.randn(16, 3, dtype=torch.float64), warmup=50, keep=40)
    assert math.isnan(hmc.diagnostics()["max_rhat"]) and not hmc.diagnostics()["mixing_ok"]
    hmc.step(90)
    d = hmc.diagnostics()
    expected = {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "acceptance_rate", "step_size",
                "draws_per_chain", "chains", "rhat_energy", "ess_bulk_energy", "rhat_sqnorm", "ess_bulk_sqnorm",
                "lag1_autocorr_energy", "lag1_autocorr_sqnorm", "trajectory_length", "mean_leapfrog_steps",
                "kernels", "mixing_ok", "warnings"}
    assert set(d) == expected
    assert all(type(v) in (float, int, bool, str) for v in d.values()), {k: type(v) for k, v in d.items()}
    assert d["draws_per_chain"] == 40 and hmc.draws.shape == (16, 40, 3)
    data = hmc.inference_data()
    assert {"z", "energy", "sqnorm"} <= set(data.posterior) and {"lp", "diverging"} <= set(data.sample_stats)
    torch.testing.assert_close(torch.as_tensor(data.posterior["energy"].values), audit_energy(hmc.draws))
    summary = az.summary(data, var_names=["energy", "sqnorm"])
    assert list(summary.index) == ["energy", "sqnorm"] and summary["ess_bulk"].notna().all()
    with pytest.raises(ValueError, match="jitter"):
        PersistentHMC(audit_energy, torch.zeros(2, 3), jitter=1.0)


def test_the_recorded_hamiltonian_is_the_energy_plus_a_stationary_kinetic_energy():
    """``sample_stats.energy`` (what ArviZ's BFMI reads) is the Hamiltonian of the kept state:
    at least the potential energy, and for a 6-d Gaussian target at stationarity the kinetic
    part ``H - E`` averages ``d / 2 = 3`` (its law is chi^2_6 / 2 whether the proposal was
    accepted or the fresh momentum kept) within 4 standard errors."""
    seed_everything(21)
    d = 6
    hmc = PersistentHMC(lambda z: 0.5 * (z * z).sum(-1), torch.randn(128, d, dtype=torch.float64), warmup=100,
                        keep=300)
    hmc.step(400)
    data = hmc.inference_data()
    kinetic = data.sample_stats["energy"].values - data.posterior["energy"].values
    assert (kinetic >= 0).all()
    per_chain = kinetic.mean(1)  # chains are independent: the standard error from their spread
    se = per_chain.std(ddof=1) / math.sqrt(len(per_chain))
    assert abs(per_chain.mean() - d / 2) < 4 * se, (per_chain.mean(), se)


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
    draws = hmc.draws.reshape(-1, 2)
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


class ShiftedGaussianEnergy(GaussianEnergy):
    """GaussianEnergy plus a free constant ``c`` (the level of E, which the law ignores)."""

    def __init__(self, mu, lam, c=0.0):
        super().__init__(mu, lam)
        self.c = nn.Parameter(torch.tensor(float(c), dtype=torch.float64))

    def forward(self, z):
        return super().forward(z) + self.c


def test_the_square_penalty_flattens_the_true_law():
    """Data and chains both exact draws of the energy's own law and the level c set so that the
    mean energy is 0. "square" (E^2 per datum and per chain) is a sum over single draws, so
    passing the same draws as data and chains changes no expectation and cancels the data and
    log Z terms exactly: the gradient in (mu, log lam) is the penalty's alone. It pushes log lam
    down, widening the law: with dE/dlog lam_i = chi_i^2 / 2 and the penalty counted at the data
    and the chains, per coordinate -2 penalty E[E chi_i^2] = -penalty E[chi^4 - chi^2] =
    -2 penalty (chi^2 of one degree of freedom), estimated here on 200,000 draws. (The "level"
    form multiplies draws together, so its test needs independent data and chains:
    tests/models/test_nnmrf.py.)"""
    seed_everything(4)
    energy = ShiftedGaussianEnergy(MU, LAM)
    z = energy.exact_draws(200_000)
    with torch.no_grad():
        energy.c.fill_(-float((energy(z) - energy.c).mean()))  # mean energy 0 on these draws
    EnergyMRF(energy, z, penalty=0.5, penalty_form="square").log_prob(z).mean().backward()
    # the cross terms between the two coordinates vanish in expectation.
    assert (energy.log_lam.grad < 0).all()
    torch.testing.assert_close(energy.log_lam.grad, torch.full((2,), -1.0, dtype=torch.float64), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="penalty_form"):
        EnergyMRF(energy, z, penalty=0.5, penalty_form="cubic")


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
    law = prior()  # per-chain decisions: some of 8 chains move in 2 transitions
    assert not torch.equal(prior.chains, before) and law.event_shape == (4,)
    for _ in range(4):  # past the warm-up of 5 transitions
        prior()
    assert prior._sampler().max_steps == 16  # 2 x num_steps: the cost of a training step is capped
    prior.eval()
    kept = prior.chains.clone()
    prior()
    assert torch.equal(prior.chains, kept)  # evaluation does not move the chains
    draws = prior.sample(20, thin=2)
    assert draws.shape == (20, 4) and torch.isfinite(draws).all()
    assert math.isfinite(prior.diagnostics()["max_rhat"])


def test_prior_warms_its_sampler_up_again_in_training_and_before_the_fixed_parameter_draws():
    """readapt_every=6: after 5 warm-up and 6 recorded transitions the next training call starts
    a new 5-transition warm-up (the kept draws stay); inference_data(transitions) after training
    warms up once more and keeps only the fixed-parameter draws."""
    seed_everything(5)
    prior = NeuralMRFPrior(2, 2, hidden=(8,), num_chains=8, transitions=1, warmup=5, readapt_every=6,
                           dense_mass=True, penalty_form="level")
    hmc = prior._sampler()
    for _ in range(11):
        prior()
    assert hmc.transitions == 11 and hmc.warmup == 5 and hmc.draws_per_chain == 6
    prior()  # 11 >= 5 + 6: a new warm-up of 5 transitions, then this call's transition
    assert hmc.warmup == 16 and hmc.draws_per_chain == 6
    for _ in range(6):
        prior()
    assert hmc.transitions == 18 and hmc.draws_per_chain == 8
    idata = prior.inference_data(10)
    assert hmc.transitions == 33 and hmc.warmup == 23 and hmc.draws_per_chain == 10
    assert idata.posterior["z"].shape == (8, 10, 4)
    with pytest.raises(ValueError, match="readapt_every"):
        NeuralMRFPrior(2, 2, readapt_every=-1)


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
    # ... with the energy and |z - mean|^2 diagnostics; mixing_ok as 0/1, the warnings text left out.
    assert {"chain_ess_bulk_energy", "chain_ess_bulk_sqnorm", "chain_lag1_autocorr_energy",
            "chain_mixing_ok", "chain_trajectory_length"} <= set(rows[0]) and "chain_warnings" not in rows[0]
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


def test_conditioning_with_one_chain_per_datum_matches_the_gaussian_conditional():
    """num_samples=1 (how MCVAE.condition draws): one chain per datum, the chains' data spread
    over many conditional standard deviations, fixed quarter-period trajectory. The residuals
    z1 + 0.4 z0 of 4000 independent chains are N(0, 1/2): mean and variance within 4 standard
    errors."""

    class Coupled(nn.Module):
        def forward(self, z):
            return 0.5 * (1.0 * z[:, 0] ** 2 + 1.6 * z[:, 0] * z[:, 1] + 2.0 * z[:, 1] ** 2)

    seed_everything(5)
    prior = NeuralMRFPrior(2, 1, hidden=(4,))
    prior.energy = Coupled()
    n = 4000
    z0 = 2.0 * torch.randn(n, 1)  # conditional means -0.4 z0: spread 0.8 against an sd of 0.71
    draws = prior.condition({0: z0}, num_samples=1)
    assert draws.shape == (1, n, 1)
    residual = (draws[0] + 0.4 * z0)[:, 0]
    assert abs(float(residual.mean())) < 4 * math.sqrt(0.5 / n), float(residual.mean())
    assert abs(float(residual.var()) - 0.5) < 4 * 0.5 * math.sqrt(2 / n), float(residual.var())
    assert prior.last_condition_diagnostics["trajectory_length"] == pytest.approx(math.pi / 2, rel=0.02)
