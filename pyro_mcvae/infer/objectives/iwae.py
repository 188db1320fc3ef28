"""Importance-weighted objective (IWAE) with an optional DReG gradient, as a loss for Pyro's SVI.

The bound is the one of Pyro's ``RenyiELBO(alpha=0)`` (IWAE, each datum its own log-mean-exp;
the tests check that the two losses are equal on the same draws), generalised to the stratified
mixture guides (MMVAE, MoPoE, MMVAE+) as in MMVAE, and with ``beta`` on the latent terms::

    L = sum_n sum_s w_sn [ logsumexp_k log W_ksn - log K ],
    log W = log p(x | z) + beta * (log p(z) - log q(z | x)),

with ``s`` the strata (a single one for the other guides) and ``w_sn`` their weights. Pyro has no
DReG estimator, which is what this module adds.

DReG (doubly reparameterised gradients, Tucker et al. 2019) with ``beta``: write ``wt_k`` for
the normalised weights, ``z_k = z(eps_k, phi)`` and ``d_z`` for the derivative in ``z`` with
``q``'s parameters held fixed. The IWAE gradient in the encoder's parameters ``phi`` is
``sum_k wt_k [d_z log W_k dz_k/dphi - beta d_phi log q(z_k)]``; the reparameterisation identity
``E[wt_k d_phi log q(z_k)] = E[d_z wt_k dz_k/dphi]`` with
``d_z wt_k = wt_k (1 - wt_k) d_z log W_k`` turns the score term into a path term, so::

    grad_phi = E sum_k [(1 - beta) wt_k + beta wt_k^2] d_z log W_k dz_k/dphi.

At ``beta = 1`` this is the familiar squared-weight form; at other ``beta`` (every warm-up
starts at 0) the squared weight alone is biased. The decoder and prior gradients are the usual
``sum_k wt_k d log W_k``. The factor ``(1 - beta) + beta wt_k`` on the encoder path is applied by
a gradient hook on every latent value, so one backward pass gives both. Entries of a latent site
that ``q`` does not score (masked out of its density: MMVAE+'s draws ``w_j`` from the auxiliary
priors outside their own stratum) have no score term to replace, so their hook factor is 1.

Stratified mixture guides (MMVAE, MoPoE, MMVAE+'s ``z``): draws ``z_k`` of stratum ``s`` come
from ``q_s`` but are scored by the mixture, whose score is
``d_phi log q_mix(z) = sum_j r_j(z) d_phi log q_j(z)`` with the responsibilities
``r_j = a_j q_j / q_mix`` (fixed mixture weights ``a_j``). The identity above holds only for the
own term ``j = s`` (an expectation under ``q_s``); applied to ``h = wt_k r_s`` it gives the path
term ``d_z h = r_s wt_k (1 - wt_k) d_z log W_k + wt_k r_s d_z log r_s``. The other components'
terms have no reparameterised form under ``q_s`` and stay as they are (explicit derivatives of
``log q_j`` at fixed ``z``: unbiased, and small where the components are apart)::

    grad_phi = E sum_k { wt_k [1 - beta r_s (1 - wt_k)] d_z log W_k dz_k/dphi
                         - beta wt_k r_s d_z log r_s(z_k) dz_k/dphi
                         - beta wt_k sum_{j != s} r_j(z_k) d_phi log q_j(z_k) }.

With one stratum (``r_s = 1``) this is the formula above. The squared-weight form that ignores
the responsibilities is biased for mixtures at ``K > 1`` (by up to 38% of the gradient with
overlapping components in the 1-d toy of ``tests/test_iwae.py``); the guides declare their
mixture sites through :class:`MixtureScoredSite`, so the objective can apply the unbiased form.
"""

from __future__ import annotations

import copy
import math
from typing import Protocol, runtime_checkable

import torch
import pyro
from pyro import poutine
from pyro.infer import ELBO
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.util import site_is_subsample

from ...distributions import SampledCompletion
from .base import MAX_PLATE_NESTING, MultimodalObjective

__all__ = ["ImportanceWeightedELBO", "MixtureScoredSite", "detach_distribution", "scored_entries"]


@runtime_checkable
class MixtureScoredSite(Protocol):
    """A latent site whose draws (one batch entry per stratum ``s``, at batch dimension -2) come
    from mixture component ``s`` and are scored by the whole mixture."""

    def component_log_probs(self, value: torch.Tensor) -> torch.Tensor | None:
        """``log a_j + log q_j(value)`` ``(..., S, batch, S)``, or ``None`` when each draw is
        scored by its own component (then the site is an ordinary one)."""


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, torch.distributions.Distribution):
        return detach_distribution(value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple (e.g. a GMRF's PackedBlocks)
        return type(value)._make(_detach(v) for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


def detach_distribution(d: torch.distributions.Distribution) -> torch.distributions.Distribution:
    """A copy of ``d`` whose parameters (every tensor it holds, also in nested distributions,
    dicts, lists and cached properties) are detached from the autograd graph: ``log_prob`` of the
    copy passes gradients to its ``value`` only. Distributions that keep parameters inside other
    objects (e.g. transforms) are not covered."""
    if not isinstance(d, torch.distributions.Distribution):
        raise ValueError(f"expected a torch distribution, got {type(d).__name__}")
    new = copy.copy(d)
    new.__dict__.update({k: _detach(v) for k, v in vars(d).items()})
    return new


def scored_entries(fn: torch.distributions.Distribution, site_mask=None) -> torch.Tensor | None:
    """Which entries of a site's value enter its log density: a bool tensor broadcastable to the
    value (``None``: all of them). Reads the masks of :class:`pyro.distributions.MaskedDistribution`
    layers under ``Independent`` wrappers (the masked dimensions reinterpreted as event dimensions
    map onto the value's trailing dimensions) and the site's own ``mask``."""
    d, scored = fn, None
    while True:
        if isinstance(d, (torch.distributions.Independent, ExpandedDistribution)):
            d = d.base_dist
        elif isinstance(d, MaskedDistribution):
            m = d._mask
            if isinstance(m, torch.Tensor):
                scored = m.reshape(m.shape + (1,) * len(d.event_shape))
            elif m is False:
                scored = torch.zeros((), dtype=torch.bool)
            d = d.base_dist
        else:
            break
    if isinstance(site_mask, torch.Tensor):
        site_mask = site_mask.reshape(site_mask.shape + (1,) * len(fn.event_shape))
        scored = site_mask if scored is None else scored & site_mask
    elif site_mask is False:
        scored = torch.zeros((), dtype=torch.bool)
    return scored


def _site_log_prob(site) -> torch.Tensor:
    """Log density of a sample site, masked like Pyro masks it but without its scale."""
    lp = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is None or mask is True:
        return lp
    if mask is False:
        return torch.zeros_like(lp)
    return torch.where(mask, lp, torch.zeros_like(lp))


class ImportanceWeightedELBO(MultimodalObjective, ELBO):
    """IWAE bound with ``num_samples`` importance samples per datum (and per stratum), optionally
    with the DReG gradient estimator; an ELBO for :class:`pyro.infer.SVI`.

    Args:
        num_samples: ``K``; ``K = 1`` gives the ordinary ELBO (with DReG: the "sticking the
            landing" gradient).
        dreg: use the doubly reparameterised gradient for the guide (needs reparameterised
            latent sites).

    ``beta`` (a keyword of the loss methods) multiplies the latent terms of ``log W``; the strata
    of a :class:`~pyro_mcvae.infer.objectives.StratifiedGuide` and their weights come from the
    shared :class:`MultimodalObjective`. Every site the guide samples is a latent. Site scales
    are not used (the bound is not a sum of per-site terms); site masks are.
    """

    scales_latents = False  # beta enters log W below

    def __init__(self, num_samples: int = 8, dreg: bool = False):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        super().__init__(num_particles=1, max_plate_nesting=MAX_PLATE_NESTING)
        self.num_samples, self.dreg = num_samples, bool(dreg)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its traces in its loss methods")

    def _vectorised(self, fn):
        def wrapped(*args, **kwargs):
            with pyro.plate("iw_samples", self.num_samples, dim=-(MAX_PLATE_NESTING + 1)):
                return fn(*args, **kwargs)
        return wrapped

    def log_weights(self, model, guide, *args, **kwargs):
        """Log importance weights ``(K, S, batch)`` (``S`` strata, 1 without), the strata weights
        ``(S, batch)``, the guide's latent sites and ``beta``."""
        model, guide, kwargs, beta, weights = self._programs(model, guide, args, kwargs)
        guide_tr = poutine.trace(self._vectorised(guide)).get_trace(*args, **kwargs)
        model_tr = poutine.trace(
            poutine.replay(self._vectorised(model), trace=guide_tr)
        ).get_trace(*args, **kwargs)
        log_w, latents = 0.0, []
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = _site_log_prob(site)
            log_w = log_w + (beta * lp if name in guide_tr.nodes else lp)
        for name, site in guide_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            if isinstance(site["fn"], SampledCompletion):
                raise ValueError(f"importance weights need the guide's whole density, and site {name!r} completes "
                                 "absent components by sampling (the NN-MRF): train with masks using "
                                 "elbo='trace'")
            fn = detach_distribution(site["fn"]) if self.dreg else site["fn"]
            log_w = log_w - beta * _site_log_prob(dict(site, fn=fn))
            latents.append((site["value"], len(site["fn"].event_shape),
                            scored_entries(site["fn"], site["mask"]), site["fn"]))
        if not isinstance(log_w, torch.Tensor) or log_w.dim() > MAX_PLATE_NESTING + 1:
            raise ValueError("the model's log densities do not have the (K, strata, batch) layout "
                             "this objective expects")
        while log_w.dim() < 3:
            log_w = log_w.unsqueeze(1)
        batch = log_w.shape[-1]
        if weights is None:
            weights = torch.ones(1, batch, device=log_w.device, dtype=log_w.dtype)
        log_w = log_w.expand(self.num_samples, weights.shape[0], batch)
        return log_w, weights.to(log_w.dtype), latents, beta

    def _bound(self, log_w, weights) -> torch.Tensor:
        per_stratum = torch.logsumexp(log_w, 0) - math.log(self.num_samples)  # (S, batch)
        return torch.where(weights > 0, weights * per_stratum, torch.zeros_like(per_stratum)).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """Negative IWAE bound (a float), summed over the batch."""
        with torch.no_grad():
            log_w, weights, _, _ = self.log_weights(model, guide, *args, **kwargs)
            return -self._bound(log_w, weights).item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Negative IWAE bound as a tensor (its gradient is the plain IWAE gradient)."""
        log_w, weights, _, _ = self.log_weights(model, guide, *args, **kwargs)
        return -self._bound(log_w, weights)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, weights, latents, beta = self.log_weights(model, guide, *args, **kwargs)
        loss = -self._bound(log_w, weights)
        if not self.dreg:
            surrogate = loss
        else:
            norm = torch.softmax(log_w.detach(), 0)  # (K, S, batch)
            extra = 0.0
            for value, event_dim, scored, fn in latents:
                if value.requires_grad:
                    hook, term = self._dreg_correction(value, event_dim, scored, fn, norm, weights, beta)
                    value.register_hook(hook)
                    extra = extra + term
            terms = (norm * log_w).sum(0)
            surrogate = extra - torch.where(weights > 0, weights * terms, torch.zeros_like(terms)).sum()
        surrogate.backward()
        return loss.item()

    @staticmethod
    def _dreg_correction(value, event_dim, scored, fn, norm, weights, beta):
        """The gradient hook on a latent value and the extra surrogate term of the DReG estimator
        (see the module docstring). ``norm``: normalised weights ``(K, S, batch)``; ``weights``:
        strata weights ``(S, batch)``."""
        batch_dims = value.dim() - event_dim
        # Latents outside the strata plate (S = 1) see the weights of stratum 0.
        w = norm[:, : value.shape[batch_dims - 2]] if batch_dims == 3 else norm[:, 0]
        pad = (1,) * event_dim
        while isinstance(fn, ExpandedDistribution):  # plates broadcast sites by wrapping them
            fn = fn.base_dist
        log_q = fn.component_log_probs(value.detach()) if isinstance(fn, MixtureScoredSite) else None
        if log_q is None:
            factor = ((1.0 - beta) + beta * w).reshape(w.shape + pad)  # times wt_k from the surrogate
            if scored is not None:  # entries q does not score have no score term to replace
                factor = torch.where(scored.to(value.device), factor, torch.ones_like(factor))
            return (lambda grad: grad * factor), 0.0
        # Mixture site: draws (K, S, batch, E) of stratum s, responsibilities r_j (K, S, batch, S).
        strata = log_q.shape[-1]
        own_index = torch.arange(strata, device=value.device).view(strata, 1, 1).expand(
            log_q.shape[:-1] + (1,))
        outer = weights * w  # the surrogate's coefficient of log W_k: strata weight x wt_k
        outer = torch.where(weights > 0, outer, torch.zeros_like(outer))
        with torch.enable_grad():
            z = value.detach().requires_grad_()
            frozen = detach_distribution(fn).component_log_probs(z)  # gradient through z only
            log_r = frozen - torch.logsumexp(frozen, -1, keepdim=True)
            log_r_own = log_r.gather(-1, own_index).squeeze(-1)  # (K, S, batch)
            r_own = log_r_own.detach().exp()
            safe = torch.where(torch.isfinite(log_r_own), log_r_own, torch.zeros_like(log_r_own))
            (g_own,) = torch.autograd.grad((-beta * outer * r_own * safe).sum(), z)
        factor = (1.0 - beta * r_own * (1.0 - w)).reshape(w.shape + pad)
        # The other components' scores, at fixed draws: -beta sum_k wt_k sum_{j != s} r_j log q_j.
        r_other = log_r.detach().exp().scatter(-1, own_index, 0.0)
        live = fn.component_log_probs(value.detach())
        other = torch.where(r_other > 0, r_other * live, torch.zeros_like(live)).sum(-1)
        term = beta * (outer * other).sum()  # the surrogate is minimised: minus the bound's term
        return (lambda grad: grad * factor - g_own), term
