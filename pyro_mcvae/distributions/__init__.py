"""Latent laws with block structure, and the expert combinations of the baseline guides."""

from .asymmetric_laplace import GIGMixtureNormal, MultivariateAsymmetricLaplace, log_bessel_k, sample_gig
from .completion import PriorCompletion, RowGroups, SampledCompletion, mask_groups
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
from .factorized import CoordinateLaplace, CoordinateNormal
from .completed_gmrf import CompletedGMRF, complete_from_prior
from .gmrf import GMRF, as_gmrf, component_indices

__all__ = [
    "CompletedGMRF",
    "CoordinateLaplace",
    "CoordinateNormal",
    "GIGMixtureNormal",
    "GMRF",
    "LATENT_FAMILIES",
    "MultivariateAsymmetricLaplace",
    "PriorCompletion",
    "RowGroups",
    "SampledCompletion",
    "StratifiedMixture",
    "as_gmrf",
    "complete_from_prior",
    "component_indices",
    "latent_law",
    "log_bessel_k",
    "mask_groups",
    "mixture_of_products",
    "nonempty_subsets",
    "product_of_gaussian_experts",
    "sample_gig",
    "subset_masks",
    "valid_subsets",
]
