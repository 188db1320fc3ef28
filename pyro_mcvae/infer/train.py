"""One SVI training loop for every model: seeds, beta schedules, CSV log, resumable checkpoints.

Also for image-sized data: compact (e.g. ``uint8``) data with a ``batch_transform``, data kept on
the GPU or staged batch by batch from pinned CPU memory, bf16 autocast, TensorBoard, and
data-parallel training over several processes (see :mod:`pyro_mcvae.infer.distributed`).
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from ..validation import check_components, check_finite, check_mask
from . import distributed
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from ..models.base import ChainDiagnostics
from .objectives import OBJECTIVES, objective_for
from .schedules import parse_beta_schedule

__all__ = ["TrainConfig", "TrainResult", "TrainingDivergedError", "build_objective", "fit", "seed_everything"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
TENSORBOARD_DIR = "tensorboard"
LOG_FIELDS = ["epoch", "step", "loss", "beta", "seconds", "step_ms", "samples_per_s"]
# Added to the log when the prior samples itself by MCMC (NeuralMRFPrior): its chains' health.
CHAIN_FIELDS = {"chain_max_rhat": "max_rhat", "chain_min_ess_bulk": "min_ess_bulk",
                "chain_min_ess_tail": "min_ess_tail", "chain_divergences": "divergences",
                "chain_acceptance": "acceptance_rate"}
AMP_DTYPES = {"bf16": torch.bfloat16}
# The data stay on a GPU when they take at most this share of its free memory ("auto").
DATA_DEVICE_SHARE = 0.5


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _diverged(loss, state: dict, ckpt_path) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"loss became {loss} at step {state['step']} (epoch {state['epoch'] + 1}); "
        + (f"the last good checkpoint is kept at {ckpt_path}. " if ckpt_path else "")
        + "Try a smaller learning rate, gradient clipping or a beta warm-up."
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, PyTorch (CPU and CUDA) and Pyro."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    pyro.set_rng_seed(seed)  # also seeds torch and its CUDA generators


def _amp_dtype(amp) -> torch.dtype | None:
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
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float | None = None  # decays the rate geometrically to this value by the last step
    elbo: str | None = None  # the method's default, or "meanfield", "trace", "iwae", "dreg"
    num_particles: int = 1  # Monte Carlo particles, or K importance samples for "iwae"/"dreg"
    beta: object = 1.0
    seed: int = 0
    device: str = "cpu"
    clip_norm: float | None = 10.0  # ClippedAdam clamps every gradient entry to [-clip_norm, clip_norm]
    checkpoint_every: int = 0
    validate: bool = False  # Pyro's per-step argument checks (~0.6 ms, ~5% of a copula step)
    data_device: str = "auto"
    amp: bool | str = False
    tensorboard: bool = False
    distributed: str = "auto"
    find_unused_parameters: bool | None = None

    def __post_init__(self):
        if self.elbo is not None and self.elbo not in OBJECTIVES:
            raise ValueError(f"elbo must be None (the method's default) or one of {OBJECTIVES}, got {self.elbo!r}")
        for name in ("epochs", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_final is not None and not 0 < self.lr_final <= self.lr:
            raise ValueError(f"lr_final must lie in (0, lr], got {self.lr_final}")
        parse_beta_schedule(self.beta)
        _amp_dtype(self.amp)
        if self.distributed not in distributed.DISTRIBUTED_MODES:
            raise ValueError(f"distributed must be one of {distributed.DISTRIBUTED_MODES}, got {self.distributed!r}")
        if self.data_device != "auto":
            try:
                torch.device(self.data_device)
            except RuntimeError:
                raise ValueError(f"data_device must be 'auto' or a device such as 'cpu', got {self.data_device!r}") from None


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per epoch, as in the CSV log
    steps: int = 0
    checkpoint: Path | None = None

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history]


def build_objective(model, config: TrainConfig):
    """The objective ``fit`` trains with: ``config.elbo`` (``None``: the model's default) with the
    method's additions (:func:`~pyro_mcvae.infer.objectives.objective_for`)."""
    return objective_for(model, config.elbo, config.num_particles)


class _Autocast:
    """A model or guide program run under ``torch.autocast``. Other attributes pass through to the
    program (objectives read e.g. the guide's ``stratum_weights``)."""

    def __init__(self, fn, device_type: str, dtype: torch.dtype):
        self.fn, self.device_type, self.dtype = fn, device_type, dtype

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.fn(*args, **kwargs)

    def __getattr__(self, name):
        if name == "fn":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.fn, name)


def _training_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return device


def _components(data, component_dims: Sequence[int], batch_transform, probe_size: int, device):
    """The training data as a list of ``M`` tensors ``(N, ...)``, checked.

    Without ``batch_transform`` the data must be what the model takes (floating point, finite,
    ``(N, D_k)``). With it, the raw tensors may be of any dtype and shape ``(N, ...)``; the first
    ``probe_size`` rows are transformed on ``device`` and checked instead (floating-point raw data
    are also checked for NaN and infinite values in full).
    """
    if batch_transform is None:
        return check_components(data, component_dims, "training data")
    m = len(component_dims)
    if isinstance(data, torch.Tensor):
        if data.dim() < 3:
            raise ValueError(f"training data as one tensor must have shape (N, M={m}, ...), got {tuple(data.shape)}")
        if data.shape[1] != m:
            raise ValueError(f"training data has {data.shape[1]} components, the model expects {m}")
        xs = list(data.unbind(1))
    elif isinstance(data, (list, tuple)):
        if len(data) != m:
            raise ValueError(f"training data has {len(data)} components, the model expects {m}")
        xs = list(data)
    else:
        raise ValueError(f"training data must be a tensor (N, M, ...) or a list of M tensors, got {type(data).__name__}")
    for i, x in enumerate(xs):
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError(f"training data component {i} must be a tensor (N, ...), got {type(x).__name__}")
        if x.shape[0] != xs[0].shape[0]:
            raise ValueError(f"training data components disagree on N: {xs[0].shape[0]} and {x.shape[0]} (component {i})")
        if x.is_floating_point():
            check_finite(x, f"training data component {i}")
    probe = batch_transform([x[:probe_size].to(device) for x in xs])
    check_components(probe, component_dims, "training data after batch_transform")
    return xs


def _data_device(setting: str, device: torch.device, xs: list[torch.Tensor]) -> torch.device:
    """Where the data live during training (see ``TrainConfig.data_device``)."""
    if setting != "auto":
        data_device = torch.device(setting)
        if data_device.type != "cpu" and data_device != device:
            raise ValueError(f"data_device must be 'auto', 'cpu' or the training device {device}, got {setting!r}")
        return data_device
    if device.type != "cuda" or all(x.device == device for x in xs):
        return device
    nbytes = sum(x.numel() * x.element_size() for x in xs)
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= DATA_DEVICE_SHARE * free else torch.device("cpu")


def _gather(xs: list[torch.Tensor], idx: torch.Tensor, device: torch.device, staged: bool) -> list[torch.Tensor]:
    """Rows ``idx`` of every component on ``device``. ``staged``: the data are in CPU memory and
    the rows go through a pinned buffer, copied without blocking (the caching host allocator keeps
    the buffer until its copy has run)."""
    if not staged:
        return [x[idx] for x in xs]
    out = []
    for x in xs:
        buf = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, pin_memory=True)
        torch.index_select(x, 0, idx, out=buf)
        out.append(buf.to(device, non_blocking=True))
    return out


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError("TrainConfig(tensorboard=True) needs the tensorboard package: pip install tensorboard") from err
    return SummaryWriter


def _chain_diagnostics(model) -> dict:
    """The MCMC prior's ArviZ diagnostics at the end of an epoch (empty for other priors)."""
    prior = getattr(model, "prior", None)
    if not isinstance(prior, ChainDiagnostics):
        return {}
    diag = prior.diagnostics()
    return {field: diag[key] for field, key in CHAIN_FIELDS.items()}


class _RunLog:
    """``out_dir/log.csv``, rewritten from the run's history (so a crash between a log write and
    a checkpoint cannot leave duplicated or missing rows after a resume), and optionally
    TensorBoard scalars in ``out_dir/tensorboard``."""

    def __init__(self, out: Path, history: list, tensorboard: bool, resumed_step: int, chains: bool = False):
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / LOG_NAME, "w", newline="")
        self.fields = LOG_FIELDS + (list(CHAIN_FIELDS) if chains else [])
        self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(history)
        self.file.flush()
        self.board = None
        if tensorboard:
            # purge_step hides the events a crashed run logged after its last checkpoint.
            purge = resumed_step + 1 if resumed_step else None
            self.board = _summary_writer_class()(str(out / TENSORBOARD_DIR), purge_step=purge)

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.board is not None:
            for key in ("loss", "beta", "step_ms", "samples_per_s", *CHAIN_FIELDS):
                if key in row:
                    self.board.add_scalar(f"train/{key}", row[key], row["step"])
            self.board.flush()

    def close(self) -> None:
        self.file.close()
        if self.board is not None:
            self.board.close()


def fit(
    model,
    data,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    mask: torch.Tensor | None = None,
    batch_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
) -> TrainResult:
    """Train ``model`` (an :class:`~pyro_mcvae.MCVAE` or any module with ``.model``/``.guide``
    programs taking ``(xs, beta=...)``) with SVI.

    Args:
        data: ``(N, M, D)`` tensor or list of ``M`` tensors ``(N, D_k)``; with ``batch_transform``,
            a tensor ``(N, M, ...)`` or list of tensors ``(N, ...)`` of any dtype (e.g. ``uint8``
            images).
        mask: optional bool ``(N, M)``, False where a component is absent from a sample.
        out_dir: where ``log.csv`` and ``checkpoint.pt`` go; with ``resume`` an existing
            checkpoint there continues the same run (same numbers as an uninterrupted run).
            A ``KeyboardInterrupt`` writes a checkpoint at the last finished step first.
        batch_transform: applied to each minibatch (a list of ``M`` tensors) on the training
            device after indexing, e.g. ``lambda xs: [x.float() / 255 for x in xs]``; the data
            checks run on the transformed first batch.

    Data-parallel (``config.distributed``, launched with torchrun): every process calls ``fit``
    with the same data and arguments (and a model built after the same seed); each takes its slice
    of every global batch, only rank 0 writes the log and checkpoints, every rank can resume from
    them, and ``fit`` returns on every rank once rank 0's files are complete. The process group is
    initialised here when needed and left for later calls (destroy it at the end of the script).

    Clears Pyro's global parameter store: the model's parameters are registered anew.
    """
    config = config or TrainConfig()
    schedule = parse_beta_schedule(config.beta)
    amp_dtype = _amp_dtype(config.amp)
    if config.tensorboard:
        if out_dir is None:
            raise ValueError("TrainConfig(tensorboard=True) needs an out_dir to write to")
        _summary_writer_class()  # fail before training when the package is missing
    objective = build_objective(model, config)
    ctx = distributed.distributed_context(config.distributed, config.device)
    if ctx is not None:
        distributed.check_objective(objective)
    device = ctx.device if ctx is not None else _training_device(config.device)
    main = ctx is None or ctx.is_main

    xs = _components(data, model.component_dims, batch_transform, config.batch_size, device)
    n = xs[0].shape[0]
    mask = check_mask(mask, n, len(xs))
    if mask is not None and not bool(mask.any(-1).all()):
        raise ValueError("every sample needs at least one present component (a row of mask is all False)")
    data_device = _data_device(config.data_device, device, xs)
    staged = data_device.type == "cpu" and device.type == "cuda"
    xs = [x.to(data_device) for x in xs]
    mask = mask.to(device) if mask is not None else None
    model.to(device)

    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    seed_everything(config.seed)
    pyro.clear_param_store()
    batches = math.ceil(n / config.batch_size)
    optim_args = {"lr": config.lr}
    if config.lr_final is not None:
        # ClippedAdam multiplies the rate by lrd after every step.
        optim_args["lrd"] = (config.lr_final / config.lr) ** (1.0 / (config.epochs * batches))
    optim = pyro.optim.ClippedAdam({**optim_args, "clip_norm": config.clip_norm or float("inf")})
    model_fn, guide_fn = model.model, model.guide
    if amp_dtype is not None:
        model_fn, guide_fn = (_Autocast(f, device.type, amp_dtype) for f in (model_fn, guide_fn))
    shuffle = torch.Generator().manual_seed(config.seed)

    state = {"epoch": 0, "step": 0, "batch": 0, "perm": None, "loss_sum": 0.0, "count": 0}
    result = TrainResult(checkpoint=ckpt_path)
    ckpt = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        # On the CPU: generator states must stay there; load_state_dict copies to the device.
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {ckpt_path} was written by a different model (its parameters do not "
                f"match); use another out_dir or resume=False. Details: {err}"
            ) from None
        store = ckpt["param_store"]
        # Module parameters are already in the model; only bare pyro.param sites go back to the store.
        bare = {k: v for k, v in store["params"].items() if "$$$" not in k}
        if bare:
            pyro.get_param_store().set_state(
                {"params": {k: v.to(device) for k, v in bare.items()},
                 "constraints": {k: store["constraints"][k] for k in bare}}
            )
        optim.set_state(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_rng"])
        state = ckpt["loop"]
        result.history = ckpt["history"]

    own_slice = lambda idx: idx  # noqa: E731
    if ctx is None:
        svi = SVI(model_fn, guide_fn, optim, loss=objective.loss, loss_and_grads=objective.loss_and_grads)
        step_fn = lambda batch, beta, extra, size: svi.step(batch, beta=beta, **extra)  # noqa: E731
        if ckpt is not None:
            restore_rng_state(ckpt["rng"])
    else:
        find_unused = config.find_unused_parameters
        if find_unused is None:
            find_unused = any(schedule(step) == 0 for step in range(config.epochs * batches))
        ddp_step = distributed.DataParallelStep(model, objective, model_fn, guide_fn, optim, ctx, find_unused)
        step_fn = lambda batch, beta, extra, size: ddp_step(batch, beta, extra.get("mask"), size)  # noqa: E731
        own_slice = ddp_step.local_indices
        _seed_rank(ctx, config.seed, ckpt, state["step"])

    def checkpoint(collective: bool = True) -> None:
        if ckpt_path is None:
            return
        ranks_rng = None
        if ctx is not None and collective:
            ranks_rng = distributed.gather_objects(capture_rng_state())  # every rank takes part
        if not main:
            return
        save_checkpoint(
            {
                "format": "pyro_mcvae-1",
                "model": model.state_dict(),
                "param_store": pyro.get_param_store().get_state(),
                "optimizer": optim.get_state(),
                "rng": capture_rng_state(),
                "rng_ranks": ranks_rng,  # data-parallel: every rank's generators, for an exact resume
                "shuffle_rng": shuffle.get_state(),
                "loop": dict(state),
                "history": result.history,
                "config": asdict(config) | {"beta": str(config.beta), "amp": str(config.amp)},
                "world_size": 1 if ctx is None else ctx.world_size,
            },
            ckpt_path,
        )

    log = _RunLog(out, result.history, config.tensorboard, state["step"],
                  chains=isinstance(getattr(model, "prior", None), ChainDiagnostics)) if out is not None and main else None
    bar = tqdm(total=config.epochs * batches, initial=state["step"], disable=not (progress and main),
               desc="train", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        while state["epoch"] < config.epochs:
            if state["batch"] == 0:
                state["perm"] = torch.randperm(n, generator=shuffle)
                state["loss_sum"], state["count"] = 0.0, 0
            perm = state["perm"]
            perm_device = perm.to(device)
            epoch_started, epoch_steps, epoch_samples = time.perf_counter(), 0, 0
            while state["batch"] < batches:
                rows = slice(state["batch"] * config.batch_size, (state["batch"] + 1) * config.batch_size)
                idx = perm_device[rows]  # the global batch
                local = own_slice(idx)  # this rank's part of it
                beta = schedule(state["step"])
                try:
                    with pyro.validation_enabled(config.validate):
                        # Staged data are indexed on the CPU (no device-to-host copy of indices).
                        batch = _gather(xs, own_slice(perm[rows]) if staged else local, device, staged)
                        if batch_transform is not None:
                            batch = batch_transform(batch)
                        extra = {} if mask is None else {"mask": mask[local]}
                        loss = step_fn(batch, beta, extra, len(idx))
                except ValueError as err:
                    # With validation on, NaN parameters surface as a distribution's ValueError.
                    if all(torch.isfinite(p).all() for p in model.parameters()):
                        raise
                    raise _diverged("nan (parameters became NaN or infinite)", state, ckpt_path) from err
                if not math.isfinite(loss):
                    raise _diverged(loss, state, ckpt_path)
                state["loss_sum"] += loss
                state["count"] += len(idx)
                state["step"] += 1
                state["batch"] += 1
                epoch_steps += 1
                epoch_samples += len(idx)
                bar.update(1)
                if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                    checkpoint()
            seconds = time.perf_counter() - epoch_started
            row = {
                "epoch": state["epoch"] + 1,
                "step": state["step"],
                "loss": state["loss_sum"] / max(state["count"], 1),
                "beta": schedule(state["step"] - 1),
                "seconds": time.perf_counter() - started,
                # This call's share of the epoch (a resumed epoch counts from the resume).
                "step_ms": 1e3 * seconds / max(epoch_steps, 1),
                "samples_per_s": epoch_samples / seconds if seconds > 0 else float("nan"),
            }
            chains = _chain_diagnostics(model)
            row |= chains
            result.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", beta=f"{row['beta']:.3g}",
                            **({"rhat": f"{chains['chain_max_rhat']:.2f}"} if chains else {}))
            state["epoch"] += 1
            state["batch"] = 0
            if log is not None:
                log.write(row)
            checkpoint()
    except KeyboardInterrupt:
        # Other ranks may not be interrupted at the same point: no collective here; ranks > 0
        # then draw fresh noise on resume (see _seed_rank).
        checkpoint(collective=False)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    if ctx is not None:
        # Every rank returns once rank 0's files are complete: a rank that went on to read the
        # checkpoint (a resumed fit) would otherwise find the previous one, mid-replacement.
        distributed.barrier(ctx)
    result.steps = state["step"]
    return result


def _seed_rank(ctx, seed: int, ckpt: dict | None, step: int) -> None:
    """The random generators of one rank of a data-parallel run: rank 0's continue the
    single-process stream; other ranks draw their own latent noise (see ``rank_seed``). A resumed
    run restores every rank's generators when the checkpoint holds them (written at a regular
    checkpoint by the same number of ranks), else ranks > 0 are seeded anew from ``(seed, rank, step)``."""
    if ckpt is None:
        if ctx.rank > 0:
            seed_everything(distributed.rank_seed(seed, ctx.rank))
        return
    ranks = ckpt.get("rng_ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        restore_rng_state(ranks[ctx.rank])
    elif ctx.rank == 0:
        restore_rng_state(ckpt["rng"])
    else:
        seed_everything(distributed.rank_seed(seed, ctx.rank, step))
