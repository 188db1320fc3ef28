"""Importance-weighted objective (IWAE) with an optional DReG gradient, as a loss for Pyro's SVI.

Pyro has neither, so this is a custom loss with the ``loss`` / ``loss_and_grads`` interface of an
ELBO. It runs the guide and the model under one vectorised plate of ``K`` importance samples and
works with every model of this library, including the stratified mixture guides (MMVAE, MoPoE,
MMVAE+), for which the bound is the stratified one of MMVAE::

    L = sum_n sum_s w_sn [ logsumexp_k log W_ksn - log K ],
    log W = log p(x | z) + beta * (log p(z) - log q(z | x)),

with ``s`` the strata (a single one for the other guides) and ``w_sn`` their weights.

DReG (doubly reparameterised gradients): the encoder's gradient is
``sum_k wt_k^2 d log W_k / d z_k * d z_k / d phi`` with ``wt`` the normalised weights and ``q``'s
parameters held fixed inside ``log W``; the decoder and prior gradients are the usual
``sum_k wt_k d log W_k``. The extra factor ``wt_k`` on the encoder path is applied by a gradient
hook on every latent value, so one backward pass gives both.
"""

from __future__ import annotations

import copy
import math

import torch
import pyro
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = ["ImportanceWeightedELBO", "detach_distribution"]


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, torch.distributions.Distribution):
        return detach_distribution(value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
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


def _site_log_prob(site) -> torch.Tensor:
    """Log density of a sample site, masked like Pyro masks it but without its scale."""
    lp = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is None or mask is True:
        return lp
    if mask is False:
        return torch.zeros_like(lp)
    return torch.where(mask, lp, torch.zeros_like(lp))


class ImportanceWeightedELBO:
    """IWAE bound with ``num_samples`` importance samples per datum (and per stratum), optionally
    with the DReG gradient estimator; a drop-in ``loss`` for :class:`pyro.infer.SVI`.

    Args:
        num_samples: ``K``; ``K = 1`` gives the ordinary ELBO (with DReG: the "sticking the
            landing" gradient).
        dreg: use the doubly reparameterised gradient for the guide (needs reparameterised
            latent sites).
        max_plate_nesting: plates the model uses at most; the sample plate goes to their left.

    The model and guide take ``(xs, beta=..., mask=...)`` like :class:`~pyro_mcvae.MCVAE`'s: every
    site the guide samples is a latent and gets the factor ``beta``; strata weights come from the
    guide's ``stratum_weights(mask, batch, device, dtype)`` when it has one. Site scales set by
    plates and ``poutine.scale`` are not used (the bound is not a sum of per-site terms).
    """

    def __init__(self, num_samples: int = 8, dreg: bool = False, max_plate_nesting: int = 2):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples, self.dreg, self.max_plate_nesting = num_samples, bool(dreg), max_plate_nesting

    def _vectorised(self, fn):
        def wrapped(*args, **kwargs):
            with pyro.plate("iw_samples", self.num_samples, dim=-(self.max_plate_nesting + 1)):
                return fn(*args, **kwargs)
        return wrapped

    def log_weights(self, model, guide, *args, **kwargs):
        """Log importance weights ``(K, S, batch)`` (``S`` strata, 1 without), the strata weights
        ``(S, batch)`` and the latent values of the guide."""
        guide_tr = poutine.trace(self._vectorised(guide)).get_trace(*args, **kwargs)
        model_tr = poutine.trace(
            poutine.replay(self._vectorised(model), trace=guide_tr)
        ).get_trace(*args, **kwargs)
        beta = float(kwargs.get("beta", 1.0))
        log_w, latents = 0.0, []
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = _site_log_prob(site)
            log_w = log_w + (beta * lp if name in guide_tr.nodes else lp)
        for site in guide_tr.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            fn = detach_distribution(site["fn"]) if self.dreg else site["fn"]
            log_w = log_w - beta * _site_log_prob(dict(site, fn=fn))
            latents.append((site["value"], len(site["fn"].event_shape)))
        if not isinstance(log_w, torch.Tensor) or log_w.dim() > self.max_plate_nesting + 1:
            raise ValueError("the model's log densities do not have the (K, strata, batch) layout "
                             "this objective expects")
        while log_w.dim() < 3:
            log_w = log_w.unsqueeze(1)
        batch = log_w.shape[-1]
        mask = kwargs.get("mask")
        if hasattr(guide, "stratum_weights"):
            weights = guide.stratum_weights(mask, batch, log_w.device, log_w.dtype)
        else:
            weights = torch.ones(1, batch, device=log_w.device, dtype=log_w.dtype)
        log_w = log_w.expand(self.num_samples, weights.shape[0], batch)
        return log_w, weights, latents

    def _bound(self, log_w, weights) -> torch.Tensor:
        per_stratum = torch.logsumexp(log_w, 0) - math.log(self.num_samples)  # (S, batch)
        return torch.where(weights > 0, weights * per_stratum, torch.zeros_like(per_stratum)).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """Negative IWAE bound (a float), summed over the batch."""
        with torch.no_grad():
            log_w, weights, _ = self.log_weights(model, guide, *args, **kwargs)
            return -self._bound(log_w, weights).item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Negative IWAE bound as a tensor (its gradient is the plain IWAE gradient)."""
        log_w, weights, _ = self.log_weights(model, guide, *args, **kwargs)
        return -self._bound(log_w, weights)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, weights, latents = self.log_weights(model, guide, *args, **kwargs)
        loss = -self._bound(log_w, weights)
        if not self.dreg:
            surrogate = loss
        else:
            norm = torch.softmax(log_w.detach(), 0)  # (K, S, batch)
            for value, event_dim in latents:
                if value.requires_grad:
                    batch_dims = value.dim() - event_dim
                    # Latents outside the strata plate (S = 1) see the weights of stratum 0.
                    w = norm[:, : value.shape[batch_dims - 2]] if batch_dims == 3 else norm[:, 0]
                    w = w.reshape(w.shape + (1,) * event_dim)
                    value.register_hook(lambda grad, w=w: grad * w)
            terms = (norm * log_w).sum(0)
            surrogate = -torch.where(weights > 0, weights * terms, torch.zeros_like(terms)).sum()
        surrogate.backward()
        return loss.item()
