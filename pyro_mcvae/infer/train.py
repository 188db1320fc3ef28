"""One SVI training loop for every model: seeds, beta schedules, CSV log, resumable checkpoints."""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from .._validation import check_components, check_mask
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .iwae import ImportanceWeightedELBO
from .schedules import parse_beta_schedule

__all__ = ["TrainConfig", "TrainResult", "TrainingDivergedError", "fit", "seed_everything", "make_elbo"]

ELBOS = ("trace", "meanfield", "iwae", "dreg")
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
LOG_FIELDS = ["epoch", "step", "loss", "beta", "seconds"]


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


@dataclass
class TrainConfig:
    """Settings of one run.

    ``beta`` is a number or a schedule string (``"linear:2000"``, ``"cyclical:1000"``, see
    :func:`parse_beta_schedule`); ``checkpoint_every`` counts steps (0: at epoch ends only).
    ``validate`` turns on Pyro's distribution-argument checks in every step; the data are
    checked once before training either way, and the matrices are SPD by construction.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float | None = None  # decays the rate geometrically to this value by the last step
    elbo: str = "meanfield"  # or "trace", "iwae", "dreg" (see make_elbo)
    num_particles: int = 1  # Monte Carlo particles, or K importance samples for "iwae"/"dreg"
    beta: object = 1.0
    seed: int = 0
    device: str = "cpu"
    clip_norm: float | None = 10.0
    checkpoint_every: int = 0
    validate: bool = False  # Pyro's per-step argument checks (~0.6 ms, ~5% of a copula step)

    def __post_init__(self):
        if self.elbo not in ELBOS:
            raise ValueError(f"elbo must be one of {ELBOS}, got {self.elbo!r}")
        for name in ("epochs", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_final is not None and not 0 < self.lr_final <= self.lr:
            raise ValueError(f"lr_final must lie in (0, lr], got {self.lr_final}")
        parse_beta_schedule(self.beta)


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per epoch, as in the CSV log
    steps: int = 0
    checkpoint: Path | None = None

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history]


def make_elbo(kind: str, num_particles: int = 1):
    """The objective called ``kind``: ``"trace"`` (``Trace_ELBO``, Monte Carlo KL), ``"meanfield"``
    (``TraceMeanField_ELBO``, analytic KL where known), ``"iwae"`` (importance-weighted bound with
    ``num_particles`` samples) or ``"dreg"`` (the same bound with the DReG gradient)."""
    if kind not in ELBOS:
        raise ValueError(f"elbo must be one of {ELBOS}, got {kind!r}")
    if kind in ("iwae", "dreg"):
        return ImportanceWeightedELBO(num_particles, dreg=kind == "dreg")
    cls = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[kind]
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1)


def _to_device(xs: list[torch.Tensor], device) -> list[torch.Tensor]:
    return [x.to(device) for x in xs]


def fit(
    model,
    data,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    mask: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` (an :class:`~pyro_mcvae.MCVAE` or any module with ``.model``/``.guide``
    programs taking ``(xs, beta=...)``) with SVI.

    Args:
        data: ``(N, M, D)`` tensor or list of ``M`` tensors ``(N, D_k)``.
        mask: optional bool ``(N, M)``, False where a component is absent from a sample.
        out_dir: where ``log.csv`` and ``checkpoint.pt`` go; with ``resume`` an existing
            checkpoint there continues the same run (same numbers as an uninterrupted run).
            A ``KeyboardInterrupt`` writes a checkpoint at the last finished step first.

    Clears Pyro's global parameter store: the model's parameters are registered anew.
    """
    config = config or TrainConfig()
    schedule = parse_beta_schedule(config.beta)
    xs = check_components(data, model.component_dims, "training data")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    n = xs[0].shape[0]
    mask = check_mask(mask, n, len(xs))
    if mask is not None and not bool(mask.any(-1).all()):
        raise ValueError("every sample needs at least one present component (a row of mask is all False)")
    xs = _to_device(xs, device)
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
    objective = make_elbo(config.elbo, config.num_particles)
    if hasattr(model.guide, "wrap_elbo"):  # a guide whose method has its own objective (MVAE)
        objective = model.guide.wrap_elbo(objective)
    svi = SVI(model.model, model.guide, optim, loss=objective.loss,
              loss_and_grads=objective.loss_and_grads)
    shuffle = torch.Generator().manual_seed(config.seed)

    state = {"epoch": 0, "step": 0, "batch": 0, "perm": None, "loss_sum": 0.0, "count": 0}
    result = TrainResult(checkpoint=ckpt_path)
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
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
                {"params": bare, "constraints": {k: store["constraints"][k] for k in bare}}
            )
        optim.set_state(ckpt["optimizer"])
        restore_rng_state(ckpt["rng"])
        shuffle.set_state(ckpt["shuffle_rng"])
        state = ckpt["loop"]
        result.history = ckpt["history"]

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        save_checkpoint(
            {
                "format": "pyro_mcvae-1",
                "model": model.state_dict(),
                "param_store": pyro.get_param_store().get_state(),
                "optimizer": optim.get_state(),
                "rng": capture_rng_state(),
                "shuffle_rng": shuffle.get_state(),
                "loop": dict(state),
                "history": result.history,
                "config": asdict(config) | {"beta": str(config.beta)},
            },
            ckpt_path,
        )

    log_file = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # Rewritten from the checkpoint's history, so a crash between the two writes cannot
        # leave duplicated or missing rows after a resume.
        log_file = open(out / LOG_NAME, "w", newline="")
        writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(result.history)
        log_file.flush()

    bar = tqdm(total=config.epochs * batches, initial=state["step"], disable=not progress,
               desc="train", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        while state["epoch"] < config.epochs:
            if state["batch"] == 0:
                state["perm"] = torch.randperm(n, generator=shuffle)
                state["loss_sum"], state["count"] = 0.0, 0
            perm = state["perm"]
            while state["batch"] < batches:
                idx = perm[state["batch"] * config.batch_size : (state["batch"] + 1) * config.batch_size]
                idx = idx.to(device)
                beta = schedule(state["step"])
                try:
                    with pyro.validation_enabled(config.validate):
                        extra = {} if mask is None else {"mask": mask[idx]}
                        loss = svi.step([x[idx] for x in xs], beta=beta, **extra)
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
                bar.update(1)
                if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                    checkpoint()
            row = {
                "epoch": state["epoch"] + 1,
                "step": state["step"],
                "loss": state["loss_sum"] / max(state["count"], 1),
                "beta": schedule(state["step"] - 1),
                "seconds": time.perf_counter() - started,
            }
            result.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", beta=f"{row['beta']:.3g}")
            state["epoch"] += 1
            state["batch"] = 0
            if log_file is not None:
                writer.writerow(row)
                log_file.flush()
            checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    result.steps = state["step"]
    return result
