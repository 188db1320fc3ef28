"""Log-likelihoods of a model by importance sampling from its own posterior, and their errors.

One estimator serves every registered method with a tractable prior (all but the NN-MRF, whose
energy has no normaliser). The weights (:mod:`pyro_mcvae.metrics.importance`): per datum ``K``
draws per stratum ``s`` (mixture guides; one stratum otherwise) from the guide given the
components ``C`` and, by default, ``K_p = max(2, ceil(K / 4))`` from the prior (a defensive share
``alpha = 0.2``), each weighted ``W = p(x_C, z) / r_s(z)`` by the mixture density
``r_s = (1 - alpha') q_s + alpha' p``, so that ``W <= p(x_C | z) / alpha'`` is bounded.

**Joint or marginal** ``log p(x_C)`` (:func:`log_likelihood`)::

    L_C = log p^(x_C),   p^ = sum_s a_s (1 / (K + K_p)) sum_k W_ks   (log-mean-exp)

``p^`` is unbiased, so ``E L_C <= log p(x_C)`` for every ``K`` (Jensen): a stochastic lower bound.
With bounded weights its expansion holds, ``E L_C = log p(x_C) - V_C / 2 + O(K^-2)``, ``V_C =
Var(p^) / p^2`` (the squared delta-method error below): a first-order bias of ``-se^2 / 2``.

**Conditional** ``log p(x_B | x_A)`` (:func:`conditional_log_likelihood`), ``estimator=``

- ``"difference"`` (default): ``L_{A u B} - U_A`` with ``U_A = L_A + V^_A``, two independent
  runs (the subset posteriors of ``A u B`` and of ``A``). ``U_A`` is ``L_A`` moved up by twice
  its estimated Jensen gap, so ``E U_A = log p(x_A) + V_A / 2 + O(K^-2)``: an upper estimate of
  ``log p(x_A)`` to first order. Hence::

      E[estimate] = log p(x_B | x_A) - (V_{A u B} + V_A) / 2 + O(K^-2)   (<= the truth)

  the first-order bias is negative and about ``-se^2 / 2`` (``se^2 = V^_{A u B} + V^_A``, the
  reported variance). The plain difference ``L_{A u B} - L_A`` has the first-order bias
  ``(V_A - V_{A u B}) / 2``, of either sign: it overstates whenever the marginal's proposal is the
  worse one (single-modality experts narrower than the posterior of one modality, as MMVAE's
  and MoPoE-VAE's tend to be): with the guide's draws alone it overstated by up to +0.73 nats at
  ``K = 10`` and +0.39 at ``K = 1000`` in ``tests/metrics/test_likelihood.py`` (MoPoE-VAE with
  experts too narrow), by +0.04 at ``K = 1000`` with the fitted MMVAE and MoPoE-VAE guides.
- ``"ratio"``: shared draws from the subset posterior of ``A`` (``W^A``, the model with ``A``
  observed), ``log N^ - log D^ - V^_D`` with ``N^ = p^(x_A, x_B)`` from ``W^A p(x_B | z)`` and
  ``D^ = p^(x_A)`` from ``W^A``: first-order bias ``-(V_N + V_D) / 2``, negative likewise (the
  plain ratio's is ``(V_D - V_N) / 2``, of either sign). Its numerator's weights degenerate
  when ``x_B`` pins the latents far more than the proposal of ``A`` does (the block methods:
  the prior's conditional for the other blocks): then it runs far below the truth.

What "first order" leaves out: the ``O(K^-2)`` terms, which the expansion controls once the
draws resolve the weights' tail (effective sample size in the tens). Below ``min_ess``
(default 10, Kish's ESS of the normalised weights, the smaller of the two terms') the standard
error is NaN, a warning says so and ``summary()["unreliable"]`` counts them: there a few draws
carry the estimate, their sample variance says nothing of the error, and the bias of ``L`` may be
far larger than ``se^2 / 2`` (the estimate is then only a lower bound for the joint and marginal;
for the conditional, the first-order argument gives no guarantee).

What the subset posterior of ``A`` is, per method (the guides' own treatment of absent
components; the defensive share adds the prior in every case):

- GMRF, ALMRF, the independent ablation (block latents): ``q(z_A | x_A) p(z_B' | z_A)``, the
  encoders of ``A`` for their blocks, the prior's exact conditional for the other blocks ``B'``
  (Gaussian for the GMRF and the ablation, a GIG mixture of Gaussians for the ALMRF, which takes
  one ``A`` for the whole batch). The prior conditional cancels in the weight. For ``|A| > 1``,
  ``q(z_A | x_A)`` keeps the global network's couplings among the blocks of ``A`` (fed zeros for
  the other components), as the guide does in training with absent components.
- MVAE: the product of the experts of ``A`` and the prior expert, ``q(z | x_A)``.
- MMVAE: the uniform mixture of the experts of ``A``, ``K`` draws per expert.
- MoPoE-VAE: the uniform mixture of the products of every non-empty subset of ``A``.
- MMVAE+: its :meth:`~pyro_mcvae.models.mmvaeplus.MMVAEPlusGuide.proposal` (a
  :class:`~pyro_mcvae.models.base.ProposalGuide`): the shared ``z`` as MMVAE; in every stratum
  ``w_j ~ q(w_j | x_j)`` for each component of ``A`` and ``w_j ~ p(w_j)`` for the others (the
  training program's auxiliary ``r_j`` would give heavy-tailed factors ``p(w_j) / r_j(w_j)``).

**Standard errors.** The estimate is a smooth function of means of i.i.d. draws within each
stratum and group (guide, prior); its delta-method variance is
``V^ = sum_s sum_g K_g Var_g(c_ks) / (K + K_p)^2`` with ``c_ks = a_s W_ks / p^`` (for the ratio
``c = c_N - c_D`` on the shared draws; for the difference the two runs' variances add). Bounded
weights make it consistent; ``tests/metrics/test_likelihood.py`` checks it against the spread over
repeats at ``K = 1000``. With a few dozen effective draws it is 10-25% too small (the sample
misses the weights' tail, and the estimate and its error fall together).

Draws come from torch's global generator (Pyro samples from it); ``seed`` seeds it inside
:func:`torch.random.fork_rng`, so the same seed gives the same numbers and the caller's random
state is left as it was.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.base import MCMCPrior, SelfSamplingPrior
from ..validation import check_component_indices
from .importance import _draws, importance_log_weights  # noqa: F401 (the weights' old home)

__all__ = [
    "DEFENSIVE",
    "ESTIMATORS",
    "MIN_ESS",
    "LikelihoodEstimate",
    "conditional_by_difference",
    "conditional_log_likelihood",
    "log_likelihood",
    "log_mean_exp",
]

ESTIMATORS = ("difference", "ratio")
DEFENSIVE = 0.2  # share of the proposal drawn from the prior: K / 4 more draws, bounded weights
MIN_ESS = 10.0  # fewer effective draws: no standard error


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
    ``c_ks = a_s W_ks / p^`` ``(N, S, B)`` (their mean over ``k``, summed over ``s``, is 1).
    ``log_w`` ``(N, S, B)``, ``log_a`` ``(S, B)`` (``-inf`` where a stratum is absent)."""
    terms = torch.where(torch.isfinite(log_a), log_a + log_w, torch.full_like(log_w, -math.inf))
    log_est = log_mean_exp(terms.flatten(0, 1), 0) + math.log(terms.shape[1])
    return log_est, torch.exp(terms - log_est)


def _delta_variance(contrib: torch.Tensor, groups: Sequence[int] | None = None) -> torch.Tensor:
    """``sum_s sum_g K_g Var_g(c_ks) / N^2`` ``(B,)`` from influence terms ``(N, S, B)`` whose first
    dimension holds ``groups`` of i.i.d. draws (default: one group); NaN where a group has fewer
    than 2 draws."""
    n = contrib.shape[0]
    total = torch.zeros(contrib.shape[2:], dtype=contrib.dtype, device=contrib.device)
    for part in contrib.split(list(groups or (n,)), 0):
        if part.shape[0] < 2:
            return torch.full_like(total, math.nan)
        total = total + part.shape[0] * part.var(0, correction=1).sum(0)
    return total / n**2


def _delta_std_error(contrib: torch.Tensor, groups: Sequence[int] | None = None) -> torch.Tensor:
    """``sqrt`` of :func:`_delta_variance` (one group: ``sqrt(sum_s Var_k(c_ks) / K)``)."""
    return _delta_variance(contrib, groups).sqrt()


def _kish_ess(contrib: torch.Tensor) -> torch.Tensor:
    """Effective sample size ``(sum c)^2 / sum c^2`` over all ``N S`` draws ``(B,)``."""
    flat = contrib.flatten(0, 1)
    return flat.sum(0).pow(2) / flat.pow(2).sum(0)


# -- the result -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LikelihoodEstimate:
    """Per-datum log-likelihood estimates and their errors.

    Attributes:
        per_datum: ``(N,)`` the estimates (nats).
        std_error: ``(N,)`` delta-method Monte Carlo standard error of each estimate; NaN where
            ``ess < min_ess`` (the error is unknown there) and for ``K = 1``.
        ess: ``(N,)`` Kish's effective sample size of the normalised importance weights (the
            smaller of the two terms' for a conditional).
        num_samples: ``K``, draws per datum (per stratum for mixture guides) from the guide; the
            defensive share adds ``ceil(K alpha / (1 - alpha))`` from the prior.
        variance: ``(N,)`` the delta-method variance ``V^`` everywhere, also where ``std_error``
            is NaN (the conditional's upper estimate of the marginal needs it).
        min_ess: the effective sample size below which ``std_error`` is NaN.
    """

    per_datum: torch.Tensor
    std_error: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    variance: torch.Tensor | None = None
    min_ess: float = MIN_ESS

    @property
    def reliable(self) -> torch.Tensor:
        """``(N,)`` bool: the estimate rests on at least ``min_ess`` effective draws."""
        return self.ess >= self.min_ess

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
        """Monte Carlo standard error of :attr:`mean` given the data, ``sqrt(sum se_n^2) / N``;
        NaN when any datum's error is unknown."""
        return float(self.std_error.pow(2).sum().sqrt() / self.per_datum.numel())

    def summary(self) -> dict:
        """Plain numbers for tables and JSON (``unreliable``: data below ``min_ess``)."""
        return {"mean": self.mean, "data_std_error": self.data_std_error,
                "monte_carlo_error": self.monte_carlo_error, "num_samples": self.num_samples,
                "num_data": self.per_datum.numel(), "min_ess": float(self.ess.min()),
                "unreliable": int((~self.reliable).sum())}


def _estimate(per_datum, variance, ess, num_samples, min_ess, what: str, depth: int = 0) -> LikelihoodEstimate:
    """The result, with NaN errors (and a warning) where the effective sample size is tiny. The
    warning's text is the same for every call of a line (Python shows it once); ``summary()``
    counts the estimates. ``depth``: frames between the caller's call and this function, beyond 1."""
    reliable = ess >= min_ess
    if not bool(reliable.all()):
        warnings.warn(f"{what} at K = {num_samples}: some estimates rest on fewer than {min_ess:g} effective "
                      "draws; their standard errors are NaN (a few draws carry each, and their spread says "
                      "nothing of the error; summary()['unreliable'] counts them)", RuntimeWarning,
                      stacklevel=3 + depth)
    std_error = torch.where(reliable, variance.sqrt(), torch.full_like(variance, math.nan))
    return LikelihoodEstimate(per_datum, std_error, ess, num_samples, variance, float(min_ess))


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


def _terms(model, xs, given, scored, num_samples, defensive, chunk, batch_size, seed):
    """Per scored subset ``(log p^, V^, contributions)`` over the data, ``batch_size`` at a time,
    and the draws' groups."""
    n = xs[0].shape[0]
    step = batch_size or n
    out, groups = [[] for _ in scored], None
    with _seeded(seed, xs[0].device):
        for start in range(0, n, step):
            draws = _draws(model, [x[start:start + step] for x in xs], given, scored, num_samples, defensive,
                           chunk)
            groups = draws.groups
            for slot, log_w in zip(out, draws.log_ws):
                slot.append(_stratified(log_w, draws.log_a))
    return [(torch.cat([e for e, _ in slot]), torch.cat([c for _, c in slot], -1)) for slot in out], groups


def _components(components, m, name, hint=""):
    if components is None:
        return list(range(m))
    comps = check_component_indices(components, m, name)
    if not comps:
        raise ValueError(f"{name}s must name at least one component{hint}")
    return comps


def _marginal(model, xs, comps, num_samples, defensive, chunk, batch_size, seed):
    """``(L, V^, ESS)`` of ``log p(x_comps)``, each ``(N,)``."""
    [(log_est, contrib)], groups = _terms(model, xs, comps, [comps], num_samples, defensive, chunk, batch_size, seed)
    return log_est, _delta_variance(contrib, groups), _kish_ess(contrib)


def log_likelihood(model, xs, num_samples: int = 1000, components: Sequence[int] | None = None,
                   batch_size: int | None = 256, chunk: int | None = 100, seed: int | None = None,
                   defensive: float = DEFENSIVE, min_ess: float = MIN_ESS) -> LikelihoodEstimate:
    """Importance-sampled ``log p(x_C)`` per datum, from the model's own posterior given ``x_C``:
    a stochastic lower bound for every ``K``, first-order bias ``-se^2 / 2``.

    Args:
        model: an :class:`~pyro_mcvae.models.base.MCVAE` (any registered method but the NN-MRF).
        xs: ``(N, M, D)`` or a list of ``M`` tensors ``(N, D_k)``.
        num_samples: ``K`` draws per datum (per stratum for mixture guides) from the guide.
        components: ``C``, the components whose marginal likelihood is wanted (``None``: all,
            the joint ``log p(x_1..x_M)``).
        batch_size: data points per pass (``None``: all at once).
        chunk: draws per pass (``None``: all ``K``). Memory grows with ``batch_size * chunk``
            (times the strata of a mixture guide); the estimator does not depend on either, the
            numbers drawn for a given seed do (the order of the draws).
        seed: seeds the draws (see the module docstring); ``None`` continues the global stream.
        defensive: the prior's share ``alpha`` of the proposal (``ceil(K alpha / (1 - alpha))``
            more draws per stratum; 0: the guide alone, whose weights may have infinite variance).
        min_ess: below this effective sample size the standard error is NaN (with a warning).

    Returns:
        a :class:`LikelihoodEstimate` over the ``N`` data.
    """
    xs = _check(model, xs, num_samples, chunk, batch_size)
    comps = _components(components, model.num_components, "component")
    log_est, var, ess = _marginal(model, xs, comps, num_samples, defensive, chunk, batch_size, seed)
    return _estimate(log_est, var, ess, num_samples, min_ess, f"log p(x_{comps})")


def _difference(joint, marginals, num_samples, min_ess, what) -> LikelihoodEstimate:
    """``L - mean_k (L_k + V^_k)`` from independent ``(L, V^, ESS)`` triples: each marginal moved up
    by twice its own Jensen gap before averaging (the gaps do not average down)."""
    m = len(marginals)
    upper = sum(est + var for est, var, _ in marginals) / m
    variance = joint[1] + sum(var for _, var, _ in marginals) / m**2
    ess = torch.stack([joint[2]] + [e for _, _, e in marginals]).amin(0)
    return _estimate(joint[0] - upper, variance, ess, num_samples, min_ess, what, depth=1)


def conditional_by_difference(joint: LikelihoodEstimate, marginals: Sequence[LikelihoodEstimate],
                              what: str = "log p(x_B | x_A)") -> LikelihoodEstimate:
    """The default conditional estimator from estimates already made: ``joint`` of ``log p(x_{A u B})``
    and independent ``marginals`` of ``log p(x_A)`` (several: the mean over them of the
    conditionals, e.g. over single given components, whose errors combine as independent), all
    from :func:`log_likelihood` with the same ``K``."""
    if not marginals:
        raise ValueError("need at least one marginal estimate")
    triples = [(e.per_datum, e.variance, e.ess) for e in (joint, *marginals)]
    if any(t[1] is None for t in triples):
        raise ValueError("the estimates must carry their delta-method variance (from log_likelihood)")
    return _difference(triples[0], triples[1:], joint.num_samples, joint.min_ess, what)


def conditional_log_likelihood(model, xs, given: Sequence[int], target: Sequence[int],
                               num_samples: int = 1000, estimator: str = "difference",
                               batch_size: int | None = 256, chunk: int | None = 100,
                               seed: int | None = None, defensive: float = DEFENSIVE,
                               min_ess: float = MIN_ESS) -> LikelihoodEstimate:
    """Importance-sampled ``log p(x_B | x_A)`` per datum, ``A = given``, ``B = target`` (disjoint),
    whose first-order bias is negative, about ``-se^2 / 2`` (the module docstring derives it).

    ``estimator="difference"`` (default): ``log p^(x_{A u B}) - [log p^(x_A) + V^_A]`` from two
    independent runs (seeds ``seed`` and ``seed + 1``), the marginal moved up by twice its
    estimated Jensen gap; ``"ratio"``: ``log N^ - log D^ - V^_D`` on shared draws from the subset
    posterior of ``A``. The other arguments are those of :func:`log_likelihood`; ``xs`` holds
    every component (those outside ``A u B`` are ignored but must be finite).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    xs = _check(model, xs, num_samples, chunk, batch_size)
    m = model.num_components
    a = _components(given, m, "given component",
                    " (the marginal log p(x_B) is log_likelihood(model, xs, components=B))")
    b = _components(target, m, "target component")
    if set(a) & set(b):
        raise ValueError(f"given and target components must be disjoint, got {a} and {b}")
    both = sorted(a + b)
    what = f"log p(x_{b} | x_{a})"
    if estimator == "difference":
        joint = _marginal(model, xs, both, num_samples, defensive, chunk, batch_size, seed)
        marg = _marginal(model, xs, a, num_samples, defensive, chunk, batch_size, None if seed is None else seed + 1)
        return _difference(joint, [marg], num_samples, min_ess, what)
    [(log_den, c_den), (log_num, c_num)], groups = _terms(model, xs, a, [a, both], num_samples, defensive, chunk,
                                                          batch_size, seed)
    # The numerator's weights carry p(x_B | z) at latents drawn without x_B: their ESS is the one
    # that collapses when x_B pins the latents far more than the proposal does.
    ess = torch.minimum(_kish_ess(c_num), _kish_ess(c_den))
    return _estimate(log_num - log_den - _delta_variance(c_den, groups), _delta_variance(c_num - c_den, groups),
                     ess, num_samples, min_ess, what)
