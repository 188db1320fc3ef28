"""Log-likelihoods of a model by importance sampling from its own posterior.

One estimator serves every registered method with a tractable prior (all but the NN-MRF, whose
energy has no normaliser): the guide program is run ``K`` times in a vectorised particle plate,
each draw is replayed into the model program, and the log weight of a draw is::

    log W = log p(x_C, latents) - log q(latents | x_C)

with every latent site scored in full in both programs (an objective may leave some entries out
of its density ratio, an importance weight may not) and only the components ``C`` observed (the
programs' presence ``mask``). Mixture guides (MMVAE, MoPoE-VAE, MMVAE+) draw ``K`` latents
per stratum ``s`` (a mixture component of weight ``a_s``), exactly as the training objectives do
(:class:`~pyro_mcvae.infer.objectives.MultimodalObjective`), so ``K S`` draws in all.

Joint (or marginal, over components ``C``) log-likelihood, per datum::

    log p^(x_C) = log sum_s a_s (1/K) sum_k W_ks          (log-mean-exp, never exp of a log weight)

``p^`` is unbiased, so ``log p^`` is a stochastic lower bound that converges to ``log p(x_C)`` as
``K`` grows (bias about ``-Var(p^) / (2 p^2)``; for a guide without strata its expectation is the
IWAE bound of the same ``K``). For a mixture guide the weight divides by the density the guide's
site declares: the mixture ``q_mix(z)`` (``density="mixture"``: ``sum_s a_s q_s / q_mix = 1``, so
the sum is unbiased; each draw is scored by all ``S`` experts, ``O(K S^2)`` terms per datum) or
the stratum's own ``q_s(z)`` (``density="stratum"``: each stratum is an unbiased estimate alone).

Conditional ``log p(x_B | x_A)`` (``estimator="ratio"``, default): draws from the subset
posterior of the given components ``A`` (the guide run with only ``A`` present), weighted by
``W^A`` (the model with only ``A`` observed), and the self-normalised ratio::

    log p^(x_B | x_A) = log sum_ks a_s W^A_ks p(x_B | z_ks) - log sum_ks a_s W^A_ks,

a ratio of two unbiased estimates of ``p(x_A, x_B)`` and ``p(x_A)`` on the same draws: consistent
(bias ``O(1/K)``, of either sign), not unbiased. ``estimator="difference"`` subtracts two
independent estimates instead, ``log p^(x_{A u B}) - log p^(x_A)``, the first from the subset
posterior of ``A u B`` (also consistent, bias ``O(1/K)`` of either sign). It is the better one when
``x_B`` says much about latents that the proposal of ``A`` ignores and the joint posterior is a
good proposal: in the linear-Gaussian tests (``tests/metrics/test_likelihood.py``, ``K = 1000``)
its spread over repeats was up to 11 times smaller (never larger) for the block methods and
mostly smaller for MVAE; for the mixture guides, whose joint posterior puts only ``1/S`` of the
draws on each expert, neither was uniformly better (each up to 3 times smaller than the other,
depending on the datum and the subsets).

What the subset posterior is, per method (the guides' own treatment of absent components):

- GMRF, ALMRF, the independent ablation (block latents): ``q(z_A | x_A) p(z_B' | z_A)``, the
  encoders of ``A`` for their blocks, the prior's exact conditional for the other blocks ``B'``
  (Gaussian for the GMRF and the ablation, a GIG mixture of Gaussians for the ALMRF, which takes
  one ``A`` for the whole batch). The prior conditional cancels in the weight:
  ``W^A = p(z_A) p(x_A | z_A) / q(z_A | x_A)``, and the ratio estimator's numerator reads
  ``p(x_B | z_B)`` at blocks drawn from ``p(z_B | z_A)``: encode ``A``, condition the prior. For
  ``|A| > 1``, ``q(z_A | x_A)`` keeps the global network's couplings among the blocks of ``A``
  (fed zeros for the other components), as the guide does in training with absent components;
  ``MCVAE.condition`` instead encodes each observed block alone. Both are valid proposals.
- MVAE: the product of the experts of ``A`` and the prior expert, ``q(z | x_A)``.
- MMVAE: the uniform mixture of the experts of ``A``, ``K`` draws per expert.
- MoPoE-VAE: the uniform mixture of the products of every non-empty subset of ``A``.
- MMVAE+: its :meth:`~pyro_mcvae.models.mmvaeplus.MMVAEPlusGuide.proposal` (a guide declares one
  through :class:`~pyro_mcvae.models.base.ProposalGuide`; the others' proposal is their guide
  program): the shared ``z`` as MMVAE; in every stratum the private ``w_j ~ q(w_j | x_j)`` of
  each component of ``A`` and ``w_j ~ p(w_j)`` for the others. The guide program itself draws
  ``w_j``, ``j != m``, from the auxiliary prior ``r_j`` and its objective leaves them out of the
  density ratio; an importance weight may not, and with ``r_j`` as proposal the factor
  ``p(w_j) / r_j(w_j)`` is heavy-tailed (infinite variance once ``r_j`` is narrower than
  ``p / sqrt(2)``) and ``p(x_j | z, w_j)`` at a ``w_j`` that ignores ``x_j`` degenerates on
  images. With the proposal the private part ``Q(w)`` is the same in every stratum, so the
  proposal is the mixture ``q_mix(z) Q(w)`` and the stratified sum is unbiased as for MMVAE;
  the ratio estimator's numerator reads ``p(x_B | z, w_B)`` at ``w_B`` drawn from the prior, as
  ``p(x_B | x_A) = E[p(x_B | z, w_B)]`` with ``w_B ~ p(w_B)`` asks. (Measured on the
  linear-Gaussian test: against the guide program as proposal, the spread of the joint estimate
  over repeats fell from 0.06-0.29 to 0.005-0.016 nats, of the marginal ``log p(x_1, x_2)``
  from 0.05-0.24 to 0.004-0.019.)

Standard errors. The per-datum estimate is a smooth function of means of ``K`` i.i.d. draws per
stratum; its delta-method standard error is ``sqrt(sum_s Var_k(c_ks) / K)`` with ``c_ks =
a_s W_ks / p^`` (and ``c = a W p(x_B|z) / N^ - a W / D^`` for the ratio), computed from the same
draws. It is reliable when the effective sample size (``ess``, Kish's, of the normalised
weights) is a sizeable fraction of ``K``; with heavy-tailed weights it understates the error.
Measured on the copula benchmark (GMRF, 100 test tuples, ``log p(x_2, x_3, x_4 | x_1)``): the ratio
estimator gave 0.47 nats at ``K = 1000`` and 3.52 at ``K = 10,000`` (numerator ESS of a few
draws), the difference estimator 4.993 at both; the benchmarks report both, the difference first.

Draws come from torch's global generator (Pyro samples from it); ``seed`` seeds it inside
:func:`torch.random.fork_rng`, so the same seed gives the same numbers and the caller's random
state is left as it was.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
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
from ..models.base import MCMCPrior, ProposalGuide, SelfSamplingPrior
from ..validation import check_component_indices, check_components

__all__ = [
    "ESTIMATORS",
    "LikelihoodEstimate",
    "conditional_log_likelihood",
    "importance_log_weights",
    "log_likelihood",
    "log_mean_exp",
]

ESTIMATORS = ("ratio", "difference")


# -- numerics -------------------------------------------------------------------------------------
def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log(mean(exp(x)))`` along ``dim`` without overflow or underflow: the maximum is taken out
    first, so log weights of ``1e4`` or ``-1e4`` give finite results. ``-inf`` entries count as
    zeros (all ``-inf``: ``-inf``); a ``+inf`` entry gives ``+inf``; NaN propagates."""
    top = x.amax(dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all -inf, or +inf: no shift
    return top.squeeze(dim) + torch.log(torch.mean(torch.exp(x - top), dim))


def _stratified(log_w: torch.Tensor, log_a: torch.Tensor):
    """``log sum_s a_s mean_k exp(log_w_ks)`` ``(B,)`` and the relative contributions
    ``c_ks = a_s W_ks / p^`` ``(K, S, B)`` (their mean over ``k``, summed over ``s``, is 1).
    ``log_w`` ``(K, S, B)``, ``log_a`` ``(S, B)`` (``-inf`` where a stratum is absent)."""
    terms = torch.where(torch.isfinite(log_a), log_a + log_w, torch.full_like(log_w, -math.inf))
    log_est = log_mean_exp(terms.flatten(0, 1), 0) + math.log(terms.shape[1])
    return log_est, torch.exp(terms - log_est)


def _delta_std_error(contrib: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum_s Var_k(c_ks) / K)`` ``(B,)`` from influence terms ``(K, S, B)`` (NaN at K = 1)."""
    k = contrib.shape[0]
    if k < 2:
        return torch.full(contrib.shape[2:], math.nan, dtype=contrib.dtype, device=contrib.device)
    return (contrib.var(0, correction=1).sum(0) / k).sqrt()


def _kish_ess(contrib: torch.Tensor) -> torch.Tensor:
    """Effective sample size ``(sum c)^2 / sum c^2`` over all ``K S`` draws ``(B,)``."""
    flat = contrib.flatten(0, 1)
    return flat.sum(0).pow(2) / flat.pow(2).sum(0)


# -- the result -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LikelihoodEstimate:
    """Per-datum log-likelihood estimates and their errors.

    Attributes:
        per_datum: ``(N,)`` the estimates (nats).
        std_error: ``(N,)`` delta-method Monte Carlo standard error of each estimate (NaN for
            ``K = 1``).
        ess: ``(N,)`` Kish's effective sample size of the normalised importance weights (for
            the ratio estimator: the smaller of the numerator's, ``W^A p(x_B | z)``, and the
            denominator's, ``W^A``; for the difference: of the joint's).
        num_samples: ``K``, draws per datum (per stratum for mixture guides).
    """

    per_datum: torch.Tensor
    std_error: torch.Tensor
    ess: torch.Tensor
    num_samples: int

    @property
    def mean(self) -> float:
        """The estimates' mean over the data."""
        return float(self.per_datum.mean())

    @property
    def data_std_error(self) -> float:
        """Standard error of :attr:`mean` as an estimate of the population's mean log-likelihood
        (spread across data over ``sqrt(N)``); NaN for one datum."""
        n = self.per_datum.numel()
        return float(self.per_datum.std() / math.sqrt(n)) if n > 1 else math.nan

    @property
    def monte_carlo_error(self) -> float:
        """Monte Carlo standard error of :attr:`mean` given the data, ``sqrt(sum se_n^2) / N``."""
        return float(self.std_error.pow(2).sum().sqrt() / self.per_datum.numel())

    def summary(self) -> dict:
        """Plain numbers for tables and JSON."""
        return {"mean": self.mean, "data_std_error": self.data_std_error,
                "monte_carlo_error": self.monte_carlo_error, "num_samples": self.num_samples,
                "num_data": self.per_datum.numel(), "min_ess": float(self.ess.min())}


# -- the importance weights -----------------------------------------------------------------------
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


def _present(components: Sequence[int] | None, batch: int, m: int, device) -> torch.Tensor | None:
    """Presence mask ``(B, M)`` of ``components`` (``None``: all present)."""
    if components is None or len(components) == m:
        return None
    mask = torch.zeros(batch, m, dtype=torch.bool, device=device)
    mask[:, list(components)] = True
    return mask


@torch.no_grad()
def importance_log_weights(model, xs, given: Sequence[int] | None = None,
                           scored: Sequence[Sequence[int] | None] = (None,), num_samples: int = 100):
    """Log importance weights of ``model`` on data ``xs``, ``K = num_samples`` draws per datum
    (and per stratum) from the guide with only the ``given`` components present (``None``: all);
    the guide's :class:`~pyro_mcvae.models.base.ProposalGuide` program draws them when it has one.

    The draws are replayed into the model once per entry of ``scored``, with only those
    components observed (``None``: all), giving one ``log W`` per entry on the same draws.

    Returns:
        ``(log_ws, log_a)``: a list of ``(K, S, B)`` log weights (``S`` strata, 1 for guides
        without), and the log strata weights ``(S, B)`` (``-inf`` for absent strata).
    """
    xs = check_components(xs, model.component_dims)
    batch, m, device = xs[0].shape[0], model.num_components, xs[0].device
    q_mask = _present(given, batch, m, device)
    draw = model.guide.proposal if isinstance(model.guide, ProposalGuide) else model.guide
    model_fn, guide_fn, _, _, weights = _Programs(model.guide)._programs(model.model, draw, (xs,), {"mask": q_mask})
    model_fn, guide_fn = _scoring(model_fn), _scoring(guide_fn)
    particles = pyro.plate("iw_samples", num_samples, dim=-(MAX_PLATE_NESTING + 1))
    with particles:
        guide_tr = poutine.trace(guide_fn).get_trace(xs, mask=q_mask)
    latents = [s for s in guide_tr.nodes.values()
               if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    log_q = sum(_log_density(s) for s in latents)
    log_ws = []
    for components in scored:
        with particles:
            model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(
                xs, mask=_present(components, batch, m, device))
        log_p = sum(_log_density(s) for s in model_tr.nodes.values()
                    if s["type"] == "sample" and not site_is_subsample(s))
        log_w = log_p - log_q
        if log_w.dim() > MAX_PLATE_NESTING + 1:
            raise ValueError("the model's log densities do not have the (K, strata, batch) layout")
        while log_w.dim() < MAX_PLATE_NESTING + 1:
            log_w = log_w.unsqueeze(-2)
        log_ws.append(log_w)
    if weights is None:
        weights = torch.ones(1, batch, dtype=log_ws[0].dtype, device=device)
    log_a = torch.where(weights > 0, weights.log(), torch.full_like(weights, -math.inf)).to(log_ws[0].dtype)
    shape = (num_samples, weights.shape[0], batch)
    return [w.expand(shape) for w in log_ws], log_a


# -- the estimators -------------------------------------------------------------------------------
def _check(model, xs, num_samples, chunk, batch_size):
    for name, v in (("num_samples", num_samples), ("chunk", chunk), ("batch_size", batch_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(model.prior, (SelfSamplingPrior, MCMCPrior)):
        raise ValueError(f"{type(model.prior).__name__} has no normalised density (an energy sampled by "
                         "MCMC): its likelihood cannot be estimated by importance sampling")
    xs = model.check_data(xs)
    if xs[0].shape[0] == 0:
        raise ValueError("xs holds no data (batch size 0)")
    return xs


@contextmanager
def _seeded(seed, device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _sampled(model, xs, given, scored, num_samples, chunk, batch_size):
    """Log weights ``[(K, S, N)]`` and log strata weights ``(S, N)`` over data batches and K-chunks."""
    n = xs[0].shape[0]
    step_b = batch_size or n
    step_k = min(chunk or num_samples, num_samples)
    per_batch, log_as = [], []
    for start in range(0, n, step_b):
        part = [x[start:start + step_b] for x in xs]
        chunks, log_a = [], None
        for k0 in range(0, num_samples, step_k):
            log_ws, log_a = importance_log_weights(model, part, given, scored, min(step_k, num_samples - k0))
            chunks.append(log_ws)
        per_batch.append([torch.cat(ws, 0) for ws in zip(*chunks)])
        log_as.append(log_a)
    return [torch.cat(ws, -1) for ws in zip(*per_batch)], torch.cat(log_as, -1)


def _components(components, m, name, hint=""):
    if components is None:
        return list(range(m))
    comps = check_component_indices(components, m, name)
    if not comps:
        raise ValueError(f"{name}s must name at least one component{hint}")
    return comps


def log_likelihood(model, xs, num_samples: int = 1000, components: Sequence[int] | None = None,
                   batch_size: int | None = 256, chunk: int | None = 100,
                   seed: int | None = None) -> LikelihoodEstimate:
    """Importance-sampled ``log p(x_C)`` per datum, from the model's own posterior given ``x_C``.

    Args:
        model: an :class:`~pyro_mcvae.models.base.MCVAE` (any registered method but the NN-MRF).
        xs: ``(N, M, D)`` or a list of ``M`` tensors ``(N, D_k)``.
        num_samples: ``K`` draws per datum (per stratum for mixture guides).
        components: ``C``, the components whose marginal likelihood is wanted (``None``: all,
            the joint ``log p(x_1..x_M)``).
        batch_size: data points per pass (``None``: all at once).
        chunk: draws per pass (``None``: all ``K``). Memory grows with ``batch_size * chunk``
            (times the strata of a mixture guide); the estimator does not depend on either, the
            numbers drawn for a given seed do (the order of the draws).
        seed: seeds the draws (see the module docstring); ``None`` continues the global stream.

    Returns:
        a :class:`LikelihoodEstimate` over the ``N`` data.
    """
    xs = _check(model, xs, num_samples, chunk, batch_size)
    comps = _components(components, model.num_components, "component")
    with _seeded(seed, xs[0].device):
        (log_w,), log_a = _sampled(model, xs, comps, [comps], num_samples, chunk, batch_size)
    log_est, contrib = _stratified(log_w, log_a)
    return LikelihoodEstimate(log_est, _delta_std_error(contrib), _kish_ess(contrib), num_samples)


def conditional_log_likelihood(model, xs, given: Sequence[int], target: Sequence[int],
                               num_samples: int = 1000, estimator: str = "ratio",
                               batch_size: int | None = 256, chunk: int | None = 100,
                               seed: int | None = None) -> LikelihoodEstimate:
    """Importance-sampled ``log p(x_B | x_A)`` per datum, ``A = given``, ``B = target`` (disjoint).

    ``estimator="ratio"``: the self-normalised estimate on draws from the subset posterior of
    ``A``; ``"difference"``: ``log p^(x_{A u B}) - log p^(x_A)`` from two independent runs (their
    standard errors add in quadrature). See the module docstring for both, per method. The
    other arguments are those of :func:`log_likelihood`; ``xs`` holds every component (those
    outside ``A u B`` are ignored but must be finite).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    m = model.num_components
    a = _components(given, m, "given component",
                    " (the marginal log p(x_B) is log_likelihood(model, xs, components=B))")
    b = _components(target, m, "target component")
    if set(a) & set(b):
        raise ValueError(f"given and target components must be disjoint, got {a} and {b}")
    both = sorted(a + b)
    if estimator == "difference":
        first = log_likelihood(model, xs, num_samples, both, batch_size, chunk, seed)
        second = log_likelihood(model, xs, num_samples, a, batch_size, chunk,
                                None if seed is None else seed + 1)
        return LikelihoodEstimate(first.per_datum - second.per_datum,
                                  (first.std_error.pow(2) + second.std_error.pow(2)).sqrt(), first.ess,
                                  num_samples)
    xs = _check(model, xs, num_samples, chunk, batch_size)
    with _seeded(seed, xs[0].device):
        (log_wa, log_wab), log_a = _sampled(model, xs, a, [a, both], num_samples, chunk, batch_size)
    log_num, c_num = _stratified(log_wab, log_a)
    log_den, c_den = _stratified(log_wa, log_a)
    # The numerator's weights carry p(x_B | z) at latents drawn without x_B: their ESS is the one
    # that collapses when x_B pins the latents far more than the proposal does.
    ess = torch.minimum(_kish_ess(c_num), _kish_ess(c_den))
    return LikelihoodEstimate(log_num - log_den, _delta_std_error(c_num - c_den), ess, num_samples)
