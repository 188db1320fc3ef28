"""The SVI trainer of the models: one loop for every model, single-process or data-parallel.

:class:`Trainer` is the loop of :class:`~.loop.TrainingLoop` with an SVI step: it checks and
places the data (compact data with a ``batch_transform``, kept on the GPU or staged batch by batch
from pinned CPU memory), seeds the run, builds the objective (:func:`~.config.build_objective`),
the optimiser (``ClippedAdam``'s update: gradient clipping and the learning-rate decay, by
default in one fused step over all parameters, :mod:`.optim`), bf16 autocast and,
under torchrun, the data-parallel step (:mod:`.distributed`). Everything else -- logs,
checkpoints and resuming, progress, chain diagnostics, evaluation, stopping -- is a callback
(:mod:`.callbacks`); :func:`~pyro_mcvae.infer.train.fit` builds it with the usual ones.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import pyro
import torch
from pyro.infer import SVI

from ..models.base import MCVAE
from ..nets.compiled import compile_networks
from ..validation import check_components, check_domains, check_finite, check_mask, module_dtype
from . import distributed
from .checkpoint import RunConflictError, capture_rng_state, model_differences, model_settings, restore_rng_state
from .config import TrainConfig, amp_dtype, build_objective, seed_everything, settings_record, train_differences
from .loop import TrainingLoop
from .optim import FusedClippedAdam, svi_step
from .objectives.base import StratifiedGuide
from .schedules import parse_beta_schedule

__all__ = ["Trainer", "LOG_FIELDS", "build_optimizer", "resolve_device", "run_differences"]

LOG_FIELDS = ["epoch", "step", "loss", "beta", "seconds", "step_ms", "samples_per_s"]
# The data stay on a GPU when they take at most this share of its free memory ("auto").
DATA_DEVICE_SHARE = 0.5


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


class _StratifiedAutocast(_Autocast):
    """:class:`_Autocast` of a :class:`StratifiedGuide`. The method is declared, not only passed
    through ``__getattr__``: from Python 3.12 a runtime protocol check looks attributes up
    statically, so the pass-through alone would hide the strata from the objectives."""

    def stratum_weights(self, mask, batch: int, device=None, dtype=None) -> torch.Tensor:
        return self.fn.stratum_weights(mask, batch, device, dtype)


def _autocast(fn, device_type: str, dtype: torch.dtype) -> _Autocast:
    """``fn`` run under ``torch.autocast``, keeping the protocols the objectives check."""
    cls = _StratifiedAutocast if isinstance(fn, StratifiedGuide) else _Autocast
    return cls(fn, device_type, dtype)


def resolve_device(name) -> torch.device:
    """The device named ``name`` (``"auto"``: CUDA when available, else the CPU); a clear error
    when CUDA is named but not available. The one place the library resolves a device name."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} requested but CUDA is not available here "
                         "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
    return device


def _components(data, component_dims: Sequence[int], batch_transform, probe_size: int, device, dtype):
    """The training data as a list of ``M`` tensors ``(N, ...)``, checked.

    Without ``batch_transform`` the data must be what the model takes (floating point, finite,
    ``(N, D_k)``; tensors or NumPy arrays, converted to the model's ``dtype``). With it, the raw tensors may be of any dtype and shape ``(N, ...)``; the first
    ``probe_size`` rows are transformed on ``device`` and checked instead (floating-point raw data
    are also checked for NaN and infinite values in full).
    """
    if batch_transform is None:
        return check_components(data, component_dims, "training data", dtype=dtype)
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
    check_components(probe, component_dims, "training data after batch_transform", dtype=dtype)
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


class Trainer(TrainingLoop):
    """SVI training of ``model`` (an :class:`~pyro_mcvae.MCVAE` or any module with
    ``.model``/``.guide`` programs taking ``(xs, beta=..., mask=...)`` and ``component_dims``).

    Args:
        data, mask, batch_transform: as in :func:`~pyro_mcvae.infer.train.fit`; checked here.
        config: the run's :class:`~.config.TrainConfig` (epochs, batch size, optimiser, beta
            schedule, precision, devices, data-parallel mode); its logging and checkpoint
            settings are read by :func:`~pyro_mcvae.infer.train.fit`, which builds the callbacks.
        callbacks: :class:`~.callbacks.Callback` objects (none: no log, no checkpoint, no NaN
            stop; see :func:`~pyro_mcvae.infer.train.default_callbacks`).

    :meth:`fit` trains (it can be called again: each call is a fresh run, or a resumed one with
    a :class:`~.callbacks.Checkpoint`) and returns a :class:`~.loop.TrainResult`. It clears
    Pyro's global parameter store: the model's parameters are registered anew.

    Data-parallel (launched with torchrun): every process builds a Trainer with the same data and
    arguments (and a model built after the same seed); each takes its slice of every global batch,
    only rank 0 writes files (callbacks check ``trainer.is_main``), stop requests are agreed among
    the ranks at every step, and :meth:`fit` returns on every rank once rank 0's files are
    complete.
    """

    log_fields = LOG_FIELDS

    def __init__(self, model, data, config: TrainConfig | None = None, callbacks: Sequence = (),
                 mask: torch.Tensor | None = None,
                 batch_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None):
        config = self.config = config or TrainConfig()
        self.schedule = parse_beta_schedule(config.beta)
        self.amp_dtype = amp_dtype(config.amp)
        self.objective = build_objective(model, config)
        self.context = distributed.distributed_context(config.distributed, config.device)
        if self.context is not None:
            distributed.check_objective(self.objective)
        device = self.device = self.context.device if self.context is not None else resolve_device(config.device)

        dtype, _ = module_dtype(model)  # the data are converted to it (e.g. float64 NumPy arrays)
        xs = _components(data, model.component_dims, batch_transform, config.batch_size, device, dtype)
        n = xs[0].shape[0]
        mask = check_mask(mask, n, len(xs))
        if mask is not None and not bool(mask.any(-1).all()):
            raise ValueError("every sample needs at least one present component (a row of mask is all False)")
        if batch_transform is None and isinstance(model, MCVAE):
            check_domains(xs, [lik.domain for lik in model.likelihoods], "training data", mask)
        data_device = _data_device(config.data_device, device, xs)
        self.staged = data_device.type == "cpu" and device.type == "cuda"
        self.xs = [x.to(data_device) for x in xs]
        self.mask = mask.to(device) if mask is not None else None
        self.batch_transform = batch_transform
        model.to(device)
        self.compiled = compile_networks(model, config.compile, device)  # the networks' names
        super().__init__(model, n, config.epochs, config.batch_size, config.seed, callbacks)
        # What rebuilds the model (method, config, sizes): computed once, it also refuses early a
        # config that could not be saved.
        self._model_settings = model_settings(model)

    @property
    def is_main(self) -> bool:
        return self.context is None or self.context.is_main

    # -- the run's objects and state ---------------------------------------------------------------
    def _prepare(self) -> None:
        config = self.config
        seed_everything(config.seed)
        pyro.clear_param_store()
        self.optim = build_optimizer(config, config.epochs * self.batches)
        self.model_fn, self.guide_fn = self.model.model, self.model.guide
        if self.amp_dtype is not None:
            self.model_fn, self.guide_fn = (_autocast(f, self.device.type, self.amp_dtype)
                                            for f in (self.model_fn, self.guide_fn))

    def state_dict(self, collective: bool = True) -> dict:
        ctx, config = self.context, self.config
        ranks_rng = None
        if ctx is not None and collective:
            ranks_rng = distributed.gather_objects(capture_rng_state())  # every rank takes part
        return super().state_dict(collective) | self._model_settings | {
            "model": self.model.state_dict(),
            "param_store": pyro.get_param_store().get_state(),
            "optimizer": self.optim.get_state(),
            "rng_ranks": ranks_rng,  # data-parallel: every rank's generators, for an exact resume
            "config": settings_record(config),
            "world_size": 1 if ctx is None else ctx.world_size,
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        differences = run_differences(state, self.model, self.config, self.num_samples)
        if differences:
            raise RunConflictError(f"{source} holds a run of {differences}. Resume or reuse it with the settings it "
                                   "was trained with, or train into another out_dir (nothing was changed)")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"{source} was written by a different model (its parameters do not "
                f"match); train into another out_dir. Details: {err}"
            ) from None
        store = state["param_store"]
        # Module parameters are already in the model; only bare pyro.param sites go back to the store.
        bare = {k: v for k, v in store["params"].items() if "$$$" not in k}
        if bare:
            pyro.get_param_store().set_state(
                {"params": {k: v.to(self.device) for k, v in bare.items()},
                 "constraints": {k: store["constraints"][k] for k in bare}}
            )
        self.optim.set_state(state["optimizer"])
        super().load_state_dict(state, source)

    def _start(self) -> None:
        """The step function (SVI or data-parallel), then the random state of the loop."""
        ctx, config = self.context, self.config
        self._own_slice = lambda idx: idx  # data-parallel: this rank's part of a global batch
        if ctx is None:
            if isinstance(self.optim, FusedClippedAdam):
                step = partial(svi_step, self.model_fn, self.guide_fn, self.objective, self.optim)
            else:
                step = SVI(self.model_fn, self.guide_fn, self.optim, loss=self.objective.loss,
                           loss_and_grads=self.objective.loss_and_grads).step
            self._step_fn = lambda batch, beta, extra, size: step(batch, beta=beta, **extra)
            super()._start()
            return
        find_unused = config.find_unused_parameters
        if find_unused is None:
            find_unused = any(self.schedule(step) == 0 for step in range(config.epochs * self.batches))
        ddp_step = distributed.DataParallelStep(self.model, self.objective, self.model_fn, self.guide_fn,
                                                self.optim, ctx, find_unused)
        self._step_fn = lambda batch, beta, extra, size: ddp_step(batch, beta, extra.get("mask"), size)
        self._own_slice = ddp_step.local_indices
        _seed_rank(ctx, config.seed, self._resumed, self.state["step"])

    # -- the loop's parts --------------------------------------------------------------------------
    def _begin_epoch(self, perm: torch.Tensor) -> None:
        self._perm_device = perm.to(self.device)

    def _step(self, rows: slice) -> tuple[float, int, dict]:
        idx = self._perm_device[rows]  # the global batch
        local = self._own_slice(idx)  # this rank's part of it
        beta = self.schedule(self.state["step"])
        try:
            with pyro.validation_enabled(self.config.validate):
                # Staged data are indexed on the CPU (no device-to-host copy of indices).
                batch = _gather(self.xs, self._own_slice(self.state["perm"][rows]) if self.staged else local,
                                self.device, self.staged)
                if self.batch_transform is not None:
                    batch = self.batch_transform(batch)
                extra = {} if self.mask is None else {"mask": self.mask[local]}
                loss = self._step_fn(batch, beta, extra, len(idx))
        except ValueError as err:
            # With validation on, NaN parameters surface as a distribution's ValueError: a
            # diverged step (StopOnNaN reports it), not a bug to re-raise.
            if all(torch.isfinite(p).all() for p in self.model.parameters()):
                raise
            return float("nan"), len(idx), {"beta": beta, "error": err}
        return loss, len(idx), {"beta": beta}

    def _epoch_columns(self) -> dict:
        return {"beta": self.schedule(self.state["step"] - 1)}

    def _agree(self, flag: bool) -> bool:
        return flag if self.context is None else distributed.any_rank(flag, self.context)

    def _finish(self) -> None:
        if self.context is not None:
            # Every rank returns once rank 0's files are complete: a rank that went on to read the
            # checkpoint (a resumed fit) would otherwise find the previous one, mid-replacement.
            distributed.barrier(self.context)


def build_optimizer(config: TrainConfig, total_steps: int):
    """The optimiser of a run of ``total_steps`` steps under ``config``: ClippedAdam's update with
    ``config.lr`` (``prior_lr`` for the module ``"prior"``), decayed to ``lr_final`` by the last
    step, gradient entries clamped to ``clip_norm``; :class:`~.optim.FusedClippedAdam` or Pyro's
    per-parameter ``ClippedAdam`` (``config.optimizer``)."""
    args = {"lr": config.lr, "clip_norm": config.clip_norm or float("inf")}
    if config.lr_final is not None:
        # ClippedAdam multiplies the rate by lrd before every step.
        args["lrd"] = (config.lr_final / config.lr) ** (1.0 / total_steps)
    prior_lr = config.prior_lr
    if config.optimizer == "fused":
        # The prior's own rate: the model registers its prior as the module "prior".
        rate = None if prior_lr is None else (lambda module, param: prior_lr if module == "prior" else config.lr)
        return FusedClippedAdam(rate=rate, **args)
    if prior_lr is None:
        return pyro.optim.ClippedAdam(args)
    # Pyro passes (module name, parameter name).
    prior_args = {**args, "lr": prior_lr}
    return pyro.optim.ClippedAdam(lambda module, param: prior_args if module == "prior" else args)


def run_differences(state: dict, model, config: TrainConfig, num_samples: int | None = None) -> str:
    """How a run of ``model`` under ``config`` on ``num_samples`` training samples differs from
    the run a checkpoint's ``state`` holds (``""``: it does not): the model's settings
    (:func:`~.checkpoint.model_differences`), the training settings that change the numbers
    (:func:`~.config.train_differences`) and the number of training samples."""
    model_diff = model_differences(state, model)
    train = train_differences(state.get("config", {}), config, getattr(model, "default_objective", "meanfield"))
    perm = (state.get("loop") or {}).get("perm")
    if num_samples is not None and perm is not None and len(perm) != num_samples:
        train.append(f"training samples: {len(perm)} in the checkpoint, {num_samples} here")
    parts = ([f"a different model ({'; '.join(model_diff)})"] if model_diff else []) + (
        [f"other training settings ({'; '.join(train)})"] if train else [])
    return " and ".join(parts)


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
