"""The methods: one module each (``gmrf``, ``almrf``, ``nnmrf``, ``mvae``, ``mmvae``, ``mopoe``,
``mmvaeplus``), the shared pieces (``base``, ``layouts``, ``likelihoods``) and the ``registry``
that maps a method name to its config, builder and default objective."""

from .._lazy import lazy_exports

_EXPORTS = {
    "MCVAE": ".base", "CommonConfig": ".base", "EncoderGuide": ".base", "LatentGuide": ".base",
    "MCMCPrior": ".base", "ConditionablePrior": ".base", "SelfSamplingPrior": ".base",
    "ProposalGuide": ".base",
    "BlockGuide": ".layouts", "BlockLatentVAE": ".layouts", "SharedLatentVAE": ".layouts",
    "StandardPrior": ".layouts",
    "ComponentLikelihood": ".likelihoods", "LIKELIHOODS": ".likelihoods",
    "GMRFConfig": ".gmrf", "GMRFGuide": ".gmrf", "GMRFPrior": ".gmrf", "DiagonalGaussianGuide": ".gmrf",
    "DiagonalGaussianPrior": ".gmrf", "IndependentConfig": ".gmrf", "PRIOR_PARAMETERIZATIONS": ".gmrf",
    "ALMRFConfig": ".almrf", "ALMRFGuide": ".almrf", "ALMRFPrior": ".almrf",
    "NNMRFConfig": ".nnmrf", "NeuralMRFEnergy": ".nnmrf", "NeuralMRFPrior": ".nnmrf", "EnergyMRF": ".nnmrf",
    "MVAE": ".mvae", "MVAEConfig": ".mvae", "ProductOfExpertsGuide": ".mvae",
    "MMVAEConfig": ".mmvae", "MixtureOfExpertsGuide": ".mmvae", "StrataSite": ".mmvae", "MixtureDraw": ".mmvae",
    "MoPoEConfig": ".mopoe",
    "MMVAEPlus": ".mmvaeplus", "MMVAEPlusConfig": ".mmvaeplus", "MMVAEPlusGuide": ".mmvaeplus",
    "Method": ".registry", "build_model": ".registry", "get_method": ".registry", "method_names": ".registry",
    "register": ".registry",
    "build_from_record": ".records", "model_record": ".records", "record_differences": ".records",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
