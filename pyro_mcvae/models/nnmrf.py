"""The NN-MRF MCVAE (experimental): the GMRF's posterior under a prior whose unary and pairwise
potentials are neural networks.

``p(z) = exp(-E_theta(z)) / Z(theta)`` with ``E`` a sum of per-component and per-edge MLP
potentials and a quadratic confinement; ``Z`` is intractable, so the prior's gradient uses
``grad log Z = -E_p[grad E]`` estimated from persistent HMC chains (:mod:`pyro_mcvae.mcmc`),
whose health is reported through ArviZ. Generation and conditioning run HMC with observed
blocks fixed. ``q(z | x)`` is :class:`~pyro_mcvae.models.gmrf.GMRFGuide`; the KL has no closed
form, so the default objective is ``"trace"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
import pyro.distributions as dist
from torch.distributions import constraints

from ..distributions import GMRF, SampledCompletion
from ..mcmc import PersistentHMC
from ..nets import StackedMLP
from .checks import boolean, field_problems, non_negative_int, non_negative_number, one_of, positive_int, sizes
from .gmrf import BlockPosteriorConfig, GMRFGuide, block_model, gmrf_guide
from .layouts import BlockLatentVAE

__all__ = ["EnergyMRF", "NNMRFConfig", "NNMRFGuide", "NeuralMRFEnergy", "NeuralMRFPrior", "build_nnmrf"]


class NeuralMRFEnergy(nn.Module):
    """``E(z) = sum_i psi_i(z_i) + sum_{(i,j) in edges} psi_ij(z_i, z_j) + (c/2) |z|^2``.

    ``psi_i`` (``d -> 1``) and ``psi_ij`` (``2d -> 1``) are MLPs with SiLU activations, which
    grow at most linearly, so the quadratic confinement ``c > 0`` keeps ``exp(-E)`` integrable.
    ``graph``: optional symmetric bool ``(M, M)``; default all pairs.
    """

    def __init__(self, num_components: int, component_dim: int, hidden=(32,), graph=None,
                 confinement: float = 0.5):
        super().__init__()
        if not confinement > 0:
            raise ValueError(f"confinement must be positive (normalisability), got {confinement!r}")
        m, d = num_components, component_dim
        self.num_components, self.component_dim, self.confinement = m, d, float(confinement)
        mask = torch.ones(m, m, dtype=torch.bool) if graph is None else torch.as_tensor(graph, dtype=torch.bool)
        if mask.shape != (m, m) or not torch.equal(mask, mask.T):
            raise ValueError(f"graph must be a symmetric bool ({m}, {m}) matrix")
        rows, cols = torch.triu_indices(m, m, 1)
        keep = mask[rows, cols]
        self.register_buffer("rows", rows[keep], persistent=False)
        self.register_buffer("cols", cols[keep], persistent=False)
        self.unary = StackedMLP(m, d, hidden, 1)
        self.pair = StackedMLP(max(int(keep.sum()), 1), 2 * d, hidden, 1) if keep.any() else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Energies ``(...)`` of ``z (..., M*d)``."""
        blocks = z.reshape(*z.shape[:-1], self.num_components, self.component_dim)
        energy = self.unary(blocks).sum((-2, -1)) + 0.5 * self.confinement * z.pow(2).sum(-1)
        if self.pair is not None:
            pairs = torch.cat([blocks[..., self.rows, :], blocks[..., self.cols, :]], -1)
            energy = energy + self.pair(pairs).sum((-2, -1))
        return energy


class EnergyMRF(dist.TorchDistribution):
    """``p(z) = exp(-E(z)) / Z`` as a Pyro site's law, for training: ``log_prob`` is ``-E(z)``
    plus a zero-valued term whose gradient is ``-grad log Z`` estimated from prior ``samples``
    (so the value lacks ``-log Z``, which is unknown, but every gradient is right).

    ``penalty > 0`` subtracts an energy regulariser from every datum's value. ``"level"``:
    ``penalty (U_data + U_chains)``, unbiased estimates (:func:`square_of_mean`) of the squared
    mean energy of the data (``value``'s last batch dim; leading dims, e.g. particles, averaged
    per datum) and of the chains (``samples (C, D)``), so with independent data and chains
    whose energies have mean 0 its expected gradient is 0 for every batch size and ``C``; a term
    with a single draw (one datum, one chain) is 0. ``"square"``: ``penalty (E(z)^2 + mean
    E(z_chain)^2)``."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, energy: NeuralMRFEnergy, samples: torch.Tensor, batch_shape=torch.Size(),
                 conditioner=None, penalty: float = 0.0, penalty_form: str = "level"):
        self.energy, self.samples, self.conditioner = energy, samples, conditioner
        self.penalty, self.penalty_form = float(penalty), check_penalty_form(penalty_form)
        super().__init__(torch.Size(batch_shape), samples.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return EnergyMRF(self.energy, self.samples, batch_shape, self.conditioner, self.penalty, self.penalty_form)

    def condition(self, observed) -> "_SampledConditional":
        """The law of the unobserved blocks given ``{component: value}``, drawn by HMC (see
        :meth:`NeuralMRFPrior.condition`)."""
        if self.conditioner is None:
            raise ValueError("this EnergyMRF has no sampler for conditioning; use NeuralMRFPrior")
        return _SampledConditional(self.conditioner, observed)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # The chain energies serve both the log Z surrogate (log_partition_surrogate: -mean E)
        # and the regulariser, so they are computed once.
        chain_energy = self.energy(self.samples.detach())
        g = -chain_energy.mean()
        energy = self.energy(value)
        out = -energy - (g - g.detach())
        if self.penalty:
            if self.penalty_form == "square":
                # Energy regulariser of EBM training: pins the (otherwise free) level of E and
                # keeps the energies at data and chain samples small, against runaway wells. It
                # also penalises the spread of E over the data, which flattens the learned law.
                out = out - self.penalty * (energy.pow(2) + chain_energy.pow(2).mean())
            else:
                # "level": the squared mean energies of the data and of the chains, so a runaway
                # gap between them is penalised but not the shape of E over either set; a
                # constant (the potentials' biases) can meet it without changing the law. Each
                # square is estimated without bias (a squared sample mean would add Var(E)/n,
                # whose gradient widens the law by 2 penalty Cov(E, grad E) / n at the true law).
                # The data are the last batch dim (the data plate); leading dims (particles)
                # are averaged per datum first, since draws of one datum are not independent.
                per_datum = energy.reshape(-1, energy.shape[-1]).mean(0) if energy.dim() else energy.reshape(1)
                level = square_of_mean(per_datum) + square_of_mean(chain_energy.reshape(-1))
                out = out - self.penalty * level.expand_as(energy)
        return out

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        raise NotImplementedError("draw from an NN-MRF prior with NeuralMRFPrior.sample (HMC)")


PENALTY_FORMS = ("square", "level")


def square_of_mean(draws: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``(E[X])^2`` from ``n`` independent draws ``(n,)``: the U-statistic
    ``sum_{i != j} x_i x_j / (n (n - 1)) = mean^2 - var / n`` (``var`` with ``n - 1``), so its
    expected gradient is ``2 E[X] E[grad X]``, zero where ``E[X] = 0``. It can be negative. One
    draw gives no unbiased square: with ``n < 2`` it is 0 (no value, no gradient)."""
    n = draws.shape[0]
    if n < 2:
        return draws.new_zeros(())
    # The centred variance keeps the value exact to rounding when the mean is near 0.
    return draws.mean().square() - draws.var(correction=1) / n


def check_penalty_form(form: str) -> str:
    if form not in PENALTY_FORMS:
        raise ValueError(f"penalty_form must be one of {PENALTY_FORMS}, got {form!r}")
    return form


class _SampledConditional:
    """``sample((S,))`` runs the conditioner for ``S`` draws per observed tuple."""

    def __init__(self, conditioner, observed):
        self.conditioner, self.observed = conditioner, observed

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        if len(shape) != 1:
            raise ValueError(f"sample_shape must be (num_samples,), got {tuple(shape)}")
        return self.conditioner(self.observed, num_samples=shape[0])


class NeuralMRFPrior(nn.Module):
    """NN-MRF prior with persistent HMC chains for the ``log Z`` gradient.

    Every call of the module in training mode advances the chains by ``transitions`` HMC
    transitions (:class:`~pyro_mcvae.mcmc.PersistentHMC`: per-chain Metropolis decisions;
    during the first ``warmup`` transitions the step size, a diagonal mass and the trajectory
    length adapt) and returns an :class:`EnergyMRF` scored with the new states. :meth:`sample`
    runs the chains for unconditional generation; :meth:`diagnostics` reports ArviZ R-hat and
    ESS per coordinate and of the energy and ``|z - mean|^2``, divergences and ``mixing_ok``.
    ``penalty``: weight of the energy regulariser (0 turns it off; the unregularised estimator
    let the energy run away on the copula data, see the docs); ``penalty_form``: ``"level"``
    (default: unbiased estimates of the squares of the data's and the chains' mean energies,
    which a constant in the energy meets without changing the law, so at the true law the
    expected gradient is 0 for any batch size and ``num_chains >= 2``; see :class:`EnergyMRF`) or
    ``"square"`` (``E(z)^2 + E(z_chain)^2`` per datum, which also penalises the spread of ``E``
    and widens the learned law; on the copula data the latent scale then grew to 3.5-3.9 per
    coordinate instead of 1.8-2.2, docs/results/nn_mrf.md).

    The sampler's defaults come from the copula measurements in docs/results/nn_mrf.md: a dense
    mass (``dense_mass``; the trained prior's coordinates correlate at +-0.8, which a diagonal
    mass leaves at 20 effective draws per 1000) adapted again every ``readapt_every`` training
    transitions (the energy's scale and shape move far from where the first warm-up adapted).

    Sampler options: ``step_size`` (initial), ``num_steps`` (with ``adapt_trajectory=False``
    the trajectory is ``step_size * num_steps``), ``jitter``, ``adapt_trajectory``,
    ``adapt_mass``, ``dense_mass``, ``keep`` (recorded draws per chain for the diagnostics and
    :meth:`inference_data`) as in ``PersistentHMC``; ``max_steps`` caps the leapfrog steps (gradient
    evaluations) per transition, by default ``2 * num_steps``, so a training step costs at most
    twice the fixed ``num_steps`` trajectory (the adapted trajectory is usually far shorter).
    ``readapt_every``: in training, every this many transitions after a warm-up the sampler
    warms up again (step size, mass, trajectory) for the energy as it is then (0: only once).
    ``completion_warmup``: warm-up transitions of :meth:`complete` (absent components in
    training).
    """

    def __init__(self, num_components: int, component_dim: int, hidden=(32,), graph=None,
                 confinement: float = 0.5, num_chains: int = 64, transitions: int = 2,
                 step_size: float = 0.1, num_steps: int = 8, warmup: int = 200, penalty: float = 0.1,
                 jitter: float = 0.3, adapt_trajectory: bool = True, adapt_mass: bool = True,
                 max_steps: int | None = None, keep: int = 1000, penalty_form: str = "level",
                 dense_mass: bool = True, readapt_every: int = 1000, completion_warmup: int = 100):
        super().__init__()
        if readapt_every < 0:
            raise ValueError(f"readapt_every must be >= 0, got {readapt_every!r}")
        if penalty and penalty_form == "level" and num_chains < 2:
            raise ValueError(f"the level penalty needs num_chains >= 2 (one chain gives no unbiased "
                             f"square of the chains' mean energy), got {num_chains!r}")
        if completion_warmup < 0:
            raise ValueError(f"completion_warmup must be >= 0, got {completion_warmup!r}")
        self.readapt_every, self.completion_warmup = int(readapt_every), int(completion_warmup)
        self.penalty, self.penalty_form = float(penalty), check_penalty_form(penalty_form)
        self.energy = NeuralMRFEnergy(num_components, component_dim, hidden, graph, confinement)
        self.num_components, self.component_dim = num_components, component_dim
        self.transitions, self.warmup = transitions, warmup
        self._hmc_args = dict(step_size=step_size, num_steps=num_steps, warmup=warmup, jitter=jitter,
                              adapt_trajectory=adapt_trajectory, adapt_mass=adapt_mass, dense_mass=dense_mass,
                              max_steps=2 * num_steps if max_steps is None else max_steps, keep=keep)
        self.register_buffer("chains", torch.randn(num_chains, num_components * component_dim))
        self._hmc = None

    def _sampler(self) -> PersistentHMC:
        if self._hmc is None or self._hmc.samples.device != self.chains.device:
            self._hmc = PersistentHMC(self.energy, self.chains, **self._hmc_args)
        return self._hmc

    def forward(self) -> EnergyMRF:
        if self.training:
            hmc = self._sampler()
            if self.readapt_every and hmc.transitions >= hmc.warmup + self.readapt_every:
                # The energy has moved since the last adaptation: adapt again (the kept draws stay).
                hmc.restart_warmup(self.warmup, clear=False)
            states = hmc.step(self.transitions)
            self.chains.copy_(states.detach())  # saved with the model, so a resumed run continues
        return EnergyMRF(self.energy, self.chains, conditioner=self.condition, penalty=self.penalty,
                         penalty_form=self.penalty_form)

    @torch.no_grad()
    def sample(self, num_samples: int, thin: int = 5) -> torch.Tensor:
        """``num_samples`` draws ``(num_samples, M*d)`` from the chains, ``thin`` transitions apart."""
        hmc = self._sampler()
        out, need = [], num_samples
        while need > 0:
            states = hmc.step(thin)  # enables the energy's gradient itself
            out.append(states[:need].detach())
            need -= len(out[-1])
        return torch.cat(out)

    def diagnostics(self) -> dict:
        return self._sampler().diagnostics()

    def inference_data(self, transitions: int = 0):
        """The persistent chains' kept draws as ArviZ ``InferenceData`` (``posterior``: ``z``,
        ``energy``, ``sqnorm``; ``sample_stats``: ``lp``, ``energy`` (the Hamiltonian),
        ``acceptance_rate``, ``diverging``); save it with ``.to_netcdf(path)``, read it back with
        ``arviz.from_netcdf(path)``.

        ``transitions``: run the chains this many transitions first, with the parameters as they
        are, after a fresh warm-up of ``warmup`` transitions (the step size, mass and trajectory
        were adapted to the energy as it was early in training), so the draws are the fixed
        parameters' alone. A sampler with fewer than 4 recorded draws (fresh, e.g. after loading a
        checkpoint) first completes its warm-up and records at least 4."""
        hmc = self._sampler()
        if transitions > 0 and hmc.transitions >= hmc.warmup:
            hmc.restart_warmup(self.warmup)
        need = max(transitions, 4 - hmc.draws_per_chain)
        if need > 0:
            hmc.step(max(hmc.warmup - hmc.transitions, 0) + need)  # enables the energy's gradient itself
        return hmc.inference_data()

    def condition(self, observed, num_samples: int = 1, warmup: int = 300, thin: int = 5,
                  step_size: float = 0.05, num_steps: int | None = None) -> torch.Tensor:
        """Draws of the unobserved blocks given ``{component: value (batch, d)}`` by HMC on the
        energy with the observed blocks fixed: ``(num_samples, batch, |B| d)`` in increasing
        component order. One chain per (draw, datum), ``warmup`` transitions, then ``thin``
        transitions; ``last_condition_diagnostics`` keeps the sampler's diagnostics, which pool
        the chains of all data (different laws: R-hat and ESS compare them; divergences and
        acceptance are what they say).

        The chains of one datum share a target and form a group of the warm-up (mass from the
        within-group variance; ChEES centred on the group's mean): a mean pooled over data
        would reward motion along the offset between a datum's mean and the pooled one, which
        is largest at half a period (measured on Gaussian conditionals whose means spread over
        2.3 conditional standard deviations: lag-1 autocorrelation of ``(z - mu)^2`` 0.71 pooled,
        0.24 grouped). With ``num_samples >= 2`` the trajectory is adapted (ChEES). A single chain
        per datum cannot estimate its own mean (centred on its own past, ChEES runs the
        trajectory to the cap), so with ``num_samples=1`` the trajectory is fixed at
        ``step_size * num_steps``, by default ``pi / 2``: a quarter period of a Gaussian once the
        adapted mass matches its variances (in the same test with one chain per datum: 0.40,
        against 0.49 to 0.54 with pooled statistics).
        ``step_size`` is the initial step (adapted)."""
        from ..distributions.gmrf import split_observed

        _, _, ia, ib, z_a = split_observed(observed, self.num_components, self.component_dim,
                                           self.chains)  # z_a: (batch, |A| d)
        d = self.component_dim
        if z_a.dim() != 2:
            raise ValueError("observed values must be (batch, d)")
        batch = z_a.shape[0]
        fixed = z_a.unsqueeze(0).expand(num_samples, -1, -1).reshape(-1, z_a.shape[-1])

        def energy_b(z_b):
            full = z_b.new_empty(z_b.shape[0], self.num_components * d)
            full[:, ia], full[:, ib] = fixed, z_b
            return self.energy(full)

        init = torch.randn(fixed.shape[0], len(ib), dtype=z_a.dtype, device=z_a.device)
        groups = torch.arange(batch, device=z_a.device).repeat(num_samples)  # the datum of each chain
        hmc = self._conditional_hmc(energy_b, init, groups, num_samples >= 2, warmup, thin, step_size, num_steps)
        self.last_condition_diagnostics = hmc.diagnostics()
        return hmc.samples.detach().reshape(num_samples, batch, len(ib))

    def complete(self, z: torch.Tensor, present: torch.Tensor, warmup: int | None = None, thin: int = 5,
                 step_size: float = 0.05, num_steps: int | None = None) -> torch.Tensor:
        """``z (C, M*d)`` with the blocks absent from each row (``present (C, M)`` False) drawn
        from the prior's conditional law given the row's present blocks: ``(C, M*d)``, detached.
        The sampler of :meth:`condition` with one chain per row (``num_samples=1``); rows may
        miss different blocks. ``warmup``: default ``completion_warmup``.

        Each chain moves all ``M d`` coordinates, so that rows of every pattern share one run:
        the energy reads the given values at the present coordinates, and the chain's own values
        there are auxiliary ``N(0, 1)`` variables independent of the rest, which leave the law of
        the absent coordinates the conditional exactly. Rows with every block present are left
        as they are."""
        if present.dtype != torch.bool or present.shape != (z.shape[0], self.num_components):
            raise ValueError(f"present must be bool ({z.shape[0]}, {self.num_components}), got "
                             f"{present.dtype} {tuple(present.shape)}")
        out = z.detach().clone()
        rows = (~present).any(-1).nonzero().flatten()
        if len(rows) == 0:
            return out
        given = present[rows].repeat_interleave(self.component_dim, -1)  # (C', M d)
        fixed = out[rows]

        def energy_padded(state):
            return self.energy(torch.where(given, fixed, state)) + 0.5 * (state * given).pow(2).sum(-1)

        groups = torch.arange(len(rows), device=z.device)  # every row its own target
        warmup = self.completion_warmup if warmup is None else warmup
        hmc = self._conditional_hmc(energy_padded, torch.randn_like(fixed), groups, False, warmup, thin,
                                    step_size, num_steps)
        out[rows] = torch.where(given, fixed, hmc.samples.detach())
        return out

    def _conditional_hmc(self, energy_fn, init, groups, adapt_trajectory: bool, warmup: int, thin: int,
                         step_size: float, num_steps: int | None) -> PersistentHMC:
        """The conditioning sampler (see :meth:`condition`), run for ``warmup + max(4, thin)``
        transitions."""
        if num_steps is None:
            num_steps = max(1, round(math.pi / 2 / step_size))  # T = pi / 2 (see condition)
        # The sampler enables gradients itself, also inside no_grad callers.
        hmc = PersistentHMC(energy_fn, init, step_size=step_size, num_steps=num_steps, warmup=warmup,
                            keep=max(4, thin), jitter=self._hmc_args["jitter"], groups=groups,
                            adapt_trajectory=self._hmc_args["adapt_trajectory"] and adapt_trajectory,
                            adapt_mass=self._hmc_args["adapt_mass"], max_steps=32)
        hmc.step(warmup + max(4, thin))  # at least 4 recorded transitions for the diagnostics
        return hmc


class NNMRFGuide(GMRFGuide):
    """The GMRF posterior, completing absent components from the NN-MRF prior: with components
    absent from a row, ``q(z_A | x_A) p(z_B | z_A)``, the conditional drawn by the prior's HMC
    (:meth:`NeuralMRFPrior.complete`). Its density is intractable, so the law is a
    :class:`~pyro_mcvae.distributions.SampledCompletion`: the ELBO's gradient stays unbiased, the
    loss value leaves out ``E log p(z_B | z_A)``, and importance-weighted objectives refuse it."""

    def _complete(self, loc, covariance, mask) -> SampledCompletion:
        if not isinstance(self.prior_ref, NeuralMRFPrior):
            raise ValueError("NNMRFGuide completes absent components from a NeuralMRFPrior: build it with "
                             "prior=<the model's NeuralMRFPrior>")
        # Absent blocks of the encoders' law are N(0, I) and uncoupled (GMRFGuide._posterior).
        padded = GMRF(loc, covariance_matrix=covariance, num_components=self.num_components,
                      component_dim=self.latent_dim, validate_args=False)
        return SampledCompletion(padded, mask, self.prior_ref.complete, self.latent_dim)


@dataclass
class NNMRFConfig(BlockPosteriorConfig):
    """The NN-MRF MCVAE: the GMRF posterior's fields (``graph`` also limits the prior's pairwise
    potentials), ``potential_hidden`` (the potentials' MLP sizes), ``hmc_warmup`` (the chains'
    warm-up transitions), and the prior's ``energy_penalty``, ``penalty_form``, ``num_chains``,
    ``dense_mass``, ``readapt_every`` and ``completion_warmup`` (:class:`NeuralMRFPrior`)."""

    potential_hidden: tuple = (32,)
    hmc_warmup: int = 200
    energy_penalty: float = 0.1
    penalty_form: str = "level"
    num_chains: int = 64
    dense_mass: bool = True
    readapt_every: int = 1000
    completion_warmup: int = 100

    def problems(self) -> list[str]:
        return super().problems() + field_problems(
            self, potential_hidden=sizes, hmc_warmup=non_negative_int, energy_penalty=non_negative_number,
            penalty_form=one_of(*PENALTY_FORMS), num_chains=positive_int, dense_mass=boolean,
            readapt_every=non_negative_int, completion_warmup=non_negative_int)


def build_nnmrf(component_dims: Sequence[int], config: NNMRFConfig) -> BlockLatentVAE:
    c = config
    prior = NeuralMRFPrior(len(component_dims), c.block_dim, hidden=tuple(c.potential_hidden), graph=c.graph,
                           warmup=c.hmc_warmup, penalty=c.energy_penalty, penalty_form=c.penalty_form,
                           num_chains=c.num_chains, dense_mass=c.dense_mass, readapt_every=c.readapt_every,
                           completion_warmup=c.completion_warmup)
    return block_model(component_dims, c, prior, gmrf_guide(component_dims, c, prior, NNMRFGuide))
