"""What an SVI run is: its settings (:class:`TrainConfig`), its objective and its seeding.

Kept apart from the loop (:mod:`.trainer`) and from :func:`~pyro_mcvae.infer.train.fit` so that
both can import it; :mod:`pyro_mcvae.infer.train` re-exports every name here.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

import numpy as np
import pyro
import torch

from ..nets.compiled import compile_mode
from . import distributed
from .objectives import OBJECTIVES, objective_for
from .schedules import ConstantBeta, CyclicalBeta, LinearWarmup, parse_beta_schedule

__all__ = ["TrainConfig", "build_objective", "seed_everything", "amp_dtype", "AMP_DTYPES", "OPTIMIZERS", "RUNTIME_FIELDS",
           "settings_record", "train_differences"]

AMP_DTYPES = {"bf16": torch.bfloat16}
#: ``TrainConfig.optimizer``: the same update (Pyro's ClippedAdam), in one fused step over all
#: parameters (:class:`~.optim.FusedClippedAdam`) or with Pyro's one torch optimiser per parameter.
OPTIMIZERS = ("fused", "pyro")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, PyTorch (CPU and CUDA) and Pyro."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    pyro.set_rng_seed(seed)  # also seeds torch and its CUDA generators


def amp_dtype(amp) -> torch.dtype | None:
    """``TrainConfig.amp`` as a dtype (``None``: full precision)."""
    if amp is False or amp is None:
        return None
    if amp is True:
        return torch.bfloat16
    if amp == "fp16":
        raise ValueError(
            "amp='fp16' is not supported: float16 needs loss scaling (GradScaler) between the loss and "
            "its backward pass, which happen together inside Pyro's SVI step, and the latent laws' "
            "linear algebra has no float16 kernels; use amp='bf16' (no loss scaling needed)"
        )
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be False, True or 'bf16', got {amp!r}")
    return AMP_DTYPES[amp]


@dataclass
class TrainConfig:
    """Settings of one run.

    ``beta`` is a number or a schedule string (``"linear:2000"``, ``"cyclical:1000"``, see
    :func:`parse_beta_schedule`); ``checkpoint_every`` counts steps (0: at epoch ends only).
    ``validate`` turns on Pyro's distribution-argument checks in every step; the data are
    checked once before training either way, and the matrices are SPD by construction.

    ``data_device``: where the training data live. ``"auto"``: on the training device when they
    take at most half of its free memory, else in CPU memory, from which each minibatch is
    gathered into pinned memory and copied to the GPU without blocking; ``"cpu"`` forces the
    latter. ``amp``: ``True`` or ``"bf16"`` runs the model and guide programs under
    ``torch.autocast`` with bfloat16 (CUDA and CPU); the ELBO's log densities and KL terms are
    computed outside, in full precision. ``tensorboard``: also log to ``out_dir/tensorboard``
    (needs the ``tensorboard`` package). ``distributed``: ``"auto"`` trains data-parallel
    (``DistributedDataParallel``) when ``torch.distributed`` is initialised or the environment has
    ``WORLD_SIZE > 1`` (torchrun), ``"on"`` always, ``"off"`` never; ``batch_size`` is then the
    global batch, split among the processes. ``find_unused_parameters``: passed to DDP, which then
    accepts parameters without a gradient in a step, at the cost of one pass over the autograd
    graph per step; ``None`` (default) turns it on when the beta schedule is 0 at some step (the
    prior then gets no gradient, e.g. at the first step of a warm-up).
    ``compile``: ``True`` or a mode of :data:`~pyro_mcvae.nets.compiled.COMPILE_MODES` compiles the
    model's networks with ``torch.compile`` for the training steps (the Pyro programs stay eager;
    state-dict keys and checkpoints are unchanged, and the networks stay compiled after the run:
    :func:`~pyro_mcvae.nets.compiled.uncompile_networks`); where no code can be generated (no C++
    compiler, no Triton) a warning says so and the run is eager.

    ``optimizer``: Pyro's ``ClippedAdam`` update (gradient entries clamped to ``clip_norm``, the
    rate decayed to ``lr_final``, ``prior_lr`` for the module ``"prior"``) either as one fused
    Adam step over all parameters (``"fused"``, :class:`~.optim.FusedClippedAdam`; it also
    resumes checkpoints written with Pyro's optimiser) or with Pyro's one torch optimiser per
    parameter (``"pyro"``, the earlier default). The two agree up to float rounding.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float | None = None  # decays the rate geometrically to this value by the last step
    prior_lr: float | None = None  # the prior's parameters' rate (None: lr); decays with it
    elbo: str | None = None  # the method's default objective, or "meanfield", "trace", "iwae", "dreg"
    num_particles: int = 1  # Monte Carlo particles, or K importance samples for "iwae"/"dreg"
    beta: object = 1.0
    seed: int = 0
    device: str = "cpu"
    clip_norm: float | None = 10.0  # ClippedAdam clamps every gradient entry to [-clip_norm, clip_norm]
    optimizer: str = "fused"  # "fused": ClippedAdam's update in one fused Adam step; "pyro": one per parameter
    checkpoint_every: int = 0
    validate: bool = False  # Pyro's per-step argument checks (~0.6 ms, ~5% of a copula step)
    data_device: str = "auto"
    amp: bool | str = False
    tensorboard: bool = False
    distributed: str = "auto"
    find_unused_parameters: bool | None = None
    compile: bool | str = False

    def __post_init__(self):
        if self.elbo is not None and self.elbo not in OBJECTIVES:
            raise ValueError(f"elbo must be None (the method's default) or one of {OBJECTIVES}, got {self.elbo!r}")
        for name in ("epochs", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.prior_lr is not None and not self.prior_lr > 0:
            raise ValueError(f"prior_lr must be positive (or None), got {self.prior_lr!r}")
        if self.lr_final is not None and not 0 < self.lr_final <= self.lr:
            raise ValueError(f"lr_final must lie in (0, lr], got {self.lr_final}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        parse_beta_schedule(self.beta)
        amp_dtype(self.amp)
        compile_mode(self.compile)
        if self.distributed not in distributed.DISTRIBUTED_MODES:
            raise ValueError(f"distributed must be one of {distributed.DISTRIBUTED_MODES}, got {self.distributed!r}")
        if self.data_device != "auto":
            try:
                torch.device(self.data_device)
            except RuntimeError:
                raise ValueError(f"data_device must be 'auto' or a device such as 'cpu', got {self.data_device!r}") from None


def build_objective(model, config: TrainConfig):
    """The objective ``model`` trains with under ``config``, called with the batch and
    ``beta=..., mask=...`` keywords: ``config.elbo`` (``None``: the method's default) with the
    method's additions (MVAE's subset terms), see
    :func:`~pyro_mcvae.infer.objectives.objective_for`. The one place that decides it (the loop
    never builds objectives itself)."""
    return objective_for(model, config.elbo, config.num_particles)


#: Settings of where and how a run executes, not of what it computes: a run may be resumed or
#: reused with other values of these (say on another device).
RUNTIME_FIELDS = ("device", "data_device", "checkpoint_every", "validate", "tensorboard", "distributed",
                  "find_unused_parameters", "compile")


def settings_record(config: TrainConfig) -> dict:
    """``config`` as a checkpoint and ``results.json`` record it (``beta`` and ``amp`` as text)."""
    return asdict(config) | {"beta": config.beta if isinstance(config.beta, (int, float)) else str(config.beta),
                             "amp": str(config.amp)}


def train_differences(saved: dict, config: TrainConfig, default_elbo: str) -> list[str]:
    """``"<setting>: <saved> in the checkpoint, <now> here"`` for every setting of ``config``
    that differs from the run a checkpoint recorded (``saved``, :func:`settings_record`).
    Not compared: :data:`RUNTIME_FIELDS`; ``epochs`` unless ``lr_final`` is set (a run may go on
    to more epochs, but a decay to ``lr_final`` is spread over all of them); a ``beta`` given as
    a function of the step (it has no recorded form). ``elbo=None`` is the method's
    ``default_elbo``."""
    out = []
    for f in fields(TrainConfig):
        name = f.name
        if name in RUNTIME_FIELDS or name not in saved:
            continue
        if name == "epochs" and config.lr_final is None and saved.get("lr_final") is None:
            continue
        old, new = saved[name], getattr(config, name)
        if name == "elbo":
            same = (old or default_elbo) == (new or default_elbo)
        elif name == "beta":
            old_law, new_law = _schedule(old), _schedule(new)
            same = old_law is None or new_law is None or old_law == new_law
        elif name == "amp":
            same = _amp(old) == _amp(new)
        else:
            same = old == new
        if not same:
            out.append(f"{name}: {old!r} in the checkpoint, {new!r} here")
    return out


def _schedule(beta):
    """A beta setting as a comparable schedule, or ``None`` for a function of the step."""
    if isinstance(beta, (ConstantBeta, LinearWarmup, CyclicalBeta)):
        return beta
    if callable(beta):
        return None
    try:
        return parse_beta_schedule(beta)
    except ValueError:  # the text of a function recorded by an earlier checkpoint
        return None


def _amp(value):
    value = {"False": False, "True": True, "None": None}.get(value, value) if isinstance(value, str) else value
    try:
        return amp_dtype(value)
    except ValueError:
        return value
