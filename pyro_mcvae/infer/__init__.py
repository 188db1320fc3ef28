"""Training: the SVI loop (single process or data-parallel), beta schedules, checkpoints."""

from .callbacks import (Callback, ChainDiagnostics, Checkpoint, CSVLogger, EarlyStopping, PeriodicEvaluation,
                        ProgressBar, StepInfo, StopOnNaN, TensorBoard)
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistributedContext, init_distributed
from .iwae import ImportanceWeightedELBO, detach_distribution
from .mcmc import PersistentHMC, log_partition_surrogate
from .schedules import ConstantBeta, CyclicalBeta, LinearWarmup, parse_beta_schedule
from .train import TrainConfig, TrainingDivergedError, TrainResult, fit, make_elbo, seed_everything
from .train import build_objective, default_callbacks
from .loop import SupervisedTrainer, TrainingLoop
from .trainer import Trainer

__all__ = [
    "Callback",
    "CSVLogger",
    "ChainDiagnostics",
    "Checkpoint",
    "EarlyStopping",
    "PeriodicEvaluation",
    "ProgressBar",
    "StepInfo",
    "StopOnNaN",
    "SupervisedTrainer",
    "TensorBoard",
    "Trainer",
    "TrainingLoop",
    "build_objective",
    "default_callbacks",
    "ConstantBeta",
    "DistributedContext",
    "CyclicalBeta",
    "ImportanceWeightedELBO",
    "LinearWarmup",
    "PersistentHMC",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "log_partition_surrogate",
    "make_elbo",
    "parse_beta_schedule",
    "detach_distribution",
    "save_checkpoint",
    "seed_everything",
]
