"""pyro_mcvae: multi-component VAEs whose latent space is a Markov random field, on Pyro.

The package facade is lazy (PEP 562): ``from pyro_mcvae import GMRFGuide`` loads the models,
while ``import pyro_mcvae.data.copula`` loads NumPy only.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from ._lazy import lazy_exports

try:
    __version__ = _version("pyro_mcvae")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "assemble_block_covariance": ".covariance",
    "GMRF": ".distributions",
    "TrainConfig": ".infer", "fit": ".infer", "load_model": ".infer", "save_model": ".infer",
    "MCVAE": ".models", "ComponentLikelihood": ".models", "DiagonalGaussianGuide": ".models",
    "DiagonalGaussianPrior": ".models", "GMRFGuide": ".models", "GMRFPrior": ".models",
    "build_model": ".models", "register": ".models",
    "GaussianMixture": ".samplers", "fit_latent_sampler": ".samplers",
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
