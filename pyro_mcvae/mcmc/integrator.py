"""The Euclidean metric (mass matrix) and the leapfrog integrator of HMC, for ``C`` chains at once.

With inverse mass ``M^-1`` (diagonal ``(D,)`` or dense ``(D, D)``, shared by the chains) the
Hamiltonian of a chain is ``H(z, p) = E(z) + K(p)``, ``K(p) = p^T M^-1 p / 2``. The leapfrog map
with step ``h`` and ``L`` steps,

    p <- p - h/2 grad E(z);  L times: z <- z + h M^-1 p,  p <- p - h grad E(z)  (the last kick halved),

is volume-preserving and reversible (flip ``p``, integrate again, flip back: the start), and on a
quadratic energy its error in ``H`` over a fixed time is ``O(h^2)``: the three facts the
Metropolis correction of HMC rests on (``tests/mcmc/test_integrator.py`` checks each).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["EuclideanMetric", "leapfrog"]

EnergyAndGrad = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class EuclideanMetric:
    """The inverse mass ``M^-1``: ``(D,)`` (diagonal, ``s^2``) or ``(D, D)`` (dense, ``Sigma``,
    SPD); the momenta are ``p ~ N(0, M)``. A dense one keeps its Cholesky factor
    ``Sigma = L L^T`` (``p = L^-T u``, no inverse formed)."""

    def __init__(self, inv_mass: torch.Tensor):
        self.inv_mass = inv_mass
        self.chol = torch.linalg.cholesky(inv_mass) if inv_mass.dim() == 2 else None

    def sample_momentum(self, z: torch.Tensor) -> torch.Tensor:
        """``p ~ N(0, M)`` per chain, ``(C, D)`` like ``z`` (one ``randn_like(z)`` draw)."""
        u = torch.randn_like(z)
        if self.chol is None:
            return u / self.inv_mass.sqrt()
        return torch.linalg.solve_triangular(self.chol.T, u.T, upper=True).T  # L^-T u

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M^-1 p`` per chain ``(C, D)``."""
        return self.inv_mass * p if self.chol is None else p @ self.inv_mass

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        """``K(p) = p^T M^-1 p / 2`` per chain ``(C,)``."""
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def whitened_sq(self, x: torch.Tensor) -> torch.Tensor:
        """``x^T M x`` per row ``(C,)``: the squared length of ``x (C, D)`` in the coordinates
        where the mass is the identity."""
        if self.chol is None:
            return (x * x / self.inv_mass).sum(-1)
        return torch.linalg.solve_triangular(self.chol, x.T, upper=False).pow(2).sum(0)


def leapfrog(z: torch.Tensor, p: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor,
             step: torch.Tensor, num_steps: torch.Tensor, max_steps: int, energy_and_grad: EnergyAndGrad,
             metric: EuclideanMetric) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-chain leapfrog trajectories: chain ``c`` takes ``num_steps[c]`` steps of ``step[c]``.

    Args:
        z, p: start ``(C, D)``; ``energy (C,)`` and ``grad (C, D)``: ``E`` and ``grad E`` at ``z``.
        step, num_steps: ``(C, 1)`` step sizes and (whole, ``>= 1``) step counts.
        max_steps: the loop's length, at least ``max(num_steps)``; every chain runs it, and one
            past its own count is frozen (its gradient recomputed at the same point), so the loop
            has no data-dependent length.
        energy_and_grad: ``z (C, D) -> (E (C,), grad E (C, D))``.

    Returns ``(z', p', E(z'), grad E(z'))`` at the end of each chain's trajectory.
    """
    z1, p1, e1, g1 = z, p - 0.5 * step * grad, energy, grad
    for i in range(max_steps):
        active = i < num_steps  # (C, 1)
        z1 = torch.where(active, z1 + step * metric.velocity(p1), z1)
        e1, g1 = energy_and_grad(z1)
        kick = torch.where(num_steps == i + 1, 0.5 * step, step)  # the last momentum update is halved
        p1 = torch.where(active, p1 - kick * g1, p1)
    return z1, p1, e1, g1
