"""MCMC for energy-based (MRF) priors: persistent HMC chains and the log-partition gradient.

For a prior ``p(z) = exp(-E_theta(z)) / Z(theta)`` the partition function is intractable, but
its gradient is an expectation under the prior:

    grad_theta log Z = -E_p[grad_theta E_theta(z)],

estimated from samples of ``p``. :class:`PersistentHMC` keeps ``C`` HMC chains alive across
training steps (a few transitions per step instead of a fresh warm-up), and
:func:`log_partition_surrogate` turns their states into a term whose gradient is the estimate.

The sampler
-----------
A vectorised HMC written in torch, one state ``z (C, D)`` for the ``C`` chains, which replaces
Pyro's ``HMC`` kernel for two reasons:

* **Per-chain decisions.** Pyro's kernel works on one state; run on the summed potential of
  ``C`` chains it makes one Metropolis decision for all of them, whose acceptance probability is
  that of a ``C * D``-dimensional proposal: it falls as ``C`` grows, and the step size adaptation
  shrinks the steps to compensate. Here every chain is accepted or rejected on its own.
* **Trajectory length for parallel chains.** With a fixed number of leapfrog steps and a step
  size adapted only for acceptance, the integration time ``T`` can land near half an oscillation
  period of a near-quadratic energy: the proposal is then close to ``z -> 2 m - z`` (a point
  reflection through the mean ``m``), every coordinate alternates sign, and ``|z - m|^2`` (hence
  the energy) hardly moves. For the isotropic Gaussian with frequency ``omega``, an exact
  trajectory of angle ``theta = omega T`` and a full momentum refresh give
  ``corr(|z_t|^2, |z_{t+1}|^2) = E[cos^2 theta]``, which is 1 at ``theta = pi``. ``T`` is therefore
  adapted during the warm-up, and jittered, as below.

One transition from ``z`` (rows are chains; the inverse mass ``M^-1 = diag(s^2)`` is shared):

1. ``p ~ N(0, M)``. Per-chain trajectory length ``T_c = T u_c``, ``u_c ~ U(1 - j, 1 + j)``
   (the jitter ``j``), integrated in ``L_c = ceil(T_c / eps)`` leapfrog steps of
   ``h_c = T_c / L_c <= eps`` (``T_c`` is capped at ``max_steps eps``).
2. Leapfrog: ``p -= h_c/2 grad E(z)``, then ``L_c`` times ``z += h_c M^-1 p``,
   ``p -= h_c grad E(z)`` (the last momentum update halved). All chains run
   ``max_c L_c <= ceil(T (1 + j) / eps)`` steps; a chain past its ``L_c`` stays where it is.
3. Per-chain Metropolis: with ``H = E(z) + p^T M^-1 p / 2``, accept ``z'`` with probability
   ``alpha_c = min(1, exp(H(z, p) - H(z', p')))``. A chain whose ``H`` rose by more than
   ``divergence_threshold`` (1000, as in Stan) or became non-finite is *divergent* and rejected.

Each transition leaves ``prod_c p(z_c)`` invariant: the leapfrog map with a fixed step is
volume-preserving and reversible (with the momentum flip, irrelevant under a full refresh), and
``T_c``, ``L_c``, ``h_c`` are drawn independently of the state. Rows are independent as long as
``energy_fn`` treats its batch row by row. The jitter acts on the trajectory, not on the step:
with ``L`` fixed and the step jittered, the leapfrog angle per step ``acos(1 - (h omega)^2 / 2)``
is strongly non-linear in ``h`` at the large steps that an acceptance of 0.8 gives in low
dimension, and one or two jittered steps spread the angle over most of ``(0, pi)``.

**Warm-up** (the first ``warmup`` transitions; chains, not draws, make the statistics):

* *Step size*: dual averaging (Hoffman & Gelman 2014) of ``log eps`` on the mean over chains of
  ``alpha_c``, towards ``target_accept`` (0.8); after the warm-up ``eps`` is the averaged iterate.
  Its shrinkage point is twice the initial step (Stan: ten times, which makes the first iterate
  about 14 times the initial step and drags the trajectory along).
* *Diagonal mass* (``adapt_mass``): ``s^2`` is an exponential moving average of the cross-chain
  variance of the states (rate ``max(1/t, 0.05)``, shrunk towards ``1e-3`` like Stan's when it
  rests on few samples), frozen after 3/4 of the warm-up, when dual averaging restarts (the step
  size must suit the final mass). With many chains the cross-chain variance is cheap and
  accurate. Skipped when ``warmup < 20``. Measured: on a Gaussian with scales 1..10 in 10-d it
  raises the energy's ESS per gradient evaluation from 23 to 250 per 1000.
* *Dense mass* (``dense_mass``): the same moving average of the full cross-chain covariance
  ``Sigma`` (``D x D``, shrunk towards ``1e-3 I`` the same way), used as ``M^-1 = Sigma``:
  ``p = L^-T u`` with ``Sigma = L L^T``, velocity ``Sigma p``, kinetic energy ``p^T Sigma p / 2``,
  and ChEES measured in the whitened coordinates ``|L^-1 (z - m)|^2``. A diagonal mass cannot
  undo correlations, and a strongly correlated target (the trained NN-MRF prior's coordinates
  correlate at +-0.8) then mixes along its narrow directions only: with ``C`` chains of dimension
  ``D << C`` the covariance is well estimated, and the transition is the one of an isotropic
  target.

* *Trajectory length* (``adapt_trajectory``): the ChEES criterion of Hoffman, Radul & Sountsov
  (2021, "An Adaptive MCMC Scheme for Setting Trajectory Lengths in HMC"), designed for many
  parallel chains: maximise ``E[(d(z') - d(z))^2]`` with ``d(z) = |(z - m) / s|^2`` the
  squared distance from the mean in the preconditioned coordinates (``m``: the moving average of
  the cross-chain mean). It is chosen because it targets the autocorrelation that matters: for
  a stationary chain ``E[(d' - d)^2] = 2 Var(d) (1 - corr(d, d'))``, so maximising it minimises
  the lag-1 autocorrelation of the squared distance (for the Gaussian, of ``|z - m|^2`` and of
  the energy), exactly the quantity that stalls at a resonance, where a point reflection
  (``d' = d``) scores zero. Its gradient in ``log T`` per chain, through the realised ``T_c``
  and weighted by the acceptance, is ``alpha_c (d(z') - d(z)) ((z' - m) . p') T_c`` up to a
  positive factor (``(z' - m) . p'`` is half the time derivative of ``d`` at the end of the
  trajectory); its chain mean drives Adam (ascent) on ``log T``, kept in
  ``[eps / 2, max_steps eps]`` (below ``2 T`` the acceptance, and so dual averaging, depends on
  ``eps``); after the warm-up ``T`` is the averaged iterate. The adaptation starts from
  ``T = step_size`` (one step), not from ``num_steps * step_size``: under the jitter the
  criterion has a local maximum near every odd quarter period, the first (for a Gaussian the
  highest) is the one wanted, and a start near a half period (the resonant setting) climbs to
  the next one (in the test's quadratic, starting from ``T = 8 x 0.3``: lag-1 autocorrelation
  of ``|z|^2`` 0.54 to 0.56 with 4 to 6 steps, instead of 0.25 with 2).
* *Jitter* ``j`` (default 0.3), during and after the warm-up: a fixed ``T`` can be resonant for
  some direction of a non-isotropic energy whatever ``T`` is adapted to. For an exact trajectory
  of angle ``theta_0 (1 +- j)``, ``E[cos^2 theta]`` is ``(1 - sin(pi j) / (pi j)) / 2`` at
  ``theta_0 = pi/2`` (0.07 for ``j = 0.3``, 0.18 for 0.5) and ``(1 + sin(2 pi j) / (2 pi j)) / 2``
  at the worst ``theta_0 = pi`` (0.75 for 0.3, 0.5 for 0.5, instead of 1). Measured on the NN-MRF prior
  (fresh and trained) and a 10-d Gaussian with scales 1..10, 0.3 gives 17 to 84 % more ESS of
  the energy per gradient evaluation than 0.5 (lag-1 autocorrelation of ``|z|^2`` in the test
  quadratic: 0.26 against 0.35); on a rotated 2-d Gaussian with standard deviations 1 and 1/2
  the square of the fast direction mixes worse (lag-1 0.65 against 0.50) while the ESS per
  gradient of ``|z - m|^2`` and of every coordinate is still higher. ``jitter=0`` with ``adapt_trajectory=False`` and
  ``adapt_mass=False`` is plain fixed-trajectory HMC.

A warm-up can be restarted (:meth:`PersistentHMC.restart_warmup`): after a persistent prior's
training the energy has moved far from where its chains' step, mass and trajectory were
adapted, and the fixed-parameter chains first adapt again.

The energy may change between :meth:`PersistentHMC.step` calls (training): nothing about it
is cached across calls, its gradient is ``torch.autograd.grad(E(z).sum(), z)`` (the energy's
parameters get no gradient from the sampler), and the states are detached.

Diagnostics
-----------
Beside ArviZ's R-hat and bulk/tail ESS per coordinate, the sampler records per kept draw the
energy ``E(z)`` of each chain and reports R-hat, bulk ESS and the pooled lag-1 autocorrelation
of the energy and of the standardised squared distance
``sqnorm = sum_i ((z_i - m_i) / s_i)^2`` (``m``, ``s``: mean and standard deviation of the kept
draws pooled over chains). Per-coordinate ESS alone can be fooled: a chain that alternates
sign (``z -> -z`` at a half-period trajectory) has negative autocorrelation in every coordinate,
so ArviZ reports more effective draws than draws (antithetic sampling), while ``|z|^2``, the
energy and hence the ``log Z`` gradient (an expectation of ``grad_theta E``) do not move. See
:meth:`PersistentHMC.diagnostics` for the thresholds of ``mixing_ok``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch

__all__ = ["PersistentHMC", "log_partition_surrogate"]

RHAT_LIMIT = 1.05  # R-hat above this (coordinates, energy or sqnorm) fails ``mixing_ok``
ESS_PER_1000_LIMIT = 100.0  # bulk ESS per 1000 draws (all chains) below this fails ``mixing_ok``


def log_partition_surrogate(energy_fn: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient in the energy's parameters estimates ``grad log Z``.

    ``-mean_s E(z_s)`` over prior samples ``z_s`` (held fixed): its gradient is
    ``-E_p[grad E]``. Its value is not ``log Z`` (which stays unknown); add
    ``surrogate - surrogate.detach()`` to a log density to correct its gradient without changing
    its value.
    """
    return -energy_fn(samples.detach()).mean()


class _DualAveraging:
    """Nesterov dual averaging of ``x = log eps`` (Hoffman & Gelman 2014, section 3.2), driven by
    ``target - statistic``; ``x_bar`` is the averaged iterate used after the warm-up."""

    def __init__(self, x0: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        # The shrinkage point mu biases the first iterates towards larger steps. Stan uses
        # 10 x the initial step; here 2 x: the first iterate (about 1.4 exp(mu) when everything is
        # accepted) would otherwise be 14 x the initial step, and the trajectory (at least half a
        # step) would follow it.
        self.mu = x0 + math.log(2.0)
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.t, self.h_bar, self.x, self.x_bar = 0, 0.0, x0, x0

    def update(self, error: float, high: float = 30.0) -> float:
        """``error = target - statistic``; returns the next iterate ``x`` (at most ``high``)."""
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * error
        self.x = min(max(self.mu - math.sqrt(self.t) / self.gamma * self.h_bar, -30.0), high)
        w = self.t ** -self.kappa
        self.x_bar = w * self.x + (1 - w) * self.x_bar
        return self.x


class _AdamAscent:
    """Adam on one scalar (here ``log T``), ascending a noisy gradient; ``x_bar`` averages the
    iterates with the dual-averaging weights ``t^-0.75`` (later iterates count more)."""

    def __init__(self, x0: float, lr: float = 0.05, beta1: float = 0.8, beta2: float = 0.95):
        self.x, self.x_bar, self.lr, self.b1, self.b2 = x0, x0, lr, beta1, beta2
        self.m = self.v = 0.0
        self.t = self.t_bar = 0

    def update(self, grad: float, low: float, high: float) -> float:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat, v_hat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        self.x = min(max(self.x + self.lr * m_hat / (math.sqrt(v_hat) + 1e-12), low), high)
        self.t_bar += 1
        w = self.t_bar ** -0.75
        self.x_bar = w * self.x + (1 - w) * self.x_bar
        return self.x

    def restart_average(self) -> None:
        self.t_bar, self.x_bar = 0, self.x


class PersistentHMC:
    """``C`` HMC chains on ``energy_fn`` with per-chain Metropolis decisions, persistent between
    calls (see the module docstring for the mathematics).

    Args:
        energy_fn: ``z (C, D) -> (C,)`` energies, row by row (its parameters may change between
            :meth:`step` calls: nothing about it is cached across calls).
        init: initial states ``(C, D)``; the chains live on its device and dtype.
        step_size: initial leapfrog step ``eps`` (adapted during the warm-up with
            ``adapt_step_size``).
        num_steps: ``num_steps * step_size`` is the trajectory length ``T`` when
            ``adapt_trajectory=False`` (the number of leapfrog steps is then ``ceil(T / eps)`` as
            ``eps`` adapts, as in Pyro's HMC) or ``warmup=0``; with ``adapt_trajectory`` the
            adaptation starts from ``T = step_size`` (see the module docstring), and
            ``num_steps`` only sets the default ``max_steps``.
        warmup: transitions of adaptation; no draws are recorded before its end.
        keep: how many recorded draws per chain to keep (a ring buffer on the chains' device:
            ``keep * C * (D + 3)`` numbers) for the diagnostics.
        jitter: ``j`` in ``[0, 1)``: each chain's trajectory length is ``T * U(1 - j, 1 + j)``
            in every transition.
        adapt_trajectory: adapt ``T`` during the warm-up (ChEES criterion).
        adapt_mass: adapt a diagonal inverse mass matrix from the cross-chain variance during
            the warm-up (``warmup >= 20`` only).
        max_steps: cap on leapfrog steps per transition (bounds the cost, and ``T <= max_steps *
            eps``); default ``max(4 * num_steps, 32)``.
        target_accept: dual averaging target of the mean acceptance probability.
        divergence_threshold: a rise of the Hamiltonian above this marks a divergent (rejected)
            transition.
        dense_mass: adapt a dense inverse mass (the cross-chain covariance) instead of a
            diagonal one (with ``adapt_mass``).
        groups: optional ``(C,)`` integer labels for chains that target different laws (e.g.
            conditionals given different data): the warm-up then uses each group's own mean
            (for ChEES) and the within-group variance pooled over groups (for the mass). A
            pooled mean would make ChEES reward the displacement along ``mean_g - m``, which is
            largest at half a period. The diagnostics still pool all chains.

    Call :meth:`step` to advance; :attr:`samples` holds the current ``(C, D)`` states (also as
    ``state["z"]``). ``jitter=0, adapt_trajectory=False, adapt_mass=False,
    adapt_step_size=False`` is plain HMC with ``num_steps`` steps of ``step_size``.
    """

    def __init__(self, energy_fn, init: torch.Tensor, step_size: float = 0.1, num_steps: int = 10,
                 warmup: int = 100, adapt_step_size: bool = True, keep: int = 500, *,
                 jitter: float = 0.3, adapt_trajectory: bool = True, adapt_mass: bool = True,
                 max_steps: int | None = None, target_accept: float = 0.8,
                 divergence_threshold: float = 1000.0, groups: torch.Tensor | None = None,
                 dense_mass: bool = False):
        if init.dim() != 2:
            raise ValueError(f"init must be (chains, dim), got {tuple(init.shape)}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if not (step_size > 0 and num_steps >= 1):
            raise ValueError(f"need step_size > 0 and num_steps >= 1, got {step_size!r}, {num_steps!r}")
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
        self.energy_fn = energy_fn
        self.z = init.detach().clone()
        self.warmup, self.keep = int(warmup), int(keep)
        self._warmup_length = self.warmup
        self.jitter, self.target_accept = float(jitter), float(target_accept)
        self.adapt_step_size, self.adapt_trajectory = bool(adapt_step_size), bool(adapt_trajectory)
        self._adapt_mass_wanted, self.dense_mass = bool(adapt_mass), bool(dense_mass)
        self.max_steps = int(max_steps) if max_steps is not None else max(4 * int(num_steps), 32)
        self.divergence_threshold = float(divergence_threshold)
        self.step_size = float(step_size)
        self.trajectory = float(step_size) * int(num_steps)  # T, before rounding to whole steps
        self.transitions = 0
        c, d = self.z.shape
        self.groups = None
        if groups is not None:
            groups = torch.as_tensor(groups, device=self.z.device).long()
            if groups.shape != (c,) or groups.min() < 0:
                raise ValueError(f"groups must be ({c},) non-negative integers")
            _, self.groups = torch.unique(groups, return_inverse=True)  # labels 0..G-1
            self._group_sizes = torch.bincount(self.groups).to(self.z.dtype)[:, None]  # (G, 1)
        # The moving averages forget at rate 0.05 (about 20 transitions) once they rest on enough
        # chains; for small groups the window grows to about 160 / size transitions, so that a
        # chain's own recent path does not dominate its centre (a lone chain measured from its
        # own last 20 states makes any long jump look like mixing, and ChEES runs T to the cap).
        size = c if groups is None else int(self._group_sizes.min())
        self._rate_floor = 0.05 * min(1.0, size / 8.0)
        self.inv_mass = torch.ones(d, dtype=self.z.dtype, device=self.z.device)  # s^2, or Sigma (dense)
        # Moving averages of the cross-chain mean and variance, (D,) or per group (G, D), and of
        # the (within-group) covariance (D, D) for a dense mass.
        self._mean, _ = self._chain_moments()
        self._var = torch.ones_like(self._mean)
        self._cov = torch.eye(d, dtype=self.z.dtype, device=self.z.device)
        self._schedule_warmup(self.warmup)
        # ChEES starts from one step and lengthens the trajectory: under the jitter the
        # criterion has local maxima near every odd multiple of a quarter period, and the first
        # (for a Gaussian the highest) is the one wanted; an initial T near a half period (the
        # resonant setting) would climb to the next one instead.
        if self.adapt_trajectory and self.warmup > 0:
            self.trajectory = self.step_size
        self._adam = _AdamAscent(math.log(self.trajectory))
        # Post-warm-up totals (tensors, so no device synchronisation per transition).
        self._n_after = 0
        self._steps_after = 0
        self._accept_prob = torch.zeros((), dtype=torch.float64, device=self.z.device)
        self._divergent = torch.zeros((), dtype=torch.long, device=self.z.device)
        # Ring buffer of the recorded draws (allocated at the first record).
        self._buf: dict[str, torch.Tensor] | None = None
        self._recorded = 0

    # ----------------------------------------------------------------------------- state
    @property
    def inv_mass(self) -> torch.Tensor:
        """The inverse mass ``M^-1``: ``(D,)`` (diagonal, ``s^2``) or ``(D, D)`` (dense, ``Sigma``)."""
        return self._inv_mass

    @inv_mass.setter
    def inv_mass(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.z.dtype, device=self.z.device)
        d = self.z.shape[1]
        if value.shape not in ((d,), (d, d)):
            raise ValueError(f"inv_mass must be ({d},) or ({d}, {d}), got {tuple(value.shape)}")
        self._inv_mass = value
        self._chol = torch.linalg.cholesky(value) if value.dim() == 2 else None

    def _momentum(self, z: torch.Tensor) -> torch.Tensor:
        """``p ~ N(0, M)`` per chain ``(C, D)``."""
        u = torch.randn_like(z)
        if self._chol is None:
            return u / self._inv_mass.sqrt()
        return torch.linalg.solve_triangular(self._chol.T, u.T, upper=True).T  # L^-T u

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M^-1 p`` per chain."""
        return self._inv_mass * p if self._chol is None else p @ self._inv_mass

    def _whitened_sq(self, x: torch.Tensor) -> torch.Tensor:
        """``x^T M x`` per row ``(C,)``: the squared length of ``x (C, D)`` in the coordinates
        where the mass is the identity."""
        if self._chol is None:
            return (x * x / self._inv_mass).sum(-1)
        return torch.linalg.solve_triangular(self._chol, x.T, upper=False).pow(2).sum(0)

    def _schedule_warmup(self, w: int) -> None:
        """A warm-up of ``w`` transitions from now: the mass adapts (from 20 transitions on) until
        3/4 of it, dual averaging starts afresh from the current step size."""
        self._warm_start = self.transitions  # the moving averages restart from here
        self.warmup = self.transitions + w
        self.adapt_mass = self._adapt_mass_wanted and w >= 20
        self._mass_end = self.transitions + int(0.75 * w) if self.adapt_mass else 0
        self._da = _DualAveraging(math.log(self.step_size))

    def restart_warmup(self, warmup: int | None = None, clear: bool = True) -> None:
        """Adapt again for ``warmup`` transitions (default: the constructor's ``warmup``), from
        the current step size, mass and trajectory; ``clear`` forgets the recorded draws and the
        post-warm-up totals, so the diagnostics describe the draws after this warm-up alone."""
        w = self._warmup_length if warmup is None else int(warmup)
        if w < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup!r}")
        self._schedule_warmup(w)
        self._adam = _AdamAscent(math.log(max(self.trajectory, 0.5 * self.step_size)))
        if clear:
            self._n_after = self._steps_after = 0
            self._accept_prob = torch.zeros_like(self._accept_prob)
            self._divergent = torch.zeros_like(self._divergent)
            self._buf, self._recorded = None, 0

    @property
    def samples(self) -> torch.Tensor:
        """Current states ``(C, D)``."""
        return self.z

    @property
    def state(self) -> dict:
        """``{"z": samples}`` (Pyro's convention for a kernel's state)."""
        return {"z": self.z}

    @state.setter
    def state(self, value) -> None:
        z = value["z"] if isinstance(value, dict) else value
        if z.shape != self.z.shape:
            raise ValueError(f"state must be {tuple(self.z.shape)}, got {tuple(z.shape)}")
        self.z = z.detach().to(self.z).clone()

    @property
    def num_leapfrog_steps(self) -> int:
        """Gradient evaluations per transition with the current ``eps`` and ``T``: the longest
        jittered trajectory, ``ceil(T (1 + j) / eps)``, capped at ``max_steps``."""
        longest = self.trajectory * (1.0 + self.jitter) / self.step_size
        return min(max(math.ceil(longest - 1e-6), 1), self.max_steps)

    # ----------------------------------------------------------------------------- sampling
    def _energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E(z) (C,)`` and ``grad_z E (C, D)``, detached; the energy's parameters get nothing."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy_fn(z)
            if energy.shape != z.shape[:1]:
                raise ValueError(f"energy_fn must return ({z.shape[0]},), got {tuple(energy.shape)}")
            (grad,) = torch.autograd.grad(energy.sum(), z, allow_unused=True)
        if grad is None:  # an energy that ignores z
            grad = torch.zeros_like(z)
        return energy.detach(), grad.detach()

    def _transition(self, z, energy, grad, warm: bool):
        """One HMC transition of every chain; returns the new ``(z, energy, grad)``, the
        Hamiltonian of the state kept ``(C,)``, the acceptance probabilities ``(C,)``, the
        divergent flags ``(C,)``, the ChEES gradient in ``log T`` (warm-up only, else ``None``) and
        the number of gradient evaluations."""
        c = z.shape[0]
        eps, steps = self.step_size, self.num_leapfrog_steps
        p = self._momentum(z)  # p ~ N(0, M)
        # Per-chain trajectory T_c = T u_c in L_c = ceil(T_c / eps) steps of h_c = T_c / L_c <= eps.
        u = 1.0 + self.jitter * (2.0 * torch.rand(c, 1, dtype=z.dtype, device=z.device) - 1.0)
        t_c = torch.clamp(self.trajectory * u, max=self.max_steps * eps)
        n_c = torch.clamp(torch.ceil(t_c / eps - 1e-6), 1, self.max_steps)
        h = t_c / n_c
        h0 = energy + 0.5 * (p * self._velocity(p)).sum(-1)
        z1, p1, e1, g1 = z, p - 0.5 * h * grad, energy, grad
        # Every chain runs the longest number of steps; a chain past its own L_c is frozen (its
        # gradient is recomputed at the same point), so the loop has no data-dependent length.
        for i in range(steps):
            active = i < n_c  # (C, 1)
            z1 = torch.where(active, z1 + h * self._velocity(p1), z1)
            e1, g1 = self._energy_and_grad(z1)
            kick = torch.where(n_c == i + 1, 0.5 * h, h)  # the last momentum update is halved
            p1 = torch.where(active, p1 - kick * g1, p1)
        delta = e1 + 0.5 * (p1 * self._velocity(p1)).sum(-1) - h0
        divergent = ~torch.isfinite(delta) | (delta > self.divergence_threshold)
        alpha = torch.where(divergent, torch.zeros_like(delta), torch.exp(torch.clamp(-delta, max=0.0)))
        accept = torch.rand_like(alpha) < alpha
        chees = None
        if warm and self.adapt_trajectory:
            # ChEES gradient in log T (module docstring): alpha (d' - d) ((z' - m) . p') T_c.
            m = self._center()
            d0, d1 = self._whitened_sq(z - m), self._whitened_sq(z1 - m)
            g = alpha * (d1 - d0) * ((z1 - m) * p1).sum(-1) * t_c[:, 0]
            chees = torch.where(alpha > 0, g, torch.zeros_like(g)).mean()
        keep = accept[:, None]
        z = torch.where(keep, z1, z)
        energy = torch.where(accept, e1, energy)
        grad = torch.where(keep, g1, grad)
        # The Hamiltonian of the state kept (Stan's ``energy__``, what ArviZ's BFMI reads).
        hamiltonian = torch.where(accept, h0 + delta, h0)
        return z, energy, grad, hamiltonian, alpha, divergent, chees, steps

    def _chain_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-chain mean and variance of the states: ``(D,)``, or per group ``(G, D)``."""
        z = self.z
        if self.groups is None:
            return z.mean(0), z.var(0, unbiased=False)
        g = self._group_sizes.shape[0]
        mean = z.new_zeros(g, z.shape[1]).index_add_(0, self.groups, z) / self._group_sizes
        dev = (z - mean[self.groups]) ** 2
        return mean, z.new_zeros(g, z.shape[1]).index_add_(0, self.groups, dev) / self._group_sizes

    def _center(self) -> torch.Tensor:
        """The mean ``m`` of ChEES for each chain: ``(D,)`` or ``(C, D)`` with groups."""
        return self._mean if self.groups is None else self._mean[self.groups]

    def _adapt_moments(self) -> None:
        """Moving averages of the cross-chain mean and variance (for ``m`` and the mass; with
        ``dense_mass`` also the covariance); a group of one chain gets its mean and variance
        from the chain's recent past. They start afresh with each warm-up."""
        t = self.transitions - self._warm_start + 1
        rate = max(1.0 / t, self._rate_floor)
        mean, var = self._chain_moments()
        delta = mean - self._mean
        self._mean = self._mean + rate * delta
        # The moving average of a mixture: old and new variances plus the shift of the mean.
        self._var = (1 - rate) * (self._var + rate * delta * delta) + rate * var
        if not (self.adapt_mass and self.transitions + 1 <= self._mass_end):
            return
        n = self.z.shape[0] * min(t, 20)  # roughly how many states the average rests on
        shrink = n / (n + 5.0)
        if self.dense_mass:
            centred = self.z - (mean if self.groups is None else mean[self.groups])
            cov = centred.T @ centred / self.z.shape[0]  # pooled within groups
            shift = torch.outer(delta, delta) if delta.dim() == 1 else delta.T @ delta / delta.shape[0]
            self._cov = (1 - rate) * (self._cov + rate * shift) + rate * cov
            eye = torch.eye(self._cov.shape[0], dtype=self._cov.dtype, device=self._cov.device)
            sym = 0.5 * (self._cov + self._cov.T)
            self.inv_mass = shrink * sym + 1e-3 * (1.0 - shrink) * eye
        else:
            pooled = self._var if self.groups is None else self._var.mean(0)
            self.inv_mass = shrink * pooled + 1e-3 * (1.0 - shrink)

    def _adapt(self, alpha: torch.Tensor, chees: torch.Tensor | None) -> None:
        """Warm-up updates after transition number ``self.transitions`` (1-based)."""
        t = self.transitions
        if self.adapt_step_size:
            # A step longer than the trajectory is never taken (h_c <= T_c): with a fixed T the
            # acceptance would stop depending on eps above 2 T and eps would drift away.
            high = 30.0 if self.adapt_trajectory else math.log(2.0 * self.trajectory)
            self.step_size = math.exp(self._da.update(self.target_accept - float(alpha.mean()), high))
        if chees is not None:
            g = float(chees)
            if math.isfinite(g):
                # T in [eps / 2, max_steps eps]: the lower bound keeps eps meaningful (below 2 T
                # the acceptance depends on eps) and stops T drifting off when one step is enough.
                low = math.log(0.5 * self.step_size)
                self.trajectory = math.exp(self._adam.update(g, low, math.log(self.max_steps * self.step_size)))
        if t == self._mass_end:
            # The mass is final: restart the step size adaptation (the old step suited the old
            # mass) and the averaging of T.
            if self.adapt_step_size:
                self._da = _DualAveraging(math.log(self.step_size))
            self._adam.restart_average()
        if t == self.warmup:  # the end of the warm-up: the averaged iterates
            if self.adapt_step_size:
                self.step_size = math.exp(self._da.x_bar)
            if self.adapt_trajectory:
                self.trajectory = math.exp(self._adam.x_bar)
            self.trajectory = min(max(self.trajectory, 0.5 * self.step_size), self.max_steps * self.step_size)

    def step(self, num_transitions: int = 1, record: bool = True) -> torch.Tensor:
        """Advance every chain ``num_transitions`` HMC transitions; returns the states ``(C, D)``.
        Works inside ``torch.no_grad()``. Draws after the warm-up are recorded (``record``) for
        :meth:`diagnostics`."""
        if num_transitions <= 0:
            return self.z
        with torch.no_grad():
            # The energy may have changed since the last call: evaluate it afresh.
            energy, grad = self._energy_and_grad(self.z)
            for _ in range(num_transitions):
                warm = self.transitions < self.warmup
                if warm:
                    self._adapt_moments()
                self.z, energy, grad, hamiltonian, alpha, divergent, chees, steps = self._transition(
                    self.z, energy, grad, warm)
                self.transitions += 1
                if warm:
                    self._adapt(alpha, chees)
                    continue
                self._n_after += 1
                self._steps_after += steps
                self._accept_prob += alpha.sum()
                self._divergent += divergent.sum()
                if record and self.keep > 0:
                    self._record(energy, hamiltonian, alpha, divergent)
        return self.z

    def _record(self, energy, hamiltonian, alpha, divergent) -> None:
        c, d = self.z.shape
        if self._buf is None:
            kw = dict(device=self.z.device)
            self._buf = {"z": torch.empty(self.keep, c, d, dtype=self.z.dtype, **kw),
                         "energy": torch.empty(self.keep, c, dtype=energy.dtype, **kw),
                         "hamiltonian": torch.empty(self.keep, c, dtype=energy.dtype, **kw),
                         "accept_prob": torch.empty(self.keep, c, dtype=alpha.dtype, **kw),
                         "diverging": torch.empty(self.keep, c, dtype=torch.bool, **kw)}
        i = self._recorded % self.keep
        self._buf["z"][i] = self.z
        self._buf["energy"][i] = energy
        self._buf["hamiltonian"][i] = hamiltonian
        self._buf["accept_prob"][i] = alpha
        self._buf["diverging"][i] = divergent
        self._recorded += 1

    # ----------------------------------------------------------------------------- draws
    @property
    def draws_per_chain(self) -> int:
        return min(self._recorded, self.keep)

    def recorded(self, name: str = "z") -> torch.Tensor:
        """The kept draws in order on the CPU: ``"z"`` ``(C, S, D)``; ``"energy"``,
        ``"hamiltonian"``, ``"accept_prob"``, ``"diverging"`` ``(C, S)``."""
        if self._buf is None:
            c, d = self.z.shape
            return torch.empty((c, 0, d) if name == "z" else (c, 0))
        buf, s = self._buf[name], self.draws_per_chain
        if self._recorded > self.keep:  # oldest first
            i = self._recorded % self.keep
            buf = torch.cat([buf[i:], buf[:i]])
        return buf[:s].transpose(0, 1).cpu()

    @property
    def draws(self) -> torch.Tensor:
        """The kept draws ``(C, S, D)`` on the CPU, oldest first."""
        return self.recorded("z")

    def _sqnorm(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_i ((z_i - m_i) / s_i)^2 (C, S)`` with ``m``, ``s`` pooled over the draws."""
        flat = z.reshape(-1, z.shape[-1])
        m, s = flat.mean(0), flat.std(0)
        s = torch.where(s > 0, s, torch.ones_like(s))
        return (((z - m) / s) ** 2).sum(-1)

    def inference_data(self):
        """The kept draws as ArviZ ``InferenceData``.

        ``posterior``: ``z`` (chain, draw, dim), ``energy`` (``E(z)``, the potential energy, i.e.
        ``-log p(z)`` up to ``log Z``) and ``sqnorm`` (the standardised squared distance from the
        pooled mean), so ``az.summary`` covers all three. ``sample_stats``: ``lp`` (``-E(z)``),
        ``energy`` (the Hamiltonian, potential plus kinetic, of the state each transition kept:
        what ``az.plot_energy`` and ``az.bfmi`` read), ``acceptance_rate`` (the Metropolis
        probability of the transition that produced the draw) and ``diverging``."""
        import arviz as az

        if self.draws_per_chain < 4:
            raise ValueError("fewer than 4 recorded draws after the warm-up; call step() more")
        z = self.draws.to(torch.float64)
        energy = self.recorded("energy").to(torch.float64)
        with warnings.catch_warnings():  # many chains, few draws is what persistent chains are
            warnings.filterwarnings("ignore", message=".*More chains.*than draws.*")
            return az.from_dict(
                posterior={"z": z.numpy(), "energy": energy.numpy(), "sqnorm": self._sqnorm(z).numpy()},
                sample_stats={"lp": -energy.numpy(),
                              "energy": self.recorded("hamiltonian").to(torch.float64).numpy(),
                              "acceptance_rate": self.recorded("accept_prob").double().numpy(),
                              "diverging": self.recorded("diverging").numpy()})

    @staticmethod
    def _lag1(x: np.ndarray) -> float:
        """Lag-1 autocorrelation of ``x (C, S)``, pooled over chains around the pooled mean (so
        chains stuck at different levels count as correlated)."""
        x = x - x.mean()
        den = float((x * x).mean())
        return float((x[:, 1:] * x[:, :-1]).mean() / den) if den > 0 else float("nan")

    def diagnostics(self) -> dict:
        """Plain ``float``/``int``/``bool``/``str`` values (for logs):

        * per coordinate (ArviZ): ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``;
        * of the energy and of ``sqnorm`` (module docstring): ``rhat_energy``,
          ``ess_bulk_energy``, ``rhat_sqnorm``, ``ess_bulk_sqnorm``, ``lag1_autocorr_energy``,
          ``lag1_autocorr_sqnorm`` (pooled over chains, on the kept draws);
        * ``divergences``, ``acceptance_rate`` (mean Metropolis probability) over all transitions
          after the warm-up; ``step_size``, ``trajectory_length`` (``T``, the centre of the
          jittered lengths ``T_c``), ``mean_leapfrog_steps`` (gradient evaluations per transition
          after the warm-up; each :meth:`step` call adds one at its start), ``draws_per_chain``,
          ``chains``;
        * ``mixing_ok``: every R-hat (coordinates, energy, sqnorm) at most 1.05 and every bulk ESS
          (worst coordinate, energy, sqnorm) at least 100 per 1000 draws (all chains together:
          a relative efficiency of 0.1, which an autocorrelation of ``rho`` at every lag
          ``k`` as ``rho^k`` reaches at ``rho = 0.82``); ``warnings``: what failed, ``"; "``
          separated (``""`` if nothing). The ArviZ numbers are NaN (and ``mixing_ok`` False)
          while fewer than 4 draws have been recorded after the warm-up.

        With a persistent prior in training the energy changes between draws, so these describe
        chains following a moving target."""
        import arviz as az

        nan = float("nan")
        s, c = self.draws_per_chain, int(self.z.shape[0])
        out = dict(max_rhat=nan, min_ess_bulk=nan, min_ess_tail=nan, rhat_energy=nan, ess_bulk_energy=nan,
                   rhat_sqnorm=nan, ess_bulk_sqnorm=nan, lag1_autocorr_energy=nan, lag1_autocorr_sqnorm=nan)
        problems = []
        if s >= 4:
            data = self.inference_data()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ on constant series
                rhat, bulk = az.rhat(data), az.ess(data, method="bulk")
                tail = az.ess(data, method="tail", var_names=["z"])
            out.update(max_rhat=float(np.max(rhat["z"].values)), min_ess_bulk=float(np.min(bulk["z"].values)),
                       min_ess_tail=float(np.min(tail["z"].values)))
            for name in ("energy", "sqnorm"):
                out[f"rhat_{name}"] = float(rhat[name].values)
                out[f"ess_bulk_{name}"] = float(bulk[name].values)
                out[f"lag1_autocorr_{name}"] = self._lag1(data.posterior[name].values)  # (C, S)
            per = 1000.0 / (c * s)
            labels = {"max_rhat": "R-hat of the worst coordinate", "rhat_energy": "R-hat of the energy",
                      "rhat_sqnorm": "R-hat of |z - mean|^2"}
            for key, label in labels.items():
                if not out[key] <= RHAT_LIMIT:
                    problems.append(f"{label} is {out[key]:.3f} > {RHAT_LIMIT}")
            coord = out["min_ess_bulk"] * per
            if not coord >= ESS_PER_1000_LIMIT:
                problems.append(f"bulk ESS of the worst coordinate is {coord:.0f} per 1000 draws")
            for key, label in (("ess_bulk_energy", "the energy"), ("ess_bulk_sqnorm", "|z - mean|^2")):
                value = out[key] * per
                if not value >= ESS_PER_1000_LIMIT:
                    msg = f"bulk ESS of {label} is {value:.0f} per 1000 draws"
                    if coord >= ESS_PER_1000_LIMIT:
                        msg += (f" while the per-coordinate bulk ESS is {coord:.0f} per 1000: the trajectory is"
                                " resonant (coordinates alternate sign, the squared distance stays put)")
                    problems.append(msg)
        else:
            problems.append(f"{s} recorded draws after the warm-up (need 4)")
        mixing_ok = not problems  # divergences are reported but do not decide mixing_ok
        n = max(self._n_after, 1)
        divergences = int(self._divergent)
        if divergences:
            problems.append(f"{divergences} divergent transitions after the warm-up")
        out.update(
            divergences=divergences,
            acceptance_rate=float(self._accept_prob) / (n * c) if self._n_after else nan,
            step_size=float(self.step_size),
            trajectory_length=float(min(self.trajectory, self.max_steps * self.step_size)),
            mean_leapfrog_steps=self._steps_after / n if self._n_after else float(self.num_leapfrog_steps),
            draws_per_chain=int(s),
            chains=c,
            mixing_ok=mixing_ok,
            warnings="; ".join(problems),
        )
        return out
