"""Training: objectives (``objectives``), the SVI loop (``train``; single process or
data-parallel, ``distributed``), beta schedules, checkpoints. The MCMC sampler of the energy
priors lives in :mod:`pyro_mcvae.mcmc` (below the models) and is re-exported here."""

from .._lazy import lazy_exports

_EXPORTS = {
    "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint",
    "DistributedContext": ".distributed", "init_distributed": ".distributed",
    "ImportanceWeightedELBO": ".objectives", "MeanFieldELBO": ".objectives", "TraceELBO": ".objectives",
    "SubsetELBO": ".objectives", "detach_distribution": ".objectives", "make_objective": ".objectives",
    "PersistentHMC": "..mcmc", "log_partition_surrogate": "..mcmc",
    "ConstantBeta": ".schedules", "CyclicalBeta": ".schedules", "LinearWarmup": ".schedules",
    "parse_beta_schedule": ".schedules",
    "TrainConfig": ".train", "TrainingDivergedError": ".train", "TrainResult": ".train", "fit": ".train",
    "build_objective": ".train", "seed_everything": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
