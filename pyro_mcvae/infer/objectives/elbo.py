"""Pyro's ELBOs with this library's ``beta`` and strata (see :mod:`~pyro_mcvae.infer.objectives.base`).

``TraceELBO`` estimates the KL by Monte Carlo; ``MeanFieldELBO`` uses the analytic KL where
``torch.distributions.kl_divergence`` knows it (the GMRF's two ``MultivariateNormal`` laws) and
Monte Carlo elsewhere. Both compute ``E_q[log p(x | z)] - beta KL(q || p)``: the latent sites of
the model and the guide are scaled alike, so Pyro's per-site sums give exactly that.
"""

from __future__ import annotations

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .base import MAX_PLATE_NESTING, MultimodalObjective

__all__ = ["MeanFieldELBO", "TraceELBO"]


class _BetaELBO(MultimodalObjective):
    def __init__(self, num_particles: int = 1, **kwargs):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        kwargs.setdefault("max_plate_nesting", MAX_PLATE_NESTING)
        kwargs.setdefault("vectorize_particles", num_particles > 1)
        super().__init__(num_particles=num_particles, **kwargs)

    def loss(self, model, guide, *args, **kwargs):
        model, guide, kwargs, _, _ = self._programs(model, guide, args, kwargs)
        return super().loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        model, guide, kwargs, _, _ = self._programs(model, guide, args, kwargs)
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        model, guide, kwargs, _, _ = self._programs(model, guide, args, kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs)


class TraceELBO(_BetaELBO, Trace_ELBO):
    """``Trace_ELBO`` with ``beta`` and strata."""


class MeanFieldELBO(_BetaELBO, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` with ``beta`` and strata (analytic KL where known)."""
