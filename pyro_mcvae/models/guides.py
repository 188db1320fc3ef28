"""Amortised posteriors ``q(z | x_1..x_M)``, written as Pyro guide programs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn
import pyro
import pyro.distributions as dist
from pyro import poutine

from .._validation import check_component_indices, check_components
from ..distributions import GMRF
from ..nets import GlobalOffdiagNet, VectorEncoder

__all__ = ["GMRFGuide", "DiagonalGaussianGuide", "latent_scale"]


@contextmanager
def latent_scale(beta: float):
    """Scale the latent site's log densities by ``beta`` (``beta = 0`` masks them out).

    ``poutine.scale`` refuses zero, which a warm-up schedule starts from.
    """
    beta = float(beta)
    if beta < 0 or beta != beta:
        raise ValueError(f"beta must be a non-negative number, got {beta}")
    handler = poutine.mask(mask=False) if beta == 0.0 else poutine.scale(scale=beta)
    with handler:
        yield


class _EncoderGuide(nn.Module):
    """Shared parts of the guides: per-component encoders and the ``z`` site."""

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden, min_var: float):
        super().__init__()
        self.component_dims = list(component_dims)
        self.num_components = len(self.component_dims)
        self.latent_dim = latent_dim
        self.encoder = VectorEncoder(self.component_dims, latent_dim, hidden, min_var)

    def encode(self, xs: Sequence[torch.Tensor], components: Sequence[int] | None = None):
        """Marginal posterior of the given components from their own data only.

        Returns ``loc`` and diagonal variances ``(batch, K, d)``.
        """
        if components is None:
            xs = check_components(xs, self.component_dims)
        else:
            components = check_component_indices(components, self.num_components)
            xs = check_components(xs, [self.component_dims[k] for k in components])
        return self.encoder(xs, components)

    def posterior(self, xs) -> dist.Distribution:
        """``q(z | x)`` with batch shape ``(batch,)`` and event shape ``(M*d,)``; ``xs`` is a
        ``(batch, M, D)`` tensor or a list of ``M`` tensors ``(batch, D_k)``."""
        return self._posterior(check_components(xs, self.component_dims, check_values=False))

    def _posterior(self, xs: list[torch.Tensor]) -> dist.Distribution:
        raise NotImplementedError

    def forward(self, xs, beta: float = 1.0, **kwargs):
        """The guide program: one ``z`` site ``(batch, M*d)`` inside the data plate."""
        pyro.module("guide", self)
        xs = check_components(xs, self.component_dims, check_values=False)
        q = self._posterior(xs)
        with pyro.plate("data", xs[0].shape[0]):
            with latent_scale(beta):
                return pyro.sample("z", q)


class GMRFGuide(_EncoderGuide):
    """GMRF posterior: encoders give ``mu_k`` and the diagonal blocks, a global network gives the
    off-diagonal blocks, and the block construction makes the covariance SPD for every input.

    The diagonal blocks are not rescaled by the construction, so the marginal of ``z_k`` is
    ``N(mu_k, diag(var_k))`` computed from ``x_k`` alone, which conditional generation uses.
    """

    def __init__(
        self,
        component_dims: Sequence[int],
        latent_dim: int,
        hidden=(64, 64),
        global_hidden=(64, 64),
        eps: float = 0.9,
        mode: str = "blockwise",
        graph: torch.Tensor | None = None,
        delta: float = 1e-6,
        min_var: float = 1e-4,
    ):
        super().__init__(component_dims, latent_dim, hidden, min_var)
        self.global_net = GlobalOffdiagNet(self.component_dims, latent_dim, global_hidden)
        self.eps, self.mode, self.delta = eps, mode, delta
        self.register_buffer("graph", None if graph is None else torch.as_tensor(graph, dtype=torch.bool))

    def _posterior(self, xs: list[torch.Tensor]) -> GMRF:
        loc, var = self.encoder(xs)
        return GMRF.from_blocks(
            loc,
            var,
            self.global_net(xs),
            eps=self.eps,
            delta=self.delta,
            mode=self.mode,
            graph=self.graph,
            validate=False,
        )


class DiagonalGaussianGuide(_EncoderGuide):
    """Independent Gaussian posterior from the same encoders (no global network)."""

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64), min_var=1e-4):
        super().__init__(component_dims, latent_dim, hidden, min_var)

    def _posterior(self, xs: list[torch.Tensor]) -> dist.Distribution:
        loc, var = self.encoder(xs)
        return dist.Normal(loc.flatten(-2), var.sqrt().flatten(-2)).to_event(1)
