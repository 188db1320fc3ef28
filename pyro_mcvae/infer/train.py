"""One SVI training call for every model: :func:`fit`, the :class:`~.trainer.Trainer` with the
usual callbacks (CSV log, resumable checkpoints, progress bar, MCMC chain diagnostics, NaN stop,
TensorBoard).

Also for image-sized data: compact (e.g. ``uint8``) data with a ``batch_transform``, data kept on
the GPU or staged batch by batch from pinned CPU memory, bf16 autocast, TensorBoard, and
data-parallel training over several processes (see :mod:`pyro_mcvae.infer.distributed`).

The settings, objective and seeding live in :mod:`.config`, the loop in :mod:`.loop` and
:mod:`.trainer`, the callbacks in :mod:`.callbacks`; their names are re-exported here, where
earlier code imports them from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from .callbacks import CHAIN_FIELDS, summary_writer_class  # noqa: F401 - re-exported
from .callbacks import ChainDiagnostics, Checkpoint, CSVLogger, ProgressBar, StopOnNaN, TensorBoard, TrainingDivergedError
from .checkpoint import CHECKPOINT_NAME
from .config import AMP_DTYPES  # noqa: F401 - re-exported
from .config import TrainConfig, build_objective, seed_everything
from .loop import TrainResult
from .trainer import DATA_DEVICE_SHARE, LOG_FIELDS  # noqa: F401 - re-exported
from .trainer import Trainer

__all__ = ["TrainConfig", "TrainResult", "TrainingDivergedError", "fit", "seed_everything",
           "build_objective", "default_callbacks"]
LOG_NAME = "log.csv"
TENSORBOARD_DIR = "tensorboard"


def default_callbacks(config: TrainConfig, out_dir: str | Path | None = None, resume: bool = True,
                      progress: bool = True, overwrite: bool = False) -> list:
    """The callbacks :func:`fit` trains with: NaN stop, MCMC chain diagnostics and the progress
    bar; with ``out_dir``, ``log.csv`` and ``checkpoint.pt`` there (every
    ``config.checkpoint_every`` steps and at epoch ends; ``resume`` and ``overwrite`` as in
    :class:`~.callbacks.Checkpoint`), and ``tensorboard/`` when ``config.tensorboard``."""
    callbacks = [StopOnNaN(), ChainDiagnostics(), ProgressBar(progress)]
    if config.tensorboard and out_dir is None:
        raise ValueError("TrainConfig(tensorboard=True) needs an out_dir to write to")
    if out_dir is not None:
        out = Path(out_dir)
        callbacks += [CSVLogger(out / LOG_NAME),
                      Checkpoint(out / CHECKPOINT_NAME, every_steps=config.checkpoint_every, resume=resume,
                                 overwrite=overwrite)]
        if config.tensorboard:
            callbacks.append(TensorBoard(out / TENSORBOARD_DIR))  # fails now if tensorboard is missing
    return callbacks


def fit(
    model,
    data,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    mask: torch.Tensor | None = None,
    batch_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
    callbacks: Sequence = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train ``model`` (an :class:`~pyro_mcvae.MCVAE` or any module with ``.model``/``.guide``
    programs taking ``(xs, beta=...)``) with SVI.

    Args:
        data: ``(N, M, D)`` tensor or list of ``M`` tensors ``(N, D_k)``; with ``batch_transform``,
            a tensor ``(N, M, ...)`` or list of tensors ``(N, ...)`` of any dtype (e.g. ``uint8``
            images).
        mask: optional bool ``(N, M)``, False where a component is absent from a sample.
        out_dir: where ``log.csv`` and ``checkpoint.pt`` go. The checkpoint records the model's
            settings (method, config, component sizes) and the training settings beside the
            weights: :func:`~pyro_mcvae.load_model` rebuilds the model from it alone. A
            ``KeyboardInterrupt`` writes a checkpoint at the last finished step first.
        resume: an existing checkpoint in ``out_dir`` continues the same run (the numbers of an
            uninterrupted run; a finished run returns at once). A run directory has one identity:
            a checkpoint of another model or other training settings (``lr``, ``beta``, ``seed``,
            ...; not the device or logging options) is refused with the settings that differ, and
            so is any existing checkpoint when ``resume=False``. Nothing is changed by a refusal.
        overwrite: discard an existing run in ``out_dir`` and train afresh (the one way to
            replace a run).
        batch_transform: applied to each minibatch (a list of ``M`` tensors) on the training
            device after indexing, e.g. ``lambda xs: [x.float() / 255 for x in xs]``; the data
            checks run on the transformed first batch.
        callbacks: more :class:`~pyro_mcvae.infer.callbacks.Callback` objects, run with the
            default ones (:func:`default_callbacks`), e.g. ``PeriodicEvaluation`` and
            ``EarlyStopping``.

    Data-parallel (``config.distributed``, launched with torchrun): every process calls ``fit``
    with the same data and arguments (and a model built after the same seed); each takes its slice
    of every global batch, only rank 0 writes the log and checkpoints, every rank can resume from
    them, and ``fit`` returns on every rank once rank 0's files are complete. The process group is
    initialised here when needed and left for later calls (destroy it at the end of the script).

    Clears Pyro's global parameter store: the model's parameters are registered anew.
    """
    config = config or TrainConfig()
    everything = [*default_callbacks(config, out_dir, resume, progress, overwrite), *callbacks]
    return Trainer(model, data, config, everything, mask=mask, batch_transform=batch_transform).fit()
