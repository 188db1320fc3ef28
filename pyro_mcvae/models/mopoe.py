"""MoPoE-VAE (Sutter et al. 2021): one shared latent, a mixture over the products of experts of
every non-empty subset of the present components.

``p(x, z) = N(z; 0, I) prod_k p(x_k | z)``; ``q(z | x) = 1/(2^M - 1) sum_A PoE_A(z | x_A)``.
Trained like MMVAE, one draw per subset (stratum), with the analytic-where-possible ELBO by
default (``"meanfield"``; the mixture's KL is a Monte Carlo estimate). The guide is
:class:`~pyro_mcvae.models.mmvae.MixtureOfExpertsGuide` with ``subsets=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .mmvae import MMVAEConfig, build_mmvae
from .layouts import SharedLatentVAE

__all__ = ["MoPoEConfig", "build_mopoe"]


@dataclass
class MoPoEConfig(MMVAEConfig):
    """MoPoE-VAE: the fields of :class:`~pyro_mcvae.models.mmvae.MMVAEConfig` (``density=
    "stratum"`` gives the per-subset KL terms of the reference objective at ``O(2^M)`` cost)."""


def build_mopoe(component_dims: Sequence[int], config: MoPoEConfig) -> SharedLatentVAE:
    return build_mmvae(component_dims, config, subsets=True)
