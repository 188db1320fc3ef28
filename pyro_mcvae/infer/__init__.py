"""Training: objectives (``objectives``), the SVI loop (``train``; single process or
data-parallel, ``distributed``), beta schedules, checkpoints. The MCMC sampler of the energy
priors lives in :mod:`pyro_mcvae.mcmc` (below the models) and is re-exported here."""

from .._lazy import lazy_exports

_EXPORTS = {
    "Callback": ".callbacks", "ChainDiagnostics": ".callbacks", "ChainSnapshots": ".callbacks", "Checkpoint": ".callbacks",
    "CSVLogger": ".callbacks", "EarlyStopping": ".callbacks", "PeriodicEvaluation": ".callbacks",
    "ProgressBar": ".callbacks", "StepInfo": ".callbacks", "StopOnNaN": ".callbacks", "TensorBoard": ".callbacks",
    "TimeBudget": ".callbacks", "StepBudget": ".callbacks", "LearningCurve": ".callbacks",
    "TrainingDivergedError": ".callbacks",
    "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint", "load_model": ".checkpoint",
    "load_weights": ".checkpoint", "save_model": ".checkpoint", "RunConflictError": ".checkpoint",
    "TrainConfig": ".config", "build_objective": ".config", "seed_everything": ".config",
    "DistributedContext": ".distributed", "init_distributed": ".distributed",
    "SupervisedTrainer": ".loop", "TrainingLoop": ".loop", "TrainResult": ".loop",
    "ImportanceWeightedELBO": ".objectives", "MeanFieldELBO": ".objectives", "TraceELBO": ".objectives",
    "SubsetELBO": ".objectives", "detach_distribution": ".objectives", "make_objective": ".objectives",
    "objective_for": ".objectives",
    "PersistentHMC": "..mcmc", "log_partition_surrogate": "..mcmc",
    "ConstantBeta": ".schedules", "CyclicalBeta": ".schedules", "LinearWarmup": ".schedules",
    "parse_beta_schedule": ".schedules",
    "default_callbacks": ".train", "fit": ".train",
    "Trainer": ".trainer", "resolve_device": ".trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
