"""Importance weights of a model on its own posterior, with a defensive share of prior draws.

The guide program (or its :class:`~pyro_mcvae.models.base.ProposalGuide` program) is run ``K``
times in a vectorised particle plate, each draw is replayed into the model program, and::

    log W = log p(x_C, latents) - log r(latents)

with every latent site scored in full in both programs (an objective may leave some entries out
of its density ratio, an importance weight may not) and only the components ``C`` observed (the
programs' presence ``mask``). Mixture guides (MMVAE, MoPoE-VAE, MMVAE+) draw ``K`` latents per
stratum ``s`` (a mixture component of weight ``a_s``), as the training objectives do
(:class:`~pyro_mcvae.infer.objectives.MultimodalObjective`).

**Defensive mixture** (Hesterberg 1995). With ``defensive = alpha > 0`` each stratum also draws
``K_p = max(2, ceil(K alpha / (1 - alpha)))`` latents from the model's prior (the model program), and
every draw of the stratum, from either source, is weighted by the mixture density
``r_s = (1 - alpha') q_s + alpha' p(z)``, ``alpha' = K_p / (K + K_p)`` (the share actually drawn):
the stratum's ``K + K_p`` draws are then an ordinary sample of ``r_s``, stratified in two groups.
Its weights are bounded, ``W <= p(x_C | z) / alpha'`` (the likelihoods of this library are
bounded for a fixed or floored scale), so every moment is finite whatever the guide: an
encoder narrower than ``1 / sqrt(2)`` of the posterior's width gives ``q_s`` alone weights of
infinite variance, whose log-mean-exp converges slower than ``1 / K`` and whose delta-method
error understates the spread. ``q_s`` is the density the guide's site declares (the mixture,
or the stratum's own component); both give an unbiased estimate, as without prior draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..infer.objectives import MAX_PLATE_NESTING, MultimodalObjective
from ..models.base import ProposalGuide

__all__ = ["Draws", "importance_log_weights", "prior_draws"]


def prior_draws(num_samples: int, defensive: float) -> int:
    """``K_p = ceil(K alpha / (1 - alpha))`` prior draws per stratum next to ``K`` from the guide,
    at least 2 (a group's variance needs two draws); 0 without a defensive share."""
    if isinstance(defensive, bool) or not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be a share in [0, 1), got {defensive!r}")
    return max(2, math.ceil(num_samples * defensive / (1.0 - defensive) - 1e-9)) if defensive > 0 else 0


def _without_masks(fn):
    """``fn`` with its :class:`MaskedDistribution` layers removed (through ``Independent`` and
    expansion wrappers): the full density of every entry of the value."""
    if isinstance(fn, MaskedDistribution):
        return _without_masks(fn.base_dist)
    if isinstance(fn, torch.distributions.Independent):
        inner = _without_masks(fn.base_dist)
        return fn if inner is fn.base_dist else dist.Independent(inner, fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        inner = _without_masks(fn.base_dist)
        return fn if inner is fn.base_dist else inner.expand(fn.batch_shape)
    return fn


class _ScoreEveryLatent(Messenger):
    """Latent sites are drawn and scored by their full law: an objective may leave some entries
    out of its density ratio (MMVAE+'s private latents outside their stratum), an importance
    weight may not. Observed sites keep their masks (absent components)."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["fn"] = _without_masks(msg["fn"])


def _scoring(fn):
    def program(*args, **kwargs):
        with _ScoreEveryLatent():
            return fn(*args, **kwargs)
    return program


class _Programs(MultimodalObjective):
    """The objectives' wrapping of the programs (strata plate for mixture guides), without beta;
    the strata are those of ``guide`` whichever program draws the latents (its proposal)."""

    scales_latents = False

    def __init__(self, guide):
        self.guide = guide

    def strata_weights(self, guide, args, kwargs):
        return MultimodalObjective.strata_weights(self.guide, args, kwargs)


def _log_density(site) -> torch.Tensor:
    """A sample site's log density, masked as Pyro masks it, unscaled (the objectives' own)."""
    from ..infer.objectives.iwae import _site_log_prob

    return _site_log_prob(site)


def _latent_sites(trace) -> list:
    return [s for s in trace.nodes.values()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]


def _layout(log_w: torch.Tensor) -> torch.Tensor:
    """Log weights as ``(K, S, B)`` (a strata dimension of 1 where the programs have none)."""
    if log_w.dim() > MAX_PLATE_NESTING + 1:
        raise ValueError("the model's log densities do not have the (K, strata, batch) layout")
    while log_w.dim() < MAX_PLATE_NESTING + 1:
        log_w = log_w.unsqueeze(-2)
    return log_w


def _present(components: Sequence[int] | None, batch: int, m: int, device) -> torch.Tensor | None:
    """Presence mask ``(B, M)`` of ``components`` (``None``: all present)."""
    if components is None or len(components) == m:
        return None
    mask = torch.zeros(batch, m, dtype=torch.bool, device=device)
    mask[:, list(components)] = True
    return mask


@dataclass(frozen=True)
class Draws:
    """Log weights of one set of draws, scored once per requested subset of components.

    Attributes:
        log_ws: one ``(N, S, B)`` tensor per scored subset, ``N = K + K_p`` draws per stratum
            (the guide's ``K`` first, then the prior's ``K_p``).
        log_a: ``(S, B)`` log strata weights (``-inf`` where a stratum is absent).
        groups: ``(K, K_p)`` (or ``(K,)``): the two groups along the first dimension, whose
            draws are i.i.d. within a group only (the standard errors need them apart).
    """

    log_ws: list
    log_a: torch.Tensor
    groups: tuple


@torch.no_grad()
def _part(model, xs, given, scored, num_samples: int, share: float, from_prior: bool) -> Draws:
    """``num_samples`` draws per stratum from the guide (or the prior, ``from_prior``), weighted
    by ``(1 - share) q + share p`` (by ``q`` alone for ``share = 0``)."""
    batch, m, device = xs[0].shape[0], model.num_components, xs[0].device
    q_mask = _present(given, batch, m, device)
    draw = model.guide.proposal if isinstance(model.guide, ProposalGuide) else model.guide
    model_fn, guide_fn, _, _, weights = _Programs(model.guide)._programs(model.model, draw, (xs,), {"mask": q_mask})
    model_fn, guide_fn = _scoring(model_fn), _scoring(guide_fn)
    particles = pyro.plate("iw_samples", num_samples, dim=-(MAX_PLATE_NESTING + 1))
    with particles:
        if from_prior:  # the model program draws from the prior; the guide scores the same values
            source = poutine.trace(model_fn).get_trace(xs, mask=q_mask)
            guide_tr = poutine.trace(poutine.replay(guide_fn, trace=source)).get_trace(xs, mask=q_mask)
        else:
            guide_tr = poutine.trace(guide_fn).get_trace(xs, mask=q_mask)
    log_r = sum(_log_density(s) for s in _latent_sites(guide_tr))
    log_ws, log_prior = [], None
    for components in scored:
        with particles:
            model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(
                xs, mask=_present(components, batch, m, device))
        if log_prior is None:  # the latents' prior density does not depend on what is observed
            log_prior = sum(_log_density(s) for s in _latent_sites(model_tr))
            if share > 0:  # the mixture's density, whose prior part is the model's latent sites
                log_r = torch.logaddexp(math.log1p(-share) + log_r, math.log(share) + log_prior)
        log_obs = sum(_log_density(s) for s in model_tr.nodes.values()
                      if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s))
        log_ws.append(_layout(log_prior + log_obs - log_r))
    if weights is None:
        weights = torch.ones(1, batch, dtype=log_ws[0].dtype, device=device)
    log_a = torch.where(weights > 0, weights.log(), torch.full_like(weights, -math.inf)).to(log_ws[0].dtype)
    shape = (num_samples, weights.shape[0], batch)
    return Draws([w.expand(shape) for w in log_ws], log_a, (num_samples,))


def _draws(model, xs, given, scored, num_samples: int, defensive: float, chunk: int | None) -> Draws:
    """The guide's ``K`` and the prior's ``K_p`` draws per stratum, ``chunk`` at a time."""
    k_prior = prior_draws(num_samples, defensive)
    share = k_prior / (num_samples + k_prior)
    parts = []
    for count, from_prior in ((num_samples, False), (k_prior, True)):
        step = min(chunk or count, count) if count else 0
        for start in range(0, count, max(step, 1)):
            parts.append(_part(model, xs, given, scored, min(step, count - start), share, from_prior))
    log_ws = [torch.cat(ws, 0) for ws in zip(*(p.log_ws for p in parts))]
    return Draws(log_ws, parts[0].log_a, (num_samples, k_prior) if k_prior else (num_samples,))


def importance_log_weights(model, xs, given: Sequence[int] | None = None,
                           scored: Sequence[Sequence[int] | None] = (None,), num_samples: int = 100,
                           defensive: float = 0.0, chunk: int | None = None) -> Draws:
    """Log importance weights of ``model`` on data ``xs``, ``K = num_samples`` draws per datum
    (and per stratum) from the guide with only the ``given`` components present (``None``: all),
    plus ``K_p`` from the prior with a ``defensive`` share (see the module docstring); the
    guide's :class:`~pyro_mcvae.models.base.ProposalGuide` program draws when it has one.

    The draws are replayed into the model once per entry of ``scored``, with only those
    components observed (``None``: all), giving one ``log W`` per entry on the same draws.
    ``chunk``: draws per pass (memory); the estimator does not depend on it.

    Returns:
        :class:`Draws`: ``(K + K_p, S, B)`` log weights per entry of ``scored`` (``S`` strata,
        1 for guides without), the ``(S, B)`` log strata weights and the two groups' sizes.
    """
    return _draws(model, model.check_data(xs), given, scored, num_samples, defensive, chunk)
