"""MVAE (Wu & Goodman 2018): one latent shared by all components, a product-of-experts posterior
and the sub-sampled ELBO.

``p(x, z) = N(z; 0, I) prod_k p(x_k | z)``; ``q(z | x_A) ∝ N(z; 0, I) prod_{k in A} q_k(z | x_k)``
in closed form (precisions add), for any subset ``A`` of present components. Training sums the
ELBO of the joint, of every single component and of ``random_subsets`` random subsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyro.distributions as dist
import torch

from ..distributions import LATENT_FAMILIES, latent_law, product_of_gaussian_experts
from ..nets import VectorDecoder
from .base import CommonConfig, EncoderGuide
from .checks import boolean, field_problems, non_negative_int, one_of, positive_int
from .layouts import SharedLatentVAE, StandardPrior, subset_rows

__all__ = ["MVAE", "MVAEConfig", "ProductOfExpertsGuide", "build_mvae", "middle_subsets"]


class ProductOfExpertsGuide(EncoderGuide):
    """MVAE's posterior over a latent shared by all components: the product of the present
    components' experts and the prior expert (unit variance), in closed form.

    ``family="laplace"`` gives Laplace posteriors: the experts are combined through their means
    and variances (moment matching, see :func:`~pyro_mcvae.distributions.latent_law`).
    With ``subsampled=True`` (MVAE's objective) training sums the ELBO of the joint, of each
    single component and of ``random_subsets`` subsets drawn afresh at every step (uniformly among
    those of 2 to ``M - 1`` components), as in Wu & Goodman's sub-sampled objective
    (:class:`~pyro_mcvae.infer.objectives.SubsetELBO`, over :meth:`MVAE.subset_terms`). The default ``random_subsets=0`` keeps the joint and single terms only:
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


class MVAE(SharedLatentVAE):
    """The MVAE model: the shared-latent program, trained on the sub-sampled objective, whose
    terms :meth:`subset_terms` declares (the objective layer builds it)."""

    subset_scoring = "subset"  # each term is the ELBO of its subset alone

    def subset_terms(self) -> tuple[torch.Tensor, int, torch.Tensor | None] | None:
        """The sub-sampled objective's terms: the fixed subsets ``(T, M)`` (the joint, then each
        single component), the number of random subsets per step and their candidates ``(P, M)``
        (every subset of 2 to ``M - 1`` components); ``None`` when ``subsampled`` is off."""
        if not self.guide.subsampled:
            return None
        m, k = self.num_components, self.guide.random_subsets
        fixed = torch.cat([torch.ones(1, m, dtype=torch.bool), torch.eye(m, dtype=torch.bool)])
        return fixed, k, (middle_subsets(m) if k else None)

    def subset_per_example(self) -> bool:
        return False  # Wu & Goodman's random subsets: one per minibatch


def middle_subsets(num_components: int) -> torch.Tensor:
    """Every subset of 2 to ``M - 1`` components as a bool ``(P, M)`` tensor (the candidates of
    MVAE's random terms: the joint and the single components have terms of their own)."""
    return subset_rows(num_components, min_size=2)


@dataclass
class MVAEConfig(CommonConfig):
    """MVAE. ``shared_dim``: size of the latent shared by all components. ``family``:
    ``"normal"`` or ``"laplace"`` posteriors and prior. ``subsampled``: train on the sub-sampled
    objective (joint + singles + ``random_subsets`` random subsets per step)."""

    shared_dim: int = 3
    family: str = "normal"
    subsampled: bool = True
    random_subsets: int = 0

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, shared_dim=positive_int, family=one_of(*LATENT_FAMILIES),
                                                   subsampled=boolean, random_subsets=non_negative_int)


def build_mvae(component_dims: Sequence[int], config: MVAEConfig) -> MVAE:
    dims, d, c = [int(x) for x in component_dims], config.shared_dim, config
    guide = ProductOfExpertsGuide(dims, d, c.hidden, subsampled=c.subsampled, family=c.family,
                                  random_subsets=c.random_subsets)
    return MVAE(dims, d, StandardPrior(d, c.family), guide, VectorDecoder(dims, d, c.hidden),
                c.likelihoods(dims), c)
