"""Generative Pyro programs and their guides."""

from .guides import (
    DiagonalGaussianGuide,
    GMRFGuide,
    MMVAEPlusGuide,
    MixtureOfExpertsGuide,
    ProductOfExpertsGuide,
    SubsetELBO,
    latent_scale,
)
from .likelihoods import LIKELIHOODS, ComponentLikelihood
from .mcvae import MCVAE
from .priors import PRIOR_PARAMETERIZATIONS, DiagonalGaussianPrior, GMRFPrior, StandardPrior

__all__ = [
    "LIKELIHOODS",
    "PRIOR_PARAMETERIZATIONS",
    "ComponentLikelihood",
    "DiagonalGaussianGuide",
    "DiagonalGaussianPrior",
    "GMRFGuide",
    "GMRFPrior",
    "MCVAE",
    "MMVAEPlusGuide",
    "MixtureOfExpertsGuide",
    "ProductOfExpertsGuide",
    "StandardPrior",
    "SubsetELBO",
    "latent_scale",
]
