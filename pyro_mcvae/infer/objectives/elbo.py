"""Pyro's ELBOs with this library's ``beta`` and strata (see :mod:`~pyro_mcvae.infer.objectives.base`).

``TraceELBO`` estimates the KL by Monte Carlo; ``MeanFieldELBO`` uses the analytic KL where
``torch.distributions.kl_divergence`` knows it (the GMRF's two ``MultivariateNormal`` laws) and
Monte Carlo elsewhere. Both compute ``E_q[log p(x | z)] - beta KL(q || p)``: the latent sites of
the model and the guide are scaled alike, so Pyro's per-site sums give exactly that.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape
from torch.distributions import kl_divergence

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
    """``TraceMeanField_ELBO`` with ``beta`` and strata (analytic KL where known).

    Pyro's traces evaluate every site's log density, although with a closed-form KL the latent
    sites' are never read; for the GMRF those are a dense ``(M d)``-dimensional Gaussian per row
    (the prior's and the guide's). Here :meth:`_get_trace` evaluates the observed sites only
    (every site while Pyro's validation is on, which checks their shapes), and a latent site whose
    KL has no closed form gets its model log density and the guide's score parts when its term is
    formed: the same loss and gradients (``tests/infer/test_elbo_log_densities.py``)."""

    def _get_trace(self, model, guide, args, kwargs):
        guide_trace = poutine.trace(guide, graph_type="flat").get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace), graph_type="flat").get_trace(
            *args, **kwargs)
        validating = is_validation_enabled()
        if validating:
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
        if validating:
            model_trace.compute_log_prob()
            guide_trace.compute_score_parts()
            for trace in (model_trace, guide_trace):
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        check_site_shape(site, self.max_plate_nesting)
            _check_mean_field_requirement(model_trace, guide_trace)
        else:
            model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"])
        return model_trace, guide_trace

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            q = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(q)
            try:
                kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), scale=q["scale"], mask=q["mask"])
            except NotImplementedError:  # Monte Carlo: log p(z) - log q(z) at the guide's draw
                model_trace.compute_log_prob(site_filter=lambda n, s: n == name)
                guide_trace.compute_score_parts()
                elbo = elbo + site["log_prob_sum"] - q["score_parts"].entropy_term.sum()
                continue
            elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * q["fn"].batch_shape.numel())
        for name, q in guide_trace.nodes.items():  # the guide's auxiliary sites
            if q["type"] == "sample" and name not in model_trace.nodes:
                if is_validation_enabled():
                    check_fully_reparametrized(q)
                guide_trace.compute_score_parts()
                elbo = elbo - q["score_parts"].entropy_term.sum()
        loss = -(elbo.detach() if torch._C._get_tracing_state() else torch_item(elbo))
        return loss, -elbo
