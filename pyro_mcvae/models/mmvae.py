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
    LATENT_FAMILIES,
    StratifiedMixture,
    latent_law,
    mixture_of_products,
    nonempty_subsets,
    valid_subsets,
)
from ..nets import VectorDecoder
from .base import CommonConfig, EncoderGuide
from .checks import field_problems, one_of, positive_int
from .layouts import SharedLatentVAE, StandardPrior

__all__ = ["DENSITIES", "MMVAEConfig", "MixtureDraw", "MixtureOfExpertsGuide", "STRATA", "StrataSite", "build_mmvae"]

#: How a mixture guide scores its draws, and how many it draws (see MixtureOfExpertsGuide).
DENSITIES = ("mixture", "stratum")
STRATA = ("every", "one")


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


class MixtureDraw(dist.TorchDistribution):
    """A stratified mixture seen as an ordinary site: each draw (every entry of ``sample_shape``
    and the batch) comes from one component picked at its mixture weight, and is scored by the
    whole mixture. The pick's law does not depend on the parameters, so the draw is a
    reparameterisation of the mixture (``z = mu_s + sigma_s eps`` with ``(s, eps)`` free of them):
    pathwise gradients, the importance-weighted bounds and DReG treat it as any reparameterised
    site (it is not a :class:`~pyro_mcvae.infer.objectives.iwae.MixtureScoredSite`). One decoder
    pass per draw, where :class:`StrataSite` needs one per stratum."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, mixture: StratifiedMixture):
        self.mixture = mixture
        super().__init__(mixture.batch_shape, mixture.event_shape, validate_args=False)

    @property
    def support(self):
        return self.mixture.support

    def expand(self, batch_shape, _instance=None):
        return MixtureDraw(self.mixture.expand(batch_shape))

    def rsample(self, sample_shape=torch.Size()):
        sample_shape = torch.Size(sample_shape)
        draws = self.mixture.rsample(sample_shape)  # sample_shape + (K,) + batch + E: one per stratum
        k, ev = self.mixture.num_components, len(self.event_shape)
        weights = self.mixture.log_weights.exp().expand(sample_shape + self.batch_shape + (k,))
        pick = torch.multinomial(weights.reshape(-1, k), 1).reshape(sample_shape + (1,) + self.batch_shape)
        index = pick.reshape(pick.shape + (1,) * ev).expand(pick.shape + self.event_shape)
        return draws.gather(len(sample_shape), index).squeeze(len(sample_shape))

    def log_prob(self, value):
        return self.mixture.log_prob(value)


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
    ``strata``: ``"every"`` (default) draws one latent per stratum (the stratified estimator);
    ``"one"`` draws one latent per datum from the mixture (:class:`MixtureDraw`, scored by the
    mixture, so ``density="mixture"`` only): an unbiased estimate of the same mixture ELBO at one
    decoder pass instead of ``K`` (31 for MoPoE-VAE's five modalities), with more variance; MoPoE-VAE's
    reference implementation likewise reconstructs from one subset per datum.
    """

    #: leave out the strata absent from a whole batch (their weight is zero); False where a
    #: stratum's position means something beyond its expert (MMVAE+: stratum m scores w_m)
    prune_strata = True

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 min_var: float = 1e-4, subsets: bool = False, family: str = "normal",
                 density: str = "mixture", encoder_dim: int | None = None, strata: str = "every"):
        super().__init__(component_dims, latent_dim, hidden, min_var, encoder_dim=encoder_dim)
        latent_law(family, torch.zeros(()), torch.ones(()))  # validates the family
        if density not in DENSITIES:
            raise ValueError(f"density must be 'mixture' or 'stratum', got {density!r}")
        if strata not in STRATA:
            raise ValueError(f"strata must be 'every' or 'one', got {strata!r}")
        if strata == "one" and density != "mixture":
            raise ValueError("strata='one' scores each draw by the mixture (its stratum is not kept): it needs "
                             f"density='mixture', got density={density!r}")
        self.subsets, self.family, self.density, self.strata = subsets, family, density, strata
        self.num_strata = len(nonempty_subsets(self.num_components)) if subsets else self.num_components

    def _mixture(self, loc, var, mask=None) -> StratifiedMixture:
        """Mixture over ``(batch, K, L)`` experts (or their subset products). Strata absent from
        every datum of the batch are left out: they have weight zero, and each stratum is one more
        decoder pass per draw (a single given component of MoPoE-VAE's five keeps 1 of 31)."""
        std = var.sqrt()
        if self.subsets:
            loc, std, mask = mixture_of_products(loc, std, mask, validate=False)
        keep = None if mask is None else self._kept_strata(mask)
        if keep is not None:
            loc, std, mask = loc[:, keep], std[:, keep], mask[:, keep]
        return StratifiedMixture(latent_law(self.family, loc, std).to_event(1), mask=mask)

    def _kept_strata(self, present: torch.Tensor) -> torch.Tensor | None:
        """Bool ``(K,)``: the strata present in some datum of the ``(batch, K)`` matrix ``present``;
        None where every stratum stays (none absent, or ``prune_strata`` off). The one rule behind
        both the guide's mixture and :meth:`stratum_weights`, so the two always agree."""
        if not self.prune_strata:
            return None
        keep = present.any(0)
        return None if bool(keep.all()) else keep

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> StratifiedMixture:
        return self._mixture(*self.encoder(xs), mask)

    def stratum_weights(self, mask, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Mixture weights ``(S, batch)``: uniform over the present experts (or valid subsets), the
        strata of the guide's mixture (those absent from the whole batch left out)."""
        dtype = dtype or torch.get_default_dtype()
        if self.strata == "one":  # one draw from the whole mixture: no strata plate of its own
            return torch.ones(1, batch, device=device, dtype=dtype)
        if mask is None:
            return torch.full((self.num_strata, batch), 1.0 / self.num_strata, device=device, dtype=dtype)
        present = valid_subsets(mask) if self.subsets else mask  # (batch, K)
        keep = self._kept_strata(present)
        w = (present if keep is None else present[:, keep]).to(dtype)
        return (w / w.sum(-1, keepdim=True)).T

    def _sample_latents(self, xs: list[torch.Tensor], mask):
        """One draw per stratum (the objective's ``strata`` plate), scored by the mixture; with
        ``strata="one"``, one draw per datum from the mixture."""
        q = self._posterior(xs, mask)
        if self.strata == "one":
            return pyro.sample("z", MixtureDraw(q).expand((1, *q.batch_shape)))
        return pyro.sample("z", StrataSite(q, own_density=self.density == "stratum"))

    @staticmethod
    def _draw(q: StratifiedMixture, num_samples: int) -> torch.Tensor:
        """``(num_samples, batch, L)`` draws from the mixture: a stratum picked by its weight."""
        return MixtureDraw(q).sample((num_samples,))

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
    by its own expert, a cheaper lower bound). ``strata``: ``"every"`` (one draw per stratum) or
    ``"one"`` (one draw per datum from the mixture; see :class:`MixtureOfExpertsGuide`)."""

    shared_dim: int = 3
    family: str = "normal"
    density: str = "mixture"
    strata: str = "every"

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, shared_dim=positive_int, family=one_of(*LATENT_FAMILIES),
                                                   density=one_of(*DENSITIES), strata=one_of(*STRATA))


def build_mmvae(component_dims: Sequence[int], config: MMVAEConfig, subsets: bool = False) -> SharedLatentVAE:
    dims, d, c = [int(x) for x in component_dims], config.shared_dim, config
    guide = MixtureOfExpertsGuide(dims, d, c.hidden, subsets=subsets, family=c.family, density=c.density,
                                  strata=c.strata)
    return SharedLatentVAE(dims, d, StandardPrior(d, c.family), guide, VectorDecoder(dims, d, c.hidden),
                           c.likelihoods(dims), c)
