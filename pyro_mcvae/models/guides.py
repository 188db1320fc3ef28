"""Amortised posteriors ``q(z | x_1..x_M)``, written as Pyro guide programs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import math

import torch
from torch import nn
import torch.nn.functional as F
import pyro
import pyro.distributions as dist
from pyro import poutine

from .._validation import check_component_indices, check_components, check_mask
from ..distributions import (
    GMRF,
    MultivariateAsymmetricLaplace,
    as_gmrf,
    complete_from_prior,
    StratifiedMixture,
    latent_law,
    mixture_of_products,
    nonempty_subsets,
    product_of_gaussian_experts,
    valid_subsets,
)
from ..nets import MLPNets, VectorEncoder, as_nets

__all__ = [
    "ALMRFGuide",
    "GMRFGuide",
    "DiagonalGaussianGuide",
    "MMVAEPlusGuide",
    "MixtureOfExpertsGuide",
    "ProductOfExpertsGuide",
    "SubsetELBO",
    "latent_scale",
]


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

    def bind_prior(self, prior: nn.Module) -> None:
        """Give the guide the model's prior module (``MCVAE`` does this). The block-layout guides
        need it for samples with absent components, whose latents they draw from the prior
        conditioned on the present ones. Kept out of the guide's submodules, so its parameters
        are registered once, by the model."""
        object.__setattr__(self, "_bound_prior", prior)

    @staticmethod
    def _present_only(loc, var, mask):
        """Encoder outputs ``(batch, M, d)`` with absent components' entries made inert."""
        here = mask.unsqueeze(-1)
        return torch.where(here, loc, torch.zeros_like(loc)), torch.where(here, var, torch.ones_like(var))

    def _complete(self, loc, covariance, mask) -> GMRF:
        """``q(z_A) p(z_B | z_A)``: absent blocks from the prior conditioned on the present ones."""
        prior = getattr(self, "_bound_prior", None)
        if prior is None:
            raise ValueError(
                f"{type(self).__name__} needs the model's prior for samples with absent components; "
                "use it through MCVAE or call guide.bind_prior(prior_module)"
            )
        return complete_from_prior(loc, covariance, mask, prior(), self.latent_dim)

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

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> dist.Distribution:
        raise NotImplementedError

    def latent_plates(self, mask, batch: int, like: torch.Tensor):
        """Plates around the ``z`` site, used alike by the guide and the model (which also puts
        the likelihood inside them). Returns the context and the batch shape of ``z``."""
        return pyro.plate("data", batch), (batch,)

    def _site(self, q: dist.Distribution) -> dist.Distribution:
        """The distribution the ``z`` site samples from, given the posterior."""
        return q

    def _observed_latent(self, data, components, use_mean: bool) -> torch.Tensor:
        """Latents ``(batch, |A|, d)`` of observed components from their own encoders: the
        marginal posterior's mean, or one draw."""
        loc, var = self.encode(data, components)
        return loc if use_mean else loc + var.sqrt() * torch.randn_like(loc)

    def stratum_weights(self, mask, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Weights ``(S, batch)`` of the draws per datum: one stratum of weight 1 here (mixture
        guides draw one per mixture component)."""
        return torch.ones(1, batch, device=device, dtype=dtype or torch.get_default_dtype())

    def forward(self, xs, beta: float = 1.0, mask=None, **kwargs):
        """The guide program: its latent sites inside :meth:`latent_plates`. ``mask``: optional
        bool ``(batch, M)``, False where a component is absent."""
        pyro.module("guide", self)
        xs = check_components(xs, self.component_dims, check_values=False)
        batch = xs[0].shape[0]
        mask = check_mask(mask, batch, self.num_components)
        plates, _ = self.latent_plates(mask, batch, xs[0])
        with plates:
            with latent_scale(beta):
                return self._sample_latents(xs, mask)

    def _sample_latents(self, xs: list[torch.Tensor], mask):
        return pyro.sample("z", self._site(self._posterior(xs, mask)))

    def reconstruction_latent(self, xs, use_mean: bool = True) -> torch.Tensor:
        """Latent ``(batch, latent size)`` from all components: the posterior mean or one draw."""
        q = self.posterior(xs)
        return q.mean if use_mean else q.sample()

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """Latents ``(num_samples, batch, M*d)`` given the observed ``components`` (block layout).

        The observed blocks are their encoders' means (or one draw each when ``use_mean=False``);
        the other blocks are drawn from the prior conditioned on them in closed form.
        """
        if not hasattr(prior, "condition"):
            prior = as_gmrf(prior, self.num_components, self.latent_dim)  # ValueError if not Gaussian
        z_a = self._observed_latent(data, components, use_mean)  # (batch, |A|, d)
        z_b = prior.condition({k: z_a[:, i] for i, k in enumerate(components)}).sample((num_samples,))
        rest = [k for k in range(self.num_components) if k not in components]
        z = z_b.new_empty(*z_b.shape[:-1], self.num_components, self.latent_dim)
        z_a = z_a.to(z.dtype)
        z[..., components, :] = z_a.expand(num_samples, *z_a.shape)
        z[..., rest, :] = z_b.reshape(*z_b.shape[:-1], len(rest), self.latent_dim)
        return z.flatten(-2)


def _absent(mask) -> bool:
    return mask is not None and not bool(mask.all())


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
        offdiag_keep: float = 1.0,
        mask_seed: int = 0,
    ):
        super().__init__(component_dims, latent_dim, hidden, min_var)
        # A network factory in ``hidden`` builds the global network too; MLP sizes in
        # ``global_hidden`` otherwise. ``offdiag_keep < 1`` keeps a fixed random fraction of the
        # off-diagonal entries (the paper's PolyMNIST option masks 75%).
        if hasattr(global_hidden, "offdiag_net"):
            factory = global_hidden
        elif hasattr(hidden, "offdiag_net"):
            factory = hidden
        else:
            factory = MLPNets(global_hidden)
        self.global_net = factory.offdiag_net(self.component_dims, latent_dim, offdiag_keep, mask_seed)
        self.eps, self.mode, self.delta = eps, mode, delta
        self.register_buffer("graph", None if graph is None else torch.as_tensor(graph, dtype=torch.bool))

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> GMRF:
        if not _absent(mask):
            loc, var = self.encoder(xs)
            offdiag = self.global_net(xs)
        else:
            # Absent components feed zeros to the global network and get no off-diagonal blocks,
            # so q factorises into present and absent parts; the absent part is then replaced.
            xs = [torch.where(mask[:, k, None], x, torch.zeros_like(x)) for k, x in enumerate(xs)]
            loc, var = self._present_only(*self.encoder(xs), mask)
            pair = mask[:, :, None] & mask[:, None, :]
            offdiag = torch.where(pair[..., None, None], self.global_net(xs), 0.0)
        q = GMRF.from_blocks(
            loc,
            var,
            offdiag,
            eps=self.eps,
            delta=self.delta,
            mode=self.mode,
            graph=self.graph,
            validate=False,
        )
        return q if not _absent(mask) else self._complete(q.loc, q._covariance_unbroadcast(), mask)


class DiagonalGaussianGuide(_EncoderGuide):
    """Independent Gaussian posterior from the same encoders (no global network)."""

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64), min_var=1e-4):
        super().__init__(component_dims, latent_dim, hidden, min_var)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> dist.Distribution:
        loc, var = self.encoder(xs)
        if not _absent(mask):
            return dist.Normal(loc.flatten(-2), var.sqrt().flatten(-2)).to_event(1)
        loc, var = self._present_only(loc, var, mask)
        return self._complete(loc.flatten(-2), torch.diag_embed(var.flatten(-2)), mask)


class ALMRFGuide(GMRFGuide):
    """ALMRF posterior: a multivariate asymmetric Laplace law with the GMRF guide's block
    covariance (encoders: ``mu_k`` and the diagonal blocks; the global network: the off-diagonal
    blocks) and a skew ``m_k`` per component from a second head of each component's network.

    As in the GMRF guide the diagonal blocks are not rescaled, so the marginal of ``z_k``,
    ``AL(mu_k, m_k, diag(var_k))``, depends on ``x_k`` alone. Its KL to the prior has no closed
    form: train with ``Trace_ELBO`` (``TraceMeanField_ELBO`` falls back to the same estimate).

    The skew is bounded relative to the scale, ``|m_k| < max_skew * sqrt(var_k)``
    (``m = max_skew sqrt(var) tanh(raw / max_skew)``): on heavy-tailed inputs an unbounded skew
    head extrapolates to posteriors millions of units away and the ELBO diverges.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 global_hidden=(64, 64), eps: float = 0.9, mode: str = "blockwise",
                 graph: torch.Tensor | None = None, delta: float = 1e-6, min_var: float = 1e-4,
                 max_skew: float = 3.0, offdiag_keep: float = 1.0, mask_seed: int = 0):
        super().__init__(component_dims, latent_dim, hidden, global_hidden, eps, mode, graph, delta, min_var,
                         offdiag_keep, mask_seed)
        self.skew_net = as_nets(hidden).component_nets(self.component_dims, [latent_dim] * self.num_components,
                                                       "encoder")
        self.max_skew = float(max_skew)

    def _skew(self, xs, var, components=None) -> torch.Tensor:
        raw = torch.stack(self.skew_net(xs, components), dim=-2)
        return self.max_skew * var.sqrt() * torch.tanh(raw / self.max_skew)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> MultivariateAsymmetricLaplace:
        if _absent(mask):
            raise NotImplementedError("the ALMRF guide does not take absent components yet")
        loc, var = self.encoder(xs)
        return MultivariateAsymmetricLaplace.from_blocks(
            loc, self._skew(xs, var), var, self.global_net(xs), eps=self.eps, delta=self.delta,
            mode=self.mode, graph=self.graph, validate=False)

    def _observed_latent(self, data, components, use_mean: bool) -> torch.Tensor:
        loc, var = self.encode(data, components)
        xs = check_components(data, [self.component_dims[k] for k in components])
        skew = self._skew(xs, var, components)
        if use_mean:
            return loc + skew
        w = torch.empty_like(loc[..., :1]).exponential_()
        return loc + w * skew + w.sqrt() * var.sqrt() * torch.randn_like(loc)


class ProductOfExpertsGuide(_EncoderGuide):
    """MVAE's posterior over a latent shared by all components: the product of the present
    components' experts and the prior expert (unit variance), in closed form.

    ``family="laplace"`` gives Laplace posteriors: the experts are combined through their means
    and variances (moment matching, see :func:`~pyro_mcvae.distributions.latent_law`).
    With ``subsampled=True`` (MVAE's objective) training sums the ELBO of the joint, of each
    single component and of ``random_subsets`` subsets drawn afresh at every step (uniformly among
    those of 2 to ``M - 1`` components), as in Wu & Goodman's sub-sampled objective
    (:class:`SubsetELBO`). The default ``random_subsets=0`` keeps the joint and single terms only:
    those already train every expert alone and in the full product, the random terms cost one
    more pass over the batch each, and the documented copula numbers were measured without them.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 min_var: float = 1e-4, subsampled: bool = True, family: str = "normal",
                 random_subsets: int = 0):
        super().__init__(component_dims, latent_dim, hidden, min_var)
        latent_law(family, torch.zeros(()), torch.ones(()))  # validates the family
        if isinstance(random_subsets, bool) or not isinstance(random_subsets, int) or random_subsets < 0:
            raise ValueError(f"random_subsets must be a non-negative integer, got {random_subsets!r}")
        if random_subsets and self.num_components < 3:
            raise ValueError(f"random_subsets needs at least 3 components (subsets of 2 to M - 1), "
                             f"got M = {self.num_components}")
        self.subsampled, self.family, self.random_subsets = subsampled, family, random_subsets

    def _product(self, loc, var, mask=None) -> dist.Distribution:
        loc, std = product_of_gaussian_experts(loc, var.sqrt(), mask, validate=False)
        return latent_law(self.family, loc, std).to_event(1)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> dist.Distribution:
        return self._product(*self.encoder(xs), mask)

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """Draws ``(num_samples, batch, d)`` from the product of the observed experts (and the
        prior expert). ``use_mean`` has no effect: the latent is shared, so it is always drawn."""
        return self._product(*self.encode(data, components)).sample((num_samples,))

    def wrap_elbo(self, elbo):
        """The training objective :func:`pyro_mcvae.infer.fit` uses with this guide."""
        if not self.subsampled:
            return elbo
        m = self.num_components
        subsets = torch.cat([torch.ones(1, m, dtype=torch.bool), torch.eye(m, dtype=torch.bool)])
        if not self.random_subsets:
            return SubsetELBO(elbo, subsets)
        sizes = torch.tensor([bin(k).count("1") for k in range(1, 2**m)])
        pool = torch.tensor([[bool(k >> j & 1) for j in range(m)] for k in range(1, 2**m)])
        return SubsetELBO(elbo, subsets, self.random_subsets, pool[(sizes > 1) & (sizes < m)])


class SubsetELBO:
    """Sum of an ELBO over several subsets of components (MVAE's sub-sampled objective).

    Each row of ``subsets`` (bool ``(T, M)``) is one term: the model and guide run with only those
    components present (combined with any ``mask`` the caller passes). ``num_random`` more terms
    are drawn at every call, uniformly with replacement from the rows of ``pool`` (torch's
    global generator, so seeded runs repeat). Usable as SVI's loss.
    """

    def __init__(self, elbo, subsets: torch.Tensor, num_random: int = 0, pool: torch.Tensor | None = None):
        for name, rows in (("subsets", subsets), ("pool", pool)):
            if rows is None:
                continue
            if rows.dtype != torch.bool or rows.dim() != 2 or not bool(rows.any(-1).all()):
                raise ValueError(f"{name} must be a bool (T, M) tensor with a component in every row")
        if num_random and (pool is None or pool.shape[0] == 0 or pool.shape[1] != subsets.shape[1]):
            raise ValueError("num_random > 0 needs a pool of candidate subsets (P, M) with the same M")
        self.elbo, self.subsets, self.num_random, self.pool = elbo, subsets, int(num_random), pool

    def terms(self, device=None) -> torch.Tensor:
        """The subsets of this call ``(T + num_random, M)``: the fixed ones, then the random ones."""
        rows = self.subsets
        if self.num_random:
            pick = torch.randint(self.pool.shape[0], (self.num_random,))
            rows = torch.cat([rows, self.pool[pick]])
        return rows.to(device)

    def _stacked(self, xs, mask):
        """The ``T`` terms as one batch: the data repeated ``T`` times, each copy with its mask."""
        stacked = isinstance(xs, torch.Tensor)
        parts = [xs] if stacked else list(xs)
        terms = self.terms(parts[0].device)
        batch, t = parts[0].shape[0], terms.shape[0]
        rows = terms.unsqueeze(1).expand(t, batch, -1)  # (T, batch, M)
        if mask is not None:
            rows = rows & mask.unsqueeze(0)
        parts = [p.repeat(t, *([1] * (p.dim() - 1))) for p in parts]
        return (parts[0] if stacked else parts), rows.reshape(t * batch, -1)

    def loss(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        xs, mask = self._stacked(xs, mask)
        return self.elbo.loss(model, guide, xs, *args, mask=mask, **kwargs)

    def loss_and_grads(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        # One pass over the stacked batch: the ELBO is a sum over data, so this is the sum of terms.
        xs, mask = self._stacked(xs, mask)
        return self.elbo.loss_and_grads(model, guide, xs, *args, mask=mask, **kwargs)


class _StrataSite(dist.TorchDistribution):
    """A stratified mixture seen as a Pyro site of batch shape ``(K, batch)``: one draw per
    mixture component (stratum), each scored by the whole mixture's density (or, with
    ``own_density``, by its own component's)."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, mixture: StratifiedMixture, own_density: bool = False):
        self.mixture, self.own_density = mixture, own_density
        super().__init__((mixture.num_components, *mixture.batch_shape), mixture.event_shape,
                         validate_args=False)

    @property
    def support(self):
        return self.mixture.support

    def rsample(self, sample_shape=torch.Size()):
        return self.mixture.rsample(sample_shape)

    def component_log_probs(self, value):
        """``log w_j + log q_j(value)`` for every mixture component ``j``: ``(..., K, batch, K)``
        for ``value`` ``(..., K, batch, E)`` (the objective's DReG estimator needs the
        responsibilities); ``None`` when draws are scored by their own component only."""
        return None if self.own_density else self.mixture.weighted_component_log_probs(value)

    def log_prob(self, value):
        if not self.own_density:
            return self.mixture.log_prob(value)
        ev = len(self.event_shape)
        # (..., K, batch, E) -> (..., batch, K, E) lines stratum k up with component k.
        lp = self.mixture.components.log_prob(value.movedim(-2 - ev, -1 - ev))
        return lp.movedim(-1, -2)


class MixtureOfExpertsGuide(_EncoderGuide):
    """Mixture posteriors over a latent shared by all components, trained with the stratified
    estimator: one draw from every mixture component, weighted by its mixture weight and scored
    by the exact mixture density.

    ``subsets=False``: MMVAE, a uniform mixture of the present components' experts.
    ``subsets=True``: MoPoE-VAE, a uniform mixture over the products of experts of every
    non-empty subset of the present components (``2^M - 1`` strata).
    ``family``: ``"normal"`` or ``"laplace"`` experts (MoPoE's products of Laplace experts are
    moment-matched, see :func:`~pyro_mcvae.distributions.latent_law`).
    ``density``: ``"mixture"`` (default) scores every draw by the mixture, the exact stratified
    ELBO, which costs ``O(K^2)`` density terms per datum; ``"stratum"`` scores draw ``k`` by its
    own component, giving ``sum_k w_k ELBO_k``, a lower bound of the mixture's ELBO (Jensen; the
    per-subset KL terms of MoPoE-VAE's reference objective) at ``O(K)`` cost, which matters for
    MoPoE's ``2^M - 1`` strata.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 min_var: float = 1e-4, subsets: bool = False, family: str = "normal",
                 density: str = "mixture"):
        super().__init__(component_dims, latent_dim, hidden, min_var)
        latent_law(family, torch.zeros(()), torch.ones(()))  # validates the family
        if density not in ("mixture", "stratum"):
            raise ValueError(f"density must be 'mixture' or 'stratum', got {density!r}")
        self.subsets, self.family, self.density = subsets, family, density
        self.num_strata = len(nonempty_subsets(self.num_components)) if subsets else self.num_components

    def _mixture(self, loc, var, mask=None) -> StratifiedMixture:
        """Mixture over ``(batch, K, L)`` experts (or their subset products)."""
        std = var.sqrt()
        if self.subsets:
            loc, std, mask = mixture_of_products(loc, std, mask, validate=False)
        return StratifiedMixture(latent_law(self.family, loc, std).to_event(1), mask=mask)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> StratifiedMixture:
        return self._mixture(*self.encoder(xs), mask)

    def stratum_weights(self, mask, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Mixture weights ``(K, batch)``: uniform over the present experts (or valid subsets)."""
        dtype = dtype or torch.get_default_dtype()
        if mask is None:
            return torch.full((self.num_strata, batch), 1.0 / self.num_strata, device=device, dtype=dtype)
        w = (valid_subsets(mask) if self.subsets else mask).to(dtype)  # (batch, K)
        return (w / w.sum(-1, keepdim=True)).T

    def latent_plates(self, mask, batch: int, like: torch.Tensor):
        """One draw per stratum, weighted like the mixture: ``z`` has batch shape ``(K, batch)``."""
        weights = self.stratum_weights(mask, batch, like.device, like.dtype)
        return stratified(weights, batch), (self.num_strata, batch)

    def _site(self, q: StratifiedMixture) -> dist.Distribution:
        return _StrataSite(q, own_density=self.density == "stratum")

    @staticmethod
    def _draw(q: StratifiedMixture, num_samples: int) -> torch.Tensor:
        """``(num_samples, batch, L)`` draws from the mixture: a stratum picked by its weight."""
        draws = q.sample((num_samples,))  # (S, K, batch, L): one per stratum
        pick = torch.multinomial(q.log_weights.exp().reshape(-1, q.num_components), num_samples,
                                 replacement=True).T  # (S, batch)
        index = pick[:, None, :, None].expand(-1, 1, -1, draws.shape[-1])
        return draws.gather(1, index).squeeze(1)

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """Draws ``(num_samples, batch, d)`` from the mixture of the observed experts (MoPoE: of
        the products of every non-empty subset of them). ``use_mean`` has no effect."""
        return self._draw(self._mixture(*self.encode(data, components)), num_samples)

    def reconstruction_latent(self, xs, use_mean: bool = True) -> torch.Tensor:
        q = self.posterior(xs)
        return q.mean if use_mean else self._draw(q, 1)[0]


class MMVAEPlusGuide(MixtureOfExpertsGuide):
    """MMVAE+: a shared latent ``z`` (size ``d``, mixture of the components' experts, as MMVAE)
    plus a modality-specific latent ``w_k`` (size ``d_w``) per component.

    Each encoder gives ``q(z | x_k)`` and ``q(w_k | x_k)``. In stratum ``m`` (``z`` drawn from
    ``q(z | x_m)``) the guide draws ``w_m ~ q(w_m | x_m)`` and, for every other component, ``w_j``
    from the learnable auxiliary prior ``r_j = law(0, sigma_j)``: component ``j`` is then
    cross-reconstructed from the shared ``z`` of ``x_m`` and a ``w_j`` that carries no information
    about ``x_j``. Only ``w_m`` enters the density ratio (the site ``w`` is masked elsewhere, in
    the model too), as in MMVAE+'s objective; train with the importance-weighted objective
    (``elbo="dreg"`` or ``"iwae"``). The latent vector of this model is ``(z, w_1, ..., w_M)``,
    size ``d + M d_w``.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, private_dim: int,
                 hidden=(64, 64), min_var: float = 1e-4, family: str = "normal",
                 density: str = "mixture"):
        if isinstance(private_dim, bool) or not isinstance(private_dim, int) or private_dim < 1:
            raise ValueError(f"private_dim must be a positive integer, got {private_dim!r}")
        super().__init__(component_dims, latent_dim + private_dim, hidden, min_var, False, family,
                         density)
        self.latent_dim, self.private_dim = latent_dim, private_dim
        self.aux_raw_std = nn.Parameter(torch.zeros(self.num_components, private_dim))

    def auxiliary_std(self) -> torch.Tensor:
        """Standard deviations ``(M, d_w)`` of the auxiliary priors ``r_j``."""
        return F.softplus(self.aux_raw_std) * (1.0 / math.log(2.0)) + 1e-3  # 1 at initialisation

    def scored_private(self, mask, batch: int, device=None) -> torch.Tensor:
        """Bool ``(S, batch, M)``: entry ``(m, n, j)`` is True where ``w_j`` is scored in stratum
        ``m``, i.e. ``j == m`` (the model masks the same entries)."""
        eye = torch.eye(self.num_components, dtype=torch.bool, device=device)[:, None, :]
        return eye.expand(-1, batch, -1)

    def _split(self, loc, var):
        d = self.latent_dim
        return (loc[..., :d], var[..., :d]), (loc[..., d:], var[..., d:])

    def _private_law(self, w_loc, w_var, scored):
        """``w`` in every stratum: ``q(w_m | x_m)`` for its own component, ``r_j`` for the rest."""
        own = scored.unsqueeze(-1)  # (S, batch, M, 1)
        loc = torch.where(own, w_loc.unsqueeze(0), torch.zeros_like(w_loc))
        std = torch.where(own, w_var.sqrt().unsqueeze(0), self.auxiliary_std())
        return latent_law(self.family, loc, std).to_event(1).mask(scored).to_event(1)

    def _sample_latents(self, xs: list[torch.Tensor], mask):
        (z_loc, z_var), (w_loc, w_var) = self._split(*self.encoder(xs))
        z = pyro.sample("z", self._site(self._mixture(z_loc, z_var, mask)))
        scored = self.scored_private(mask, xs[0].shape[0], xs[0].device)
        w = pyro.sample("w", self._private_law(w_loc, w_var, scored))
        return torch.cat([z, w.flatten(-2)], -1)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> StratifiedMixture:
        """The shared part ``q(z | x)`` (the mixture)."""
        (z_loc, z_var), _ = self._split(*self.encoder(xs))
        return self._mixture(z_loc, z_var, mask)

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """``(num_samples, batch, d + M d_w)``: ``z`` from the mixture of the observed experts,
        ``w_j`` of the unobserved components from their auxiliary priors (observed ones: their
        encoder's mean, or a draw when ``use_mean=False``)."""
        (z_loc, z_var), (w_loc, w_var) = self._split(*self.encode(data, components))
        z = self._draw(self._mixture(z_loc, z_var), num_samples)  # (S, batch, d)
        aux = latent_law(self.family, torch.zeros_like(self.aux_raw_std), self.auxiliary_std())
        w = aux.sample((num_samples, z.shape[1]))  # (S, batch, M, d_w)
        own = w_loc if use_mean else latent_law(self.family, w_loc, w_var.sqrt()).sample()
        w[:, :, list(components)] = own.expand(num_samples, *own.shape)
        return torch.cat([z, w.flatten(-2)], -1)

    def reconstruction_latent(self, xs, use_mean: bool = True) -> torch.Tensor:
        xs = check_components(xs, self.component_dims)
        (z_loc, z_var), (w_loc, w_var) = self._split(*self.encoder(xs))
        q = self._mixture(z_loc, z_var)
        z = q.mean if use_mean else self._draw(q, 1)[0]
        w = w_loc if use_mean else latent_law(self.family, w_loc, w_var.sqrt()).sample()
        return torch.cat([z, w.flatten(-2)], -1)


@contextmanager
def stratified(weights: torch.Tensor, batch: int):
    """Plates ``strata`` (dim -2) and ``data`` (dim -1) with each stratum scaled by its weight
    ``(K, batch)``; zero-weight strata are masked out (``poutine.scale`` refuses zero)."""
    with pyro.plate("strata", weights.shape[0], dim=-2), pyro.plate("data", batch, dim=-1):
        with poutine.mask(mask=weights > 0), poutine.scale(scale=torch.where(weights > 0, weights, 1.0)):
            yield
