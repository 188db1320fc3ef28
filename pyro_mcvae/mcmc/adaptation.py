"""The warm-up adapters of :class:`~pyro_mcvae.mcmc.PersistentHMC`, each a small state machine
fed one statistic per transition (the schedule that says when each runs is
:mod:`pyro_mcvae.mcmc.schedule`):

* :class:`DualAveraging`: the step size, ``x = log eps`` driven by ``target - acceptance``;
* :class:`CrossChainMoments` and :func:`regularised_inverse_mass`: the mass, from moving
  averages of the cross-chain mean, variance and covariance of the states;
* :func:`chees_gradient` and :class:`TrajectoryAdapter`: the trajectory length ``T``, Adam ascent
  of ``log T`` on the ChEES criterion.

With many chains the statistics come from the chains at one transition rather than from one
chain's past, so each adapter sees a fresh, nearly independent estimate every transition.
"""

from __future__ import annotations

import math

import torch

from .integrator import EuclideanMetric

__all__ = ["DualAveraging", "CrossChainMoments", "regularised_inverse_mass", "chees_gradient",
           "TrajectoryAdapter"]


class DualAveraging:
    """Nesterov dual averaging of ``x = log eps`` (Hoffman & Gelman 2014, section 3.2), driven by
    ``error = target - statistic``: ``x_t = mu - sqrt(t) / gamma * h_bar_t`` with ``h_bar_t`` the
    running mean of the errors (weights ``1 / (t + t0)``); ``x_bar`` averages the iterates with
    weights ``t^-kappa`` and is the value used after the warm-up. Where the statistic falls with
    ``x`` (the acceptance with the step), ``x_bar`` converges to the root of ``E[error] = 0``."""

    def __init__(self, x0: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        # The shrinkage point mu biases the first iterates towards larger steps. Stan uses
        # 10 x the initial step; here 2 x: the first iterate (about 1.4 exp(mu) when everything is
        # accepted) would otherwise be 14 x the initial step, and the trajectory (at least half a
        # step) would follow it.
        self.mu = x0 + math.log(2.0)
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.t, self.h_bar, self.x, self.x_bar = 0, 0.0, x0, x0

    def update(self, error: float, high: float = 30.0) -> float:
        """``error = target - statistic``; returns the next iterate ``x`` (in ``[-30, high]``)."""
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * error
        self.x = min(max(self.mu - math.sqrt(self.t) / self.gamma * self.h_bar, -30.0), high)
        w = self.t ** -self.kappa
        self.x_bar = w * self.x + (1 - w) * self.x_bar
        return self.x


class CrossChainMoments:
    """Moving averages of the cross-chain mean ``(D,)`` and variance ``(D,)`` of states ``z (C, D)``
    (per group ``(G, D)`` with ``groups``), and of the covariance ``(D, D)`` (pooled within groups).

    Update ``t`` (1-based since :meth:`restart`) mixes the batch's moments in at rate
    ``r_t = max(1 / t, rate_floor)``: ``m <- m + r delta``, ``v <- (1 - r) (v + r delta^2) + r v_batch``
    with ``delta = m_batch - m``, the mean and variance of the mixture of the old law (weight
    ``1 - r``) and the batch (weight ``r``). With ``r_t = 1 / t`` (Welford's rate; before the floor
    takes over) these are exactly the mean and (population) variance of all ``t C`` states; with
    the floor, the weighted ones with weights ``r_i prod_{j > i} (1 - r_j)`` per batch ``i``. The
    first update after a restart (``r = 1``) discards everything earlier.
    """

    def __init__(self, z: torch.Tensor, groups: torch.Tensor | None = None, rate_floor: float = 0.05):
        self.groups = groups  # (C,) labels 0..G-1, or None
        if groups is not None:
            self.group_sizes = torch.bincount(groups).to(z.dtype)[:, None]  # (G, 1)
        self.rate_floor = float(rate_floor)
        self.num_chains = z.shape[0]
        self.mean, _ = self.batch(z)
        self.var = torch.ones_like(self.mean)
        self.cov = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        self.t = 0

    def batch(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-chain mean and (population) variance of ``z (C, D)``: ``(D,)``, or per group ``(G, D)``."""
        if self.groups is None:
            return z.mean(0), z.var(0, unbiased=False)
        g = self.group_sizes.shape[0]
        mean = z.new_zeros(g, z.shape[1]).index_add_(0, self.groups, z) / self.group_sizes
        dev = (z - mean[self.groups]) ** 2
        return mean, z.new_zeros(g, z.shape[1]).index_add_(0, self.groups, dev) / self.group_sizes

    def center(self) -> torch.Tensor:
        """Each chain's mean: ``(D,)``, or ``(C, D)`` with groups."""
        return self.mean if self.groups is None else self.mean[self.groups]

    def restart(self) -> None:
        """The next update starts the averages afresh (a new warm-up)."""
        self.t = 0

    def update(self, z: torch.Tensor, covariance: bool = False) -> None:
        """Mix in the states ``z (C, D)``; ``covariance``: the covariance too (a dense mass)."""
        self.t += 1
        rate = max(1.0 / self.t, self.rate_floor)
        mean, var = self.batch(z)
        delta = mean - self.mean
        self.mean = self.mean + rate * delta
        # The moving average of a mixture: old and new variances plus the shift of the mean.
        self.var = (1 - rate) * (self.var + rate * delta * delta) + rate * var
        if covariance:
            centred = z - (mean if self.groups is None else mean[self.groups])
            cov = centred.T @ centred / z.shape[0]  # pooled within groups
            shift = torch.outer(delta, delta) if delta.dim() == 1 else delta.T @ delta / delta.shape[0]
            self.cov = (1 - rate) * (self.cov + rate * shift) + rate * cov

    def pooled_var(self) -> torch.Tensor:
        """The variance ``(D,)``, averaged over groups."""
        return self.var if self.groups is None else self.var.mean(0)


def regularised_inverse_mass(moments: CrossChainMoments, dense: bool) -> torch.Tensor:
    """The inverse mass from the moments: ``w S + 1e-3 (1 - w) I`` with ``S`` the variance
    ``(D,)`` (``dense=False``) or the symmetrised covariance ``(D, D)``, shrunk like Stan's towards
    ``1e-3`` while the average rests on few states: ``w = n / (n + 5)``, ``n = C min(t, 20)``
    (roughly how many states the average rests on)."""
    n = moments.num_chains * min(moments.t, 20)
    shrink = n / (n + 5.0)
    if not dense:
        return shrink * moments.pooled_var() + 1e-3 * (1.0 - shrink)
    cov = moments.cov
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return shrink * (0.5 * (cov + cov.T)) + 1e-3 * (1.0 - shrink) * eye


def chees_gradient(z: torch.Tensor, z1: torch.Tensor, p1: torch.Tensor, alpha: torch.Tensor,
                   duration: torch.Tensor, center: torch.Tensor, metric: EuclideanMetric) -> torch.Tensor:
    """The ChEES gradient in ``log T`` (Hoffman, Radul & Sountsov 2021), a scalar: the chain mean
    of ``alpha_c (d(z'_c) - d(z_c)) ((z'_c - m) . p'_c) T_c``, with ``d(x) = (x - m)^T M (x - m)``.

    For a trajectory of length ``T_c`` from ``z`` to ``(z', p')`` (accepted with probability
    ``alpha_c``), ``dd(z')/dT = 2 (z' - m) . p'``, so each term is a quarter of
    ``d/dlog T (d(z') - d(z))^2``, weighted by the acceptance: ascending it maximises
    ``E[(d' - d)^2] = 2 Var(d) (1 - corr(d, d'))`` at stationarity. Chains with ``alpha_c = 0``
    (divergent, possibly non-finite) count as zero. Shapes: ``z, z1, p1 (C, D)``; ``alpha``,
    ``duration`` ``(C,)``; ``center`` ``(D,)`` or ``(C, D)``."""
    d0, d1 = metric.whitened_sq(z - center), metric.whitened_sq(z1 - center)
    g = alpha * (d1 - d0) * ((z1 - center) * p1).sum(-1) * duration
    return torch.where(alpha > 0, g, torch.zeros_like(g)).mean()


class TrajectoryAdapter:
    """Adam ascent of ``x = log T`` on a noisy gradient (:func:`chees_gradient`), each iterate
    kept in ``[log(eps / 2), log(max_steps eps)]``; :attr:`averaged` (``exp x_bar``, the iterates
    averaged with the dual-averaging weights ``t^-0.75``, later iterates counting more) is the
    ``T`` used after the warm-up."""

    def __init__(self, trajectory: float, lr: float = 0.05, beta1: float = 0.8, beta2: float = 0.95):
        x0 = math.log(trajectory)
        self.x, self.x_bar, self.lr, self.b1, self.b2 = x0, x0, lr, beta1, beta2
        self.m = self.v = 0.0
        self.t = self.t_bar = 0

    def update(self, grad: float, step_size: float, max_steps: int) -> float:
        """One Adam step on ``grad`` (ascent); returns the new ``T``."""
        # T >= eps / 2: below 2 T the acceptance depends on eps (so dual averaging works) and T
        # cannot drift off when one step is enough; T <= max_steps eps bounds the cost.
        low, high = math.log(0.5 * step_size), math.log(max_steps * step_size)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat, v_hat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        self.x = min(max(self.x + self.lr * m_hat / (math.sqrt(v_hat) + 1e-12), low), high)
        self.t_bar += 1
        w = self.t_bar ** -0.75
        self.x_bar = w * self.x + (1 - w) * self.x_bar
        return math.exp(self.x)

    def restart_average(self) -> None:
        """Average from the current iterate on (the mass has just changed)."""
        self.t_bar, self.x_bar = 0, self.x

    @property
    def averaged(self) -> float:
        return math.exp(self.x_bar)
