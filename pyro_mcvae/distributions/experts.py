"""Building blocks of the baseline guides: products and mixtures of per-component experts.

- MVAE: :func:`product_of_gaussian_experts`, the closed-form product of diagonal Gaussian experts
  over one shared latent of size ``L`` (with an optional prior expert).
- MMVAE: :class:`StratifiedMixture`, an equally weighted mixture of ``K`` reparameterisable
  components that draws one sample from each component (stratified sampling).
- MoPoE-VAE: :func:`mixture_of_products`, the product of experts of every non-empty subset of
  components (enumerated by :func:`nonempty_subsets` / :func:`subset_masks`), ready to be the
  components of a :class:`StratifiedMixture`.

Pure tensor and distribution code: no networks, no Pyro programs.
"""

from __future__ import annotations

import itertools
import math

import torch
import pyro.distributions as dist

__all__ = [
    "LATENT_FAMILIES",
    "StratifiedMixture",
    "latent_law",
    "mixture_of_products",
    "nonempty_subsets",
    "product_of_gaussian_experts",
    "subset_masks",
    "valid_subsets",
]


LATENT_FAMILIES = ("normal", "laplace")


def latent_law(family: str, loc: torch.Tensor, std: torch.Tensor) -> dist.TorchDistribution:
    """Elementwise ``Normal`` or ``Laplace`` law with the given mean and standard deviation.

    The baselines' posteriors and priors come in both families (the GMRF paper tried both). A
    Laplace expert enters a product of experts through its mean and variance (``2 b^2``), i.e. the
    product is moment-matched: exact for Gaussians, an approximation for Laplace experts.
    """
    if family == "normal":
        return dist.Normal(loc, std)
    if family == "laplace":
        return dist.Laplace(loc, std * math.sqrt(0.5))
    raise ValueError(f"family must be one of {LATENT_FAMILIES}, got {family!r}")


# ---------------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------------
def _check_num_components(num_components) -> int:
    if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
        raise ValueError(f"num_components must be a positive integer, got {num_components!r}")
    return num_components


def nonempty_subsets(num_components: int) -> list[tuple[int, ...]]:
    """All ``2^M - 1`` non-empty subsets of ``range(M)``, ordered by size, then lexicographically.

    ``nonempty_subsets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]``; the singletons
    come first, in component order, so subset ``i < M`` is component ``i`` alone.
    """
    m = _check_num_components(num_components)
    return [s for r in range(1, m + 1) for s in itertools.combinations(range(m), r)]


def subset_masks(num_components: int, device=None) -> torch.Tensor:
    """Boolean membership matrix ``(2^M - 1, M)`` of :func:`nonempty_subsets`, in the same order."""
    subsets = nonempty_subsets(num_components)
    masks = torch.zeros(len(subsets), num_components, dtype=torch.bool, device=device)
    for row, subset in enumerate(subsets):
        masks[row, list(subset)] = True
    return masks


def _require_present(mask: torch.Tensor | None, why: str) -> None:
    """Raise if a batch element has no present expert; ``why`` continues the sentence."""
    if mask is None:
        return
    empty = ~mask.any(-1)
    if bool(empty.any()):
        raise ValueError(f"{int(empty.sum())} batch element(s) have no present expert{why}")


def _check_all_values(loc, scale, mask, prior) -> None:
    """Finite means and finite positive scales for the present experts and the prior expert."""
    _check_values(loc, scale, mask, "expert")
    if prior is not None:
        _check_values(*prior, None, "prior")


def valid_subsets(present: torch.Tensor) -> torch.Tensor:
    """Which subsets of :func:`subset_masks` have all their experts present.

    ``present``: bool ``(..., M)``; returns bool ``(..., 2^M - 1)``.
    """
    subsets = subset_masks(present.shape[-1], device=present.device)  # (S, M)
    return ~(subsets & ~present.unsqueeze(-2)).any(-1)


# ---------------------------------------------------------------------------------------------
# Product of Gaussian experts
# ---------------------------------------------------------------------------------------------
def _broadcast(shapes, what: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            f"{what} do not broadcast: shapes {[tuple(s) for s in shapes]}"
        ) from None


def _check_experts(loc, scale, mask):
    """Broadcast ``loc``, ``scale`` to ``(..., M, L)`` and ``mask`` (or None) to ``(..., M)``."""
    for name, x in (("loc", loc), ("scale", scale)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                             + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (..., M, L), got {tuple(x.shape)}")
    if loc.dtype != scale.dtype:
        raise ValueError(f"loc ({loc.dtype}) and scale ({scale.dtype}) must share a dtype")
    shape = _broadcast([loc.shape, scale.shape], "loc and scale (..., M, L)")
    m = shape[-2]
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor (..., M={m}), got "
                + (str(mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__)
            )
        if mask.dim() < 1 or mask.shape[-1] != m:
            raise ValueError(
                f"mask must have shape (..., M={m}) to match experts {tuple(shape)}, "
                f"got {tuple(mask.shape)}"
            )
        shape = _broadcast([shape, mask.shape + (shape[-1],)], "mask (..., M) and experts (..., M, L)")
        mask = mask.expand(shape[:-1])
    return loc.expand(shape), scale.expand(shape), mask


def _prior_expert(loc, include_prior, prior_loc, prior_scale):
    """The prior as one more expert ``(..., 1, L)``, or None."""
    if not include_prior:
        if prior_loc is not None or prior_scale is not None:
            raise ValueError("prior_loc / prior_scale were given but include_prior=False")
        return None
    size = loc.shape[-1]
    if prior_loc is None:
        prior_loc = torch.zeros(size, dtype=loc.dtype, device=loc.device)
    if prior_scale is None:
        prior_scale = torch.ones(size, dtype=loc.dtype, device=loc.device)
    for name, x in (("prior_loc", prior_loc), ("prior_scale", prior_scale)):
        if not isinstance(x, torch.Tensor) or x.dtype != loc.dtype:
            raise ValueError(f"{name} must be a tensor of dtype {loc.dtype}")
        if x.dim() < 1 or x.shape[-1] != size:
            raise ValueError(f"{name} must have shape (..., L={size}), got {tuple(x.shape)}")
    return prior_loc.unsqueeze(-2), prior_scale.unsqueeze(-2)


def _check_values(loc, scale, present, what: str) -> None:
    """Present experts need finite means and finite positive scales; absent ones may hold anything
    (placeholders from a missing modality), so they are not looked at."""
    if present is not None:
        present = present.unsqueeze(-1)
        loc = torch.where(present, loc, torch.zeros((), dtype=loc.dtype, device=loc.device))
        scale = torch.where(present, scale, torch.ones((), dtype=scale.dtype, device=scale.device))
    if not bool(torch.isfinite(loc).all()):
        raise ValueError(f"{what} loc contains NaN or infinite values; expected finite numbers")
    if not bool(((scale > 0) & torch.isfinite(scale)).all()):
        bad = int((~((scale > 0) & torch.isfinite(scale))).sum())
        raise ValueError(
            f"{what} scale has {bad} non-positive, NaN or infinite value(s); expected finite "
            "scales > 0"
        )


def _gaussian_product(loc, scale, mask):
    """Product of the experts ``(..., M, L)`` selected by ``mask`` ``(..., M)`` (None: all).

    Works with log-precisions: the product's log-precision is their logsumexp and its mean the
    softmax-weighted mean of the expert means, so neither tiny variances nor huge precisions are
    ever divided. A row without any selected expert gives the placeholder ``N(0, 1)`` (finite, and
    with zero gradient to every expert) instead of NaN.
    """
    if mask is None:
        log_prec = -2.0 * scale.log()
        lse = torch.logsumexp(log_prec, dim=-2)
        weights = torch.exp(log_prec - lse.unsqueeze(-2))
        return (weights * loc).sum(-2), torch.exp(-0.5 * lse)
    present = mask.unsqueeze(-1)  # (..., M, 1)
    zero = torch.zeros((), dtype=loc.dtype, device=loc.device)
    # Absent experts are replaced before any arithmetic: where() alone would still send NaN
    # gradients from log(0) or 0 * NaN back through the unselected branch.
    safe_loc = torch.where(present, loc, zero)
    safe_scale = torch.where(present, scale, torch.ones_like(zero))
    log_prec = torch.where(present, -2.0 * safe_scale.log(), torch.full_like(zero, -math.inf))
    empty = ~mask.any(-1, keepdim=True)  # (..., 1)
    # logsumexp over an all -inf column has a NaN gradient: feed it zeros in empty rows instead.
    lse = torch.logsumexp(torch.where(empty.unsqueeze(-1), zero, log_prec), dim=-2)  # (..., L)
    weights = torch.exp(log_prec - lse.unsqueeze(-2))  # zero for absent experts
    out_loc = (weights * safe_loc).sum(-2)
    out_scale = torch.where(empty, torch.ones_like(zero), torch.exp(-0.5 * lse))
    return out_loc, out_scale


def product_of_gaussian_experts(
    loc: torch.Tensor,
    scale: torch.Tensor,
    mask: torch.Tensor | None = None,
    prior_loc: torch.Tensor | None = None,
    prior_scale: torch.Tensor | None = None,
    *,
    include_prior: bool = True,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of diagonal Gaussian experts over one shared latent (MVAE's posterior).

    Args:
        loc, scale: ``(..., M, L)``, expert ``i`` is ``N(loc[..., i, :], diag(scale[..., i, :]^2))``
            (the two broadcast against each other).
        mask: optional bool ``(..., M)``, True where expert ``i`` is present; absent experts are left
            out of the product and their parameters are never used (they may be NaN).
        prior_loc, prior_scale: ``(..., L)``, the prior expert; default ``N(0, I)``.
        include_prior: multiply in the prior expert (MVAE does); with False, ``prior_loc`` and
            ``prior_scale`` must be None.
        validate: check that present scales are finite and positive and present means finite (one
            device synchronisation); shape checks always run.

    Returns:
        ``(loc, scale)``, each ``(..., L)``: precision ``sum_i 1/scale_i^2`` over present experts
        (plus the prior), mean the precision-weighted mean of the present means.

    Raises:
        ValueError: on mismatched shapes or dtypes, a non-bool mask, non-positive scales, or a
            batch element with no present expert and no prior.
    """
    loc, scale, mask = _check_experts(loc, scale, mask)
    prior = _prior_expert(loc, include_prior, prior_loc, prior_scale)
    if prior is None and loc.shape[-2] == 0:
        raise ValueError("there are no experts (M = 0) and include_prior=False")
    if prior is None:
        _require_present(mask, " and include_prior=False, so their product is undefined; include "
                               "the prior or mark an expert present")
    if validate:
        _check_all_values(loc, scale, mask, prior)
    if prior is not None:
        p_loc, p_scale = prior
        batch = _broadcast([loc.shape[:-2], p_loc.shape[:-2], p_scale.shape[:-2]],
                           "expert and prior batch shapes")
        size = loc.shape[-1]
        loc = torch.cat([loc.expand(batch + loc.shape[-2:]), p_loc.expand(batch + (1, size))], -2)
        scale = torch.cat(
            [scale.expand(batch + scale.shape[-2:]), p_scale.expand(batch + (1, size))], -2
        )
        if mask is not None:
            mask = torch.cat(
                [mask.expand(batch + mask.shape[-1:]),
                 torch.ones(batch + (1,), dtype=torch.bool, device=mask.device)], -1
            )
    return _gaussian_product(loc, scale, mask)


# ---------------------------------------------------------------------------------------------
# Mixture of products over subsets (MoPoE)
# ---------------------------------------------------------------------------------------------
def mixture_of_products(
    loc: torch.Tensor,
    scale: torch.Tensor,
    mask: torch.Tensor | None = None,
    include_prior: bool = False,
    *,
    prior_loc: torch.Tensor | None = None,
    prior_scale: torch.Tensor | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Product of experts of every non-empty subset of the ``M`` experts (MoPoE-VAE's posterior).

    Args:
        loc, scale, mask, prior_loc, prior_scale, validate: as in
            :func:`product_of_gaussian_experts`, ``(..., M, L)`` and ``(..., M)``.
        include_prior: multiply the prior expert into every subset's product (MoPoE does not).

    Returns:
        ``(loc, scale, valid)``: ``loc``, ``scale`` of shape ``(..., S, L)`` and bool ``valid``
        ``(..., S)`` with ``S = 2^M - 1`` subsets in the order of :func:`nonempty_subsets`. Subset
        ``s`` is valid when all of its experts are present; a valid subset's entry is the product
        of its experts. An invalid subset gets the placeholder ``N(0, I)`` (finite and with zero
        gradient) and must get zero weight, e.g.
        ``StratifiedMixture(dist.Normal(loc, scale).to_event(1), mask=valid)``: it is still
        sampled as a stratum, and :attr:`StratifiedMixture.stratum_weights` is zero for it.

    Raises:
        ValueError: as :func:`product_of_gaussian_experts`, and when a batch element has no present
            expert at all (no subset would be valid, with or without the prior).
    """
    loc, scale, mask = _check_experts(loc, scale, mask)
    m = loc.shape[-2]
    if m == 0:
        raise ValueError("there are no experts (M = 0): no non-empty subset exists")
    prior = _prior_expert(loc, include_prior, prior_loc, prior_scale)
    _require_present(mask, ", so no subset is valid; drop them or mark an expert present")
    if validate:
        _check_all_values(loc, scale, mask, prior)
    subsets = subset_masks(m, device=loc.device)  # (S, M)
    present = (mask if mask is not None
               else torch.ones(loc.shape[:-1], dtype=torch.bool, device=loc.device))
    valid = valid_subsets(present)  # (..., S)
    # Invalid subsets select no expert (nor the prior) and so come out as the N(0, I) placeholder.
    select = subsets & valid.unsqueeze(-1)  # (..., S, M)
    experts_loc, experts_scale = loc.unsqueeze(-3), scale.unsqueeze(-3)  # (..., 1, M, L)
    if prior is not None:
        p_loc, p_scale = prior[0].unsqueeze(-3), prior[1].unsqueeze(-3)  # (..., 1, 1, L)
        batch = _broadcast([loc.shape[:-2], p_loc.shape[:-3], p_scale.shape[:-3]],
                           "expert and prior batch shapes")
        size = loc.shape[-1]
        experts_loc = torch.cat([experts_loc.expand(batch + (1, m, size)),
                                 p_loc.expand(batch + (1, 1, size))], -2)
        experts_scale = torch.cat([experts_scale.expand(batch + (1, m, size)),
                                   p_scale.expand(batch + (1, 1, size))], -2)
        select = torch.cat([select, valid.unsqueeze(-1)], -1).expand(batch + (len(subsets), m + 1))
    out_loc, out_scale = _gaussian_product(experts_loc, experts_scale, select)
    return out_loc, out_scale, valid


# ---------------------------------------------------------------------------------------------
# Stratified mixture (MMVAE, MoPoE)
# ---------------------------------------------------------------------------------------------
class StratifiedMixture(dist.TorchDistribution):
    """Mixture of ``K`` reparameterisable components, sampled one draw per component.

    Args:
        components: one batched distribution whose rightmost batch dimension is ``K``, batch shape
            ``batch_shape + (K,)``, e.g. ``dist.Normal(loc, scale).to_event(1)`` with ``loc``
            ``(..., K, L)``; it must have ``rsample``.
        logits: optional ``(..., K)`` unnormalised log-weights (default: equal weights ``1/K``).
        mask: optional bool ``(..., K)``; False gives a component weight zero (MoPoE's invalid
            subsets). Every batch element needs at least one component of positive weight.

    Shapes (``E`` is the components' event shape):
        - ``batch_shape``: the components' batch shape without ``K`` (broadcast with ``logits`` /
          ``mask``); ``event_shape``: ``E``.
        - ``rsample(sample_shape)``: ``sample_shape + (K,) + batch_shape + E``, stratum ``k`` drawn
          from component ``k``. The stratum dimension sits right after ``sample_shape`` so that it
          acts as one more sample dimension: it broadcasts against ``batch_shape`` in
          :meth:`log_prob` (and against Pyro plates, which live on the right). This is
          ``K`` times more values than torch's ``sample_shape + batch_shape + E`` convention.
        - ``log_prob(value)``: ``value`` is ``(..., batch_shape, E)`` (broadcasting), result
          ``(...)`` broadcast with ``batch_shape``; ``log sum_k w_k p_k(value)``.

    The stratified estimator of ``E_q[f(z)]`` is ``sum_k w_k f(z_k)`` with ``z_k`` stratum ``k``:
    ``(mix.stratum_weights * f(mix.rsample())).sum(0)``; with equal weights simply the mean over
    the stratum dimension (as in MMVAE).
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, components, logits=None, mask=None, validate_args=None):
        if not isinstance(components, torch.distributions.Distribution):
            raise ValueError(
                f"components must be a torch distribution, got {type(components).__name__}"
            )
        if len(components.batch_shape) == 0:
            raise ValueError(
                "components must have a batch dimension of size K on the right, got batch_shape ()"
            )
        if not components.has_rsample:
            raise ValueError(
                f"components ({type(components).__name__}) must be reparameterisable (has_rsample)"
            )
        k = components.batch_shape[-1]
        if k == 0:
            raise ValueError("components have K = 0; a mixture needs at least one component")
        ref = components.mean  # dtype and device of the parameters
        given = logits is not None or mask is not None
        if logits is None:
            logits = torch.zeros((), dtype=ref.dtype, device=ref.device).expand(k)
        elif not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise ValueError("logits must be a floating-point tensor (..., K)")
        elif logits.dim() < 1 or logits.shape[-1] != k:
            raise ValueError(f"logits must have shape (..., K={k}), got {tuple(logits.shape)}")
        elif bool(torch.isnan(logits).any() | (logits == math.inf).any()):
            raise ValueError("logits contain NaN or +inf; expected finite values or -inf")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor (..., K={k})")
            if mask.dim() < 1 or mask.shape[-1] != k:
                raise ValueError(f"mask must have shape (..., K={k}), got {tuple(mask.shape)}")
            logits = torch.where(mask, logits, torch.full_like(logits[..., :1], -math.inf))
        batch_shape = _broadcast(
            [components.batch_shape[:-1], logits.shape[:-1]], "components' batch shape and logits/mask"
        )
        if given:
            normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
            if not bool(torch.isfinite(normaliser).all()):
                raise ValueError("some batch element has every component masked out or at -inf")
            log_weights = logits - normaliser
        else:
            log_weights = torch.full_like(logits, -math.log(k))
        full = batch_shape + (k,)
        self.components = components if components.batch_shape == full else components.expand(full)
        self.log_weights = log_weights.expand(full)  # (*batch_shape, K), normalised
        super().__init__(batch_shape, components.event_shape, validate_args=validate_args)

    @property
    def num_components(self) -> int:
        return self.components.batch_shape[-1]

    @property
    def support(self):
        return self.components.support

    @property
    def stratum_weights(self) -> torch.Tensor:
        """Weights ``(K,) + batch_shape``, laid out like the strata of :meth:`rsample`."""
        return self.log_weights.exp().movedim(-1, 0)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StratifiedMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        full = batch_shape + (self.num_components,)
        new.components = self.components.expand(full)
        new.log_weights = self.log_weights.expand(full)
        super(StratifiedMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """One draw per component: ``sample_shape + (K,) + batch_shape + event_shape``."""
        sample_shape = torch.Size(sample_shape)
        x = self.components.rsample(sample_shape)  # sample_shape + batch_shape + (K,) + E
        return x.movedim(len(sample_shape) + len(self.batch_shape), len(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log sum_k w_k p_k(value)`` for ``value`` ``(..., batch_shape, E)``; returns ``(...)``
        broadcast with ``batch_shape``."""
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"value must be a tensor, got {type(value).__name__}")
        event_dim = len(self.event_shape)
        lead = value.dim() - event_dim
        if lead < 0 or value.shape[lead:] != self.event_shape:
            raise ValueError(
                f"value must end in the event shape {tuple(self.event_shape)}, "
                f"got {tuple(value.shape)}"
            )
        _broadcast([value.shape[:lead], self.batch_shape], "value's batch dimensions and batch_shape")
        if self._validate_args:
            self._validate_sample(value)
        return torch.logsumexp(self.weighted_component_log_probs(value), dim=-1)

    def weighted_component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """``log w_k + log p_k(value)`` for every component: ``(..., *batch_shape, K)`` for
        ``value`` ``(..., batch_shape, E)``; ``-inf`` for zero-weight components. Their softmax
        over ``K`` are the responsibilities, their logsumexp :meth:`log_prob`."""
        lead = value.dim() - len(self.event_shape)
        # The new axis lines the value up with every component: (..., batch, 1, E) vs (batch, K, E).
        lp = self.components.log_prob(value.unsqueeze(lead))  # (..., *batch_shape, K)
        return lp + self.log_weights

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean ``sum_k w_k mean_k``, ``batch_shape + event_shape``."""
        return self._weighted(self.components.mean)

    @property
    def variance(self) -> torch.Tensor:
        """Mixture variance ``sum_k w_k (var_k + mean_k^2) - mean^2``, ``batch_shape + event_shape``."""
        m = self.components.mean
        return (self._weighted(self.components.variance + m * m) - self.mean ** 2).clamp(min=0)

    def _weighted(self, per_component: torch.Tensor) -> torch.Tensor:
        w = self.log_weights.exp()
        w = w.reshape(w.shape + (1,) * len(self.event_shape))
        # Zero-weight components (placeholders) must not leak inf * 0 = NaN.
        terms = torch.where(w > 0, w * per_component, torch.zeros_like(per_component))
        return terms.sum(-1 - len(self.event_shape))
