"""MMVAE+ (Palumbo et al. 2023): a shared latent ``z`` with a mixture-of-experts posterior, as
MMVAE, plus a modality-specific latent ``w_k`` per component.

``p(x, z, w) = p(z) prod_k p(w_k) p(x_k | z, w_k)``, ``p`` unit-variance laws. The guide, in
stratum ``m`` (``z ~ q(z | x_m)``), draws ``w_m ~ q(w_m | x_m)`` and every other ``w_j`` from a
learnable auxiliary prior ``r_j``: component ``j`` is cross-reconstructed from the shared ``z``
of ``x_m`` and a ``w_j`` that carries no information about ``x_j``. Only ``w_m`` enters the
density ratio, in the model and the guide alike (:func:`own_private`); trained with the
importance-weighted bound (``"dreg"`` by default). The latent vector is ``(z, w_1, ..., w_M)``,
size ``d + M d_w``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import LATENT_FAMILIES, StratifiedMixture, latent_law
from ..nets import VectorDecoder
from ..validation import check_components, check_mask, module_dtype
from .base import CommonConfig, MCVAE, check_no_beta
from .checks import field_problems, one_of, optional, positive_int
from .layouts import StandardPrior
from .mmvae import DENSITIES, MixtureOfExpertsGuide, StrataSite

__all__ = ["MMVAEPlus", "MMVAEPlusConfig", "MMVAEPlusGuide", "build_mmvaeplus", "own_private"]


def own_private(num_components: int, batch: int, device=None) -> torch.Tensor:
    """Bool ``(S, batch, M)``: entry ``(m, n, j)`` is True where ``w_j`` is scored in stratum
    ``m``, i.e. ``j == m`` (the strata are the components)."""
    eye = torch.eye(num_components, dtype=torch.bool, device=device)[:, None, :]
    return eye.expand(-1, batch, -1)


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

    prune_strata = False  # stratum m scores its own private latent w_m: every stratum stays

    def __init__(self, component_dims: Sequence[int], latent_dim: int, private_dim: int,
                 hidden=(64, 64), min_var: float = 1e-4, family: str = "normal",
                 density: str = "mixture"):
        if isinstance(private_dim, bool) or not isinstance(private_dim, int) or private_dim < 1:
            raise ValueError(f"private_dim must be a positive integer, got {private_dim!r}")
        super().__init__(component_dims, latent_dim, hidden, min_var, False, family, density,
                         encoder_dim=latent_dim + private_dim)
        self.private_dim = private_dim
        self.aux_raw_std = nn.Parameter(torch.zeros(self.num_components, private_dim))

    def auxiliary_std(self) -> torch.Tensor:
        """Standard deviations ``(M, d_w)`` of the auxiliary priors ``r_j``."""
        return F.softplus(self.aux_raw_std) * (1.0 / math.log(2.0)) + 1e-3  # 1 at initialisation

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
        z = pyro.sample("z", StrataSite(self._mixture(z_loc, z_var, mask), own_density=self.density == "stratum"))
        scored = own_private(self.num_components, xs[0].shape[0], xs[0].device)
        w = pyro.sample("w", self._private_law(w_loc, w_var, scored))
        return torch.cat([z, w.flatten(-2)], -1)

    def proposal(self, xs, mask=None):
        """The proposal of the likelihood estimates (:class:`~pyro_mcvae.models.base.ProposalGuide`):
        the shared ``z`` drawn and scored as in the guide program; in every stratum each present
        component's private latent from its own encoder, ``w_j ~ q(w_j | x_j)``, and each absent
        one from its prior (the unit-variance law of the family, the model's ``private_prior``).

        The training program draws ``w_j``, ``j != m``, from the auxiliary ``r_j``, which knows
        nothing of ``x_j``: a valid proposal, but its weights ``p(x_j | z, w_j) p(w_j) / r_j(w_j)``
        degenerate as soon as ``x_j`` pins its private latent down, and ``p(w_j) / r_j(w_j)`` has
        infinite variance under ``r_j`` once ``r_j`` is narrower than ``p / sqrt(2)``."""
        pyro.module("guide", self)
        xs = check_components(xs, self.component_dims, "data", False, *module_dtype(self))
        batch = xs[0].shape[0]
        mask = check_mask(mask, batch, self.num_components)
        with pyro.plate("data", batch, dim=-1):
            (z_loc, z_var), (w_loc, w_var) = self._split(*self.encoder(xs))
            z = pyro.sample("z", StrataSite(self._mixture(z_loc, z_var, mask),
                                            own_density=self.density == "stratum"))
            own = (torch.ones_like(w_loc, dtype=torch.bool) if mask is None
                   else mask.unsqueeze(-1).expand(w_loc.shape))
            loc = torch.where(own, w_loc, torch.zeros_like(w_loc)).expand(self.num_strata, *w_loc.shape)
            std = torch.where(own, w_var.sqrt(), torch.ones_like(w_var)).expand(self.num_strata, *w_loc.shape)
            w = pyro.sample("w", latent_law(self.family, loc, std).to_event(2))  # (S, batch, M, d_w)
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
        xs = check_components(xs, self.component_dims, "data", True, *module_dtype(self))
        (z_loc, z_var), (w_loc, w_var) = self._split(*self.encoder(xs))
        q = self._mixture(z_loc, z_var)
        z = q.mean if use_mean else self._draw(q, 1)[0]
        w = w_loc if use_mean else latent_law(self.family, w_loc, w_var.sqrt()).sample()
        return torch.cat([z, w.flatten(-2)], -1)


class MMVAEPlus(MCVAE):
    """The MMVAE+ model: decoder ``k`` reads ``(z, w_k)``."""

    default_objective = "dreg"

    def __init__(self, component_dims, shared_dim, private_dim, prior, private_prior, guide, decoder,
                 likelihoods, config=None):
        super().__init__(component_dims, shared_dim, prior, guide, decoder, likelihoods, config)
        self.private_dim, self.private_prior = int(private_dim), private_prior

    def _register(self) -> None:
        super()._register()
        pyro.module("private_prior", self.private_prior)

    def model(self, xs, mask=None, beta=None):
        """``z ~ p(z)``, ``w_k ~ p(w_k)`` (scored only for the stratum's own component, as in the
        guide), ``x_k ~ p(x_k | z, w_k)``. Needs the objective's ``strata`` plate (one stratum per
        component)."""
        check_no_beta(beta)
        xs, mask = self._checked(xs, mask)
        self._register()
        batch = xs[0].shape[0]
        prior = self.prior()
        with pyro.plate("data", batch, dim=-1):
            z = pyro.sample("z", prior)
            scored = own_private(self.num_components, batch, z.device)
            law = self.private_prior.law(scored.shape + (self.private_dim,))
            w = pyro.sample("w", law.to_event(1).mask(scored).to_event(1))
            self._observe(torch.cat([z, w.flatten(-2)], -1), xs, mask)

    def _decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        m, d = self.num_components, self.latent_dim
        shared = z[..., :d].unsqueeze(-2).expand(*z.shape[:-1], m, d)
        return torch.cat([shared, z[..., d:].reshape(*z.shape[:-1], m, self.private_dim)], -1)

    def _prior_draws(self, num_samples: int) -> torch.Tensor:
        return torch.cat([self.prior().sample((num_samples,)), self.private_prior().sample((num_samples,))], -1)


@dataclass
class MMVAEPlusConfig(CommonConfig):
    """MMVAE+. ``shared_dim``: size of the shared latent; ``private_dim``: size of each
    component's private latent (``None``: ``shared_dim``). ``family``, ``density``: as MMVAE."""

    shared_dim: int = 3
    private_dim: int | None = None
    family: str = "normal"
    density: str = "mixture"

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, shared_dim=positive_int, private_dim=optional(positive_int),
                                                   family=one_of(*LATENT_FAMILIES), density=one_of(*DENSITIES))


def build_mmvaeplus(component_dims: Sequence[int], config: MMVAEPlusConfig) -> MMVAEPlus:
    dims, d, c = [int(x) for x in component_dims], config.shared_dim, config
    w = d if c.private_dim is None else c.private_dim
    guide = MMVAEPlusGuide(dims, d, w, c.hidden, family=c.family, density=c.density)
    return MMVAEPlus(dims, d, w, StandardPrior(d, c.family), StandardPrior(len(dims) * w, c.family), guide,
                     VectorDecoder(dims, d + w, c.hidden), c.likelihoods(dims), c)
