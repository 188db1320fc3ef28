"""Generative Pyro programs and their guides."""

from .guides import (
    ALMRFGuide,
    DiagonalGaussianGuide,
    GMRFGuide,
    MMVAEPlusGuide,
    MixtureOfExpertsGuide,
    ProductOfExpertsGuide,
    SubsetELBO,
    latent_scale,
)
from .energy import EnergyMRF, NeuralMRFEnergy, NeuralMRFPrior
from .likelihoods import LIKELIHOODS, ComponentLikelihood
from .mcvae import MCVAE
from .priors import PRIOR_PARAMETERIZATIONS, ALMRFPrior, DiagonalGaussianPrior, GMRFPrior, StandardPrior

__all__ = [
    "ALMRFGuide",
    "ALMRFPrior",
    "LIKELIHOODS",
    "PRIOR_PARAMETERIZATIONS",
    "ComponentLikelihood",
    "DiagonalGaussianGuide",
    "DiagonalGaussianPrior",
    "EnergyMRF",
    "GMRFGuide",
    "GMRFPrior",
    "MCVAE",
    "MMVAEPlusGuide",
    "MixtureOfExpertsGuide",
    "NeuralMRFEnergy",
    "NeuralMRFPrior",
    "ProductOfExpertsGuide",
    "StandardPrior",
    "SubsetELBO",
    "latent_scale",
]
