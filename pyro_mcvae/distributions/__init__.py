"""Latent laws with block structure, and the expert combinations of the baseline guides."""

from .experts import (
    LATENT_FAMILIES,
    StratifiedMixture,
    latent_law,
    mixture_of_products,
    nonempty_subsets,
    product_of_gaussian_experts,
    subset_masks,
    valid_subsets,
)
from .gmrf import GMRF, as_gmrf, complete_from_prior, component_indices

__all__ = [
    "GMRF",
    "LATENT_FAMILIES",
    "StratifiedMixture",
    "as_gmrf",
    "complete_from_prior",
    "component_indices",
    "latent_law",
    "mixture_of_products",
    "nonempty_subsets",
    "product_of_gaussian_experts",
    "subset_masks",
    "valid_subsets",
]
