"""Data-parallel training with ``torch.distributed``: the process group and the DDP step of ``fit``.

Launch one process per device with ``torchrun`` (or ``python -m torch.distributed.run``), which
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``::

    torchrun --nproc_per_node=2 train.py          # the script calls fit(...) as usual

:func:`~pyro_mcvae.infer.fit` initialises the default process group from these variables when it
finds them (``TrainConfig.distributed="auto"``); :func:`init_distributed` does the same by hand.

Why the step looks the way it does. Pyro's ``SVI`` calls the model and guide directly, so
``DistributedDataParallel``'s hooks would never see a forward pass. Here the ELBO's differentiable
loss is the ``forward`` of a small module (:class:`ELBOLoss`) wrapped in DDP; its backward pass
averages the gradients over the ranks, and the optimiser is the one of the single-process path
(``ClippedAdam``'s update, fused or Pyro's per-parameter one, :func:`~.trainer.build_optimizer`),
so its learning-rate decay, clipping and checkpoint format are the same in both modes.

Loss scaling. Pyro's ELBO is a sum over the batch, not a mean. With the global batch ``B`` split
into rank slices ``B_r`` (sizes may differ), the single-process gradient is
``g = sum_r grad sum_{n in B_r} l_n``, while DDP returns the average ``(1/R) sum_r grad L_r``. So
each rank's loss is ``L_r = R * sum_{n in B_r} l_n`` (:func:`loss_scale`), whatever the slice
sizes: the averaged gradient is exactly ``g``. This holds for every term that is a sum over data;
a term computed once per batch (not per datum) would be counted ``R`` times.

Randomness. The shuffling generator is seeded alike on every rank, so all ranks cut the same
global batches; rank 0 then draws the single-process run's latent noise and rank ``r > 0`` its own
(:func:`rank_seed`). Regular checkpoints hold every rank's generator states, so a resumed run gives
the numbers of an uninterrupted one; after a ``KeyboardInterrupt`` (no collective is possible
then) ranks ``r > 0`` are seeded anew.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from pyro import poutine
from torch import nn

__all__ = [
    "DistributedContext",
    "ELBOLoss",
    "DataParallelStep",
    "any_rank",
    "distributed_context",
    "init_distributed",
    "loss_scale",
    "rank_seed",
]

DISTRIBUTED_MODES = ("auto", "on", "off")
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the default process group and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs and checkpoints."""
        return self.rank == 0


def _local_rank(rank: int) -> int:
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return rank % count if count else 0


def _rank_device(device: str | torch.device, local_rank: int) -> torch.device:
    """``"cuda"`` without an index means this process's GPU, ``cuda:LOCAL_RANK``."""
    from pyro_mcvae.infer.trainer import resolve_device

    device = resolve_device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str | torch.device = "cpu", backend: str | None = None) -> DistributedContext:
    """Initialise the default process group from torchrun's environment variables (if it is not
    initialised yet) and return this process's :class:`DistributedContext`.

    ``backend`` defaults to ``"nccl"`` for a CUDA ``device`` and ``"gloo"`` otherwise; with CUDA the
    process's current device becomes ``cuda:LOCAL_RANK``. Call
    ``torch.distributed.destroy_process_group()`` at the end of the script.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise ValueError(
                f"distributed training needs the environment torchrun sets; missing {missing}. "
                "Launch with `torchrun --nproc_per_node=N script.py` (or `python -m "
                "torch.distributed.run ...`), or initialise torch.distributed yourself."
            )
        rank = int(os.environ["RANK"])
        dev = _rank_device(device, _local_rank(rank))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    local = _local_rank(rank)
    dev = _rank_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    elif dist.get_backend() == "nccl":
        raise ValueError("the process group uses the NCCL backend, which needs device='cuda'; "
                         f"got device={str(device)!r} (use the gloo backend on CPU)")
    return DistributedContext(rank, world, local, dev)


def distributed_context(mode: str, device: str | torch.device) -> DistributedContext | None:
    """The context of a data-parallel run, or ``None`` for a single-process one.

    ``mode``: ``"auto"`` (data-parallel when the default process group is initialised or the
    environment has ``WORLD_SIZE > 1``), ``"on"`` (always; a world of one process is allowed) or
    ``"off"``.
    """
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    if mode == "off":
        return None
    initialised = dist.is_available() and dist.is_initialized()
    if mode == "auto" and not initialised and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return init_distributed(device)


def loss_scale(world_size: int) -> float:
    """Factor on each rank's summed loss so that DDP's averaged gradient equals the gradient of
    the global batch's summed loss (see the module docstring)."""
    return float(world_size)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of rank ``rank``'s own random draws (latent noise): distinct per rank and step,
    reproducible; rank 0 keeps ``seed`` itself at step 0, so a world of one process draws what a
    single-process run draws."""
    if rank == 0 and step == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, rank, step]).generate_state(1)[0])


def _inner_objectives(objective):
    """The objective and those it wraps (MVAE's ``SubsetELBO`` keeps the original as ``.elbo``)."""
    while objective is not None:
        yield objective
        objective = getattr(objective, "elbo", None)


def check_objective(objective) -> None:
    """Raise if ``objective`` cannot train through DDP (it needs a differentiable loss whose
    gradient is the objective's gradient)."""
    if any(getattr(o, "dreg", False) for o in _inner_objectives(objective)):
        raise ValueError(
            "elbo='dreg' cannot train data-parallel: its gradient comes from a surrogate built inside "
            "loss_and_grads (a gradient hook on every latent), and DDP needs a loss tensor to call "
            "backward on. Use elbo='iwae' (the same bound with the plain gradient), or train in one process."
        )
    if not callable(getattr(objective, "differentiable_loss", None)):
        raise ValueError(
            f"the training objective {type(objective).__name__} has no differentiable_loss(model, guide, "
            "*args, **kwargs) method, which data-parallel training calls inside DDP's forward; add one "
            "(its gradient must equal the one loss_and_grads computes) or train in one process."
        )


class ELBOLoss(nn.Module):
    """``forward(xs, beta, mask)``: the objective's differentiable loss of the batch ``xs`` times
    ``scale``, so that DDP sees a forward pass. ``model_fn``/``guide_fn`` are the programs to run
    (the model's own, or wrapped in autocast); ``model`` is held as a submodule so DDP finds its
    parameters."""

    def __init__(self, model: nn.Module, objective, model_fn, guide_fn, scale: float = 1.0):
        super().__init__()
        self.model = model
        self.objective, self.model_fn, self.guide_fn, self.scale = objective, model_fn, guide_fn, scale

    def forward(self, xs, beta: float, mask: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
        extra = {} if mask is None else {"mask": mask}
        loss = self.objective.differentiable_loss(self.model_fn, self.guide_fn, xs, beta=beta, **extra)
        return (self.scale * weight) * loss


def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool = True) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (which broadcasts rank 0's parameters now).

    Buffers are not broadcast at every step: the models' buffers are constants, except Monte
    Carlo state such as the NN-MRF prior's persistent chains, which each rank runs on its own.
    """
    ddp = nn.parallel.DistributedDataParallel
    # Recent PyTorch (2.15) deprecates broadcast_buffers for forward_sync_buffers.
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters, **no_sync)


class DataParallelStep:
    """One data-parallel SVI step: this rank's slice of the global batch through DDP, backward
    (DDP averages the gradients), then the optimiser of the single-process path.

    ``__call__(xs, beta, mask, batch_size)`` takes this rank's slice (see :meth:`local_indices`) of
    a global batch of ``batch_size`` and returns the loss of the whole global batch (summed over
    the ranks), the number ``SVI.step`` returns.
    """

    def __init__(self, model: nn.Module, objective, model_fn, guide_fn, optim, context: DistributedContext,
                 find_unused_parameters: bool = True):
        check_objective(objective)
        self.context, self.optim = context, optim
        self.world_size = context.world_size
        self.loss_module = ELBOLoss(model, objective, model_fn, guide_fn, loss_scale(self.world_size))
        self.ddp = wrap_ddp(self.loss_module, context.device, find_unused_parameters)
        self._model_params = {id(p) for p in model.parameters()}  # checked at the first step

    def local_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of the global batch's indices (sizes differ by at most 1).

        A global batch smaller than the world (a short last batch) leaves some ranks without
        data; they take the batch's first index and weigh its loss by zero, since every rank must
        run the forward and backward passes DDP synchronises."""
        own = idx.tensor_split(self.world_size)[self.context.rank]
        return own if len(own) else idx[:1]

    def __call__(self, xs, beta: float, mask: torch.Tensor | None, batch_size: int) -> float:
        weight = 1.0 if self.context.rank < batch_size else 0.0  # see local_indices
        with poutine.trace(param_only=True) as capture:
            try:
                loss = self.ddp(xs, beta, mask, weight)
            except RuntimeError as err:
                if "find_unused_parameters" not in str(err):
                    raise
                raise RuntimeError(
                    "some model parameters got no gradient in the previous step; train with "
                    "TrainConfig(find_unused_parameters=True) (DDP's own message follows)\n" + str(err)
                ) from None
        params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        if self._model_params is not None:
            stray = [name for name, site in capture.trace.nodes.items()
                     if id(site["value"].unconstrained()) not in self._model_params]
            if stray:
                raise ValueError(
                    f"Pyro parameters {stray} are not parameters of the model module, and DDP only "
                    "synchronises module parameters; make them nn.Parameters of a submodule that the "
                    "model registers with pyro.module."
                )
            self._model_params = None
        loss.backward()
        self.optim(params)
        for p in params:
            p.grad = None
        total = loss.detach() / self.loss_module.scale  # this slice's summed loss (0: no slice)
        dist.all_reduce(total)  # summed over the ranks: the global batch's loss, as SVI.step returns
        return total.item()


def barrier(context: DistributedContext) -> None:
    """Wait until every rank gets here."""
    dist.barrier(device_ids=[context.device.index] if context.device.type == "cuda" else None)


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """Whether ``flag`` is true on any rank (a collective: every rank must call it); the
    trainer's stop requests, so that all ranks leave the loop at the same step."""
    value = torch.tensor([int(bool(flag))], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
