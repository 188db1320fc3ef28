"""Priors over the ``M*d`` latent vector."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F
import pyro.distributions as dist

from ..distributions import GMRF, MultivariateAsymmetricLaplace, latent_law

__all__ = ["ALMRFPrior", "GMRFPrior", "DiagonalGaussianPrior", "StandardPrior", "PRIOR_PARAMETERIZATIONS"]

PRIOR_PARAMETERIZATIONS = ("precision", "covariance", "standard")


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class GMRFPrior(nn.Module):
    """Learnable GMRF prior, SPD for every parameter value.

    Args:
        num_components, component_dim: ``M`` and ``d``.
        parameterization: which matrix the block construction builds.
            ``"precision"`` (default): the precision ``Q``, as in a Markov random field; zero
            blocks are conditional independences (``graph``) and strong correlation among many
            components is reachable. ``"covariance"``: the covariance itself; block dominance then
            keeps the whitened covariance's spectrum in ``(1 - eps, 1 + eps)``: every canonical
            correlation is below ``eps``, and ``M`` components correlated alike cannot exceed
            ``eps / (M - 1)`` (proof and tests: ``docs/mathematics.md``).
            ``"standard"``: ``N(0, I)``, no parameters.
        eps, mode, graph, delta: passed to the block assembly.
        learn_loc: learn the mean (else zero).
    """

    def __init__(
        self,
        num_components: int,
        component_dim: int,
        parameterization: str = "precision",
        eps: float | None = None,
        mode: str = "blockwise",
        graph: torch.Tensor | None = None,
        delta: float = 1e-6,
        learn_loc: bool = True,
        init_offdiag: float = 0.01,
    ):
        super().__init__()
        if parameterization not in PRIOR_PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PRIOR_PARAMETERIZATIONS}, got {parameterization!r}"
            )
        m, d = num_components, component_dim
        self.num_components, self.component_dim = m, d
        self.parameterization = parameterization
        # A precision needs a margin close to 1 to express strong correlation among many blocks.
        self.eps = eps if eps is not None else (0.99 if parameterization == "precision" else 0.9)
        self.mode, self.delta = mode, delta
        self.register_buffer("graph", None if graph is None else torch.as_tensor(graph, dtype=torch.bool))
        if parameterization == "standard":
            self.register_buffer("_zero", torch.zeros(m * d))
            self.register_buffer("_eye", torch.eye(m * d))
            return
        if learn_loc:
            self.loc = nn.Parameter(torch.zeros(m, d))
        else:
            self.register_buffer("loc", torch.zeros(m, d))
        self.raw_diag = nn.Parameter(torch.full((m, d), _inverse_softplus(1.0)))
        self.offdiag = nn.Parameter(init_offdiag * torch.randn(m, m, d, d))

    def forward(self) -> GMRF:
        """The prior GMRF, batch shape ``()``, event shape ``(M*d,)``."""
        m, d = self.num_components, self.component_dim
        if self.parameterization == "standard":
            return GMRF(self._zero, scale_tril=self._eye, num_components=m, component_dim=d)
        return GMRF.from_blocks(self.loc, *self._blocks(), parameterization=self.parameterization,
                                **self._assembly())

    def _blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal variances ``(M, d)`` and off-diagonal blocks ``(M, M, d, d)`` before assembly."""
        return F.softplus(self.raw_diag) + 1e-4, self.offdiag

    def _assembly(self) -> dict:
        return dict(eps=self.eps, delta=self.delta, mode=self.mode, graph=self.graph, validate=False)


class DiagonalGaussianPrior(nn.Module):
    """Independent Gaussian prior with learnable mean and variances (the no-MRF ablation). The
    baselines' fixed ``N(0, I)`` is :class:`StandardPrior`."""

    def __init__(self, num_components: int, component_dim: int):
        super().__init__()
        m, d = num_components, component_dim
        self.num_components, self.component_dim = m, d
        self.loc = nn.Parameter(torch.zeros(m * d))
        self.raw_scale = nn.Parameter(torch.full((m * d,), _inverse_softplus(1.0)))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale) + 1e-4).to_event(1)


class StandardPrior(nn.Module):
    """Fixed prior of unit variance, ``N(0, I)`` or ``Laplace(0, 1/sqrt(2))`` per coordinate (the
    baselines' prior: MVAE's prior expert assumes exactly this law).

    ``forward()`` has event shape ``(size,)``; :meth:`law` gives the same law over any shape.
    """

    def __init__(self, size: int, family: str = "normal"):
        super().__init__()
        latent_law(family, torch.zeros(()), torch.ones(()))  # validates the family
        self.size, self.family = int(size), family
        self.register_buffer("_zero", torch.zeros(()))

    def law(self, shape) -> dist.Distribution:
        """The elementwise law, batch shape ``shape`` (no event dimensions)."""
        return latent_law(self.family, self._zero.expand(shape), torch.ones_like(self._zero).expand(shape))

    def forward(self) -> dist.Distribution:
        return self.law((self.size,)).to_event(1)


class ALMRFPrior(GMRFPrior):
    """Learnable multivariate asymmetric Laplace prior with the GMRF's block structure (ALMRF).

    ``Sigma`` (``parameterization="covariance"``) or ``Sigma^-1`` (``"precision"``, default, for the
    same reason as :class:`GMRFPrior`, whose arguments it takes) comes from the block
    construction; the location and the skew ``m`` are learnable (the skew starts at zero, the
    symmetric multivariate Laplace).
    """

    def __init__(self, num_components: int, component_dim: int, parameterization: str = "precision",
                 **kwargs):
        if parameterization not in ("precision", "covariance"):
            raise ValueError(f"parameterization must be 'precision' or 'covariance', got {parameterization!r}")
        super().__init__(num_components, component_dim, parameterization, **kwargs)
        self.skew = nn.Parameter(torch.zeros(num_components, component_dim))

    def forward(self) -> MultivariateAsymmetricLaplace:
        return MultivariateAsymmetricLaplace.from_blocks(
            self.loc, self.skew, *self._blocks(), parameterization=self.parameterization,
            **self._assembly())
