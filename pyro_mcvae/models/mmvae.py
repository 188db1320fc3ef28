"""MMVAE (Shi et al. 2019): one latent shared by all components, a mixture-of-experts posterior
and the stratified estimator.

``p(x, z) = N(z; 0, I) prod_k p(x_k | z)``; ``q(z | x) = 1/M sum_m q_m(z | x_m)``. The objective
draws one latent per mixture component (stratum ``m``), each scored by the whole mixture and
weighted by its mixture weight: ``sum_m 1/M ELBO(z_m)``, or the importance-weighted version with
``K`` draws per stratum (the default, with DReG gradients). The strata are the objective's
business (:class:`~pyro_mcvae.infer.objectives.StratifiedGuide`); the model program is the shared
one.

:class:`MixtureOfExpertsGuide` also serves MoPoE-VAE (``subsets=True``, see ``mopoe.py``) and
the shared part of MMVAE+ (``mmvaeplus.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch

from ..distributions import (
    StratifiedMixture,
    latent_law,
    mixture_of_products,
    nonempty_subsets,
    valid_subsets,
)
from ..nets import VectorDecoder
from .base import CommonConfig, EncoderGuide
from .layouts import SharedLatentVAE, StandardPrior

__all__ = ["MMVAEConfig", "MixtureOfExpertsGuide", "StrataSite", "build_mmvae"]


class StrataSite(dist.TorchDistribution):
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


class MixtureOfExpertsGuide(EncoderGuide):
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
                 density: str = "mixture", encoder_dim: int | None = None):
        super().__init__(component_dims, latent_dim, hidden, min_var, encoder_dim=encoder_dim)
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

    def _sample_latents(self, xs: list[torch.Tensor], mask):
        """One draw per stratum (the objective's ``strata`` plate), scored by the mixture."""
        return pyro.sample("z", StrataSite(self._posterior(xs, mask), own_density=self.density == "stratum"))

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


@dataclass
class MMVAEConfig(CommonConfig):
    """MMVAE. ``shared_dim``: size of the shared latent. ``family``: ``"normal"`` or ``"laplace"``
    experts. ``density``: ``"mixture"`` (exact stratified ELBO) or ``"stratum"`` (each draw scored
    by its own expert, a cheaper lower bound)."""

    shared_dim: int = 3
    family: str = "normal"
    density: str = "mixture"


def build_mmvae(component_dims: Sequence[int], config: MMVAEConfig, subsets: bool = False) -> SharedLatentVAE:
    dims, d, c = [int(x) for x in component_dims], config.shared_dim, config
    guide = MixtureOfExpertsGuide(dims, d, c.hidden, subsets=subsets, family=c.family, density=c.density)
    return SharedLatentVAE(dims, d, StandardPrior(d, c.family), guide, VectorDecoder(dims, d, c.hidden),
                           c.likelihoods(dims), c)
