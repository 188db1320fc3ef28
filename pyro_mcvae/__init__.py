"""pyro_mcvae: multi-component VAEs whose latent space is a Markov random field, on Pyro."""

from .covariance import assemble_block_covariance
from .distributions import GMRF
from .infer import TrainConfig, fit
from .models import (
    MCVAE,
    ComponentLikelihood,
    DiagonalGaussianGuide,
    DiagonalGaussianPrior,
    GMRFGuide,
    GMRFPrior,
)

__version__ = "0.1.0"

__all__ = [
    "GMRF",
    "MCVAE",
    "ComponentLikelihood",
    "DiagonalGaussianGuide",
    "DiagonalGaussianPrior",
    "GMRFGuide",
    "GMRFPrior",
    "TrainConfig",
    "assemble_block_covariance",
    "fit",
    "__version__",
]
