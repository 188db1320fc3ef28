"""Callbacks of the training loops: logs, checkpoints, progress, MCMC chain health, periodic
evaluation and stopping rules.

A callback overrides any of the hooks of :class:`Callback`. The loop (:class:`~.loop.TrainingLoop`,
i.e. :class:`~.trainer.Trainer` or :class:`~.loop.SupervisedTrainer`) calls each hook on every
callback in the order of their ``order`` attribute; the sort is stable, so callbacks of equal
``order`` keep the order they were given in. The orders used here:

- ``-100`` :class:`StopOnNaN`: first at the end of a step, so that no other callback acts on a
  diverged step (a checkpoint of NaN parameters, say);
- ``-10`` producers (:class:`ChainDiagnostics`, :class:`PeriodicEvaluation`): add columns to the
  epoch's row;
- ``0`` the default: :class:`EarlyStopping` and user callbacks, which see the producers' columns;
- ``10`` writers (:class:`CSVLogger`, :class:`TensorBoard`, :class:`ProgressBar`): record the row
  as the callbacks before them left it;
- ``100`` :class:`Checkpoint`: last, so that a checkpoint holds what every other callback did.

What a callback may use of the loop (``trainer``): ``model``, ``state`` (``epoch``: epochs
finished, ``batch``: steps finished in the current epoch, ``step``: steps finished in the run),
``history`` (one row per finished epoch), ``epochs``,
``batches`` (per epoch), ``is_main`` (the process that writes files; always true outside
data-parallel runs), ``error`` (the exception leaving the loop, in ``on_train_end``),
``log_fields`` (the row's base columns), ``request_stop(reason)``, ``callback(cls)``,
``state_dict(collective)`` and ``load_state_dict(state, source)``.
"""

from __future__ import annotations

import csv
import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import atomic_netcdf, atomic_write_csv, read_number_csv
from ..models.base import MCMCPrior
from .checkpoint import RunConflictError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint

__all__ = [
    "Callback",
    "StepInfo",
    "TrainingDivergedError",
    "StopOnNaN",
    "ChainDiagnostics",
    "ChainSnapshots",
    "PeriodicEvaluation",
    "LearningCurve",
    "EarlyStopping",
    "TimeBudget",
    "StepBudget",
    "CSVLogger",
    "TensorBoard",
    "ProgressBar",
    "Checkpoint",
    "CHAIN_FIELDS",
    "chain_columns",
    "saved_checkpoint",
]

# Log columns of the MCMC prior's diagnostics that have carried these names since before the
# prior reported more keys; every other numeric key becomes ``chain_<key>``.
CHAIN_FIELDS = {"chain_max_rhat": "max_rhat", "chain_min_ess_bulk": "min_ess_bulk",
                "chain_min_ess_tail": "min_ess_tail", "chain_divergences": "divergences",
                "chain_acceptance": "acceptance_rate"}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class StepInfo:
    """One finished optimisation step, as ``on_step_end`` sees it.

    ``step``: steps done in the run, this one included; ``epoch``: the epoch it belongs to
    (1-based); ``batch``: its place in the epoch (1-based); ``loss``: the loss the step returned,
    summed over its ``size`` samples (for SVI, the global batch's negative ELBO); ``beta``: the KL
    weight it used (SVI only); ``error``: the exception of a step that failed because the
    parameters became NaN or infinite (its ``loss`` is then NaN); ``metrics``: values callbacks
    computed at this step (periodic evaluation), for the loggers after them.
    """

    step: int
    epoch: int
    batch: int
    loss: float
    size: int
    beta: float | None = None
    error: BaseException | None = None
    metrics: dict = field(default_factory=dict)


class Callback:
    """Base class of the loop's callbacks: every hook does nothing (see the module docstring)."""

    order = 0

    def setup(self, trainer) -> None:
        """First, before ``on_train_start``: the loop has built its optimiser and seeded the run,
        and will set its random state for the loop right after. The place to restore a run
        (:class:`Checkpoint` does)."""

    def on_train_start(self, trainer) -> None:
        """The run (fresh or restored) is about to take its first step."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Epoch ``epoch`` (1-based) begins, or resumes part-way through after a restore."""

    def on_step_end(self, trainer, step: StepInfo) -> None:
        """A step is done; the loop's ``state`` already counts it."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        """An epoch is done; ``row`` (already in ``trainer.history``) is its log row: add columns
        to it here."""

    def on_train_end(self, trainer) -> None:
        """The loop is left: all epochs done, a stop requested, or ``trainer.error`` raised.
        Called in every case (close files here)."""

    def state_dict(self) -> dict | None:
        """What a resumed run needs to continue this callback exactly (``None``: nothing);
        :class:`Checkpoint` saves it with the run."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def _number(value):
    """``value`` as a plain number for a log (bools as 0/1), or ``None`` if it is not numeric."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Real):
        return value
    return None


# -- stopping ----------------------------------------------------------------------------------
class StopOnNaN(Callback):
    """Raise :class:`TrainingDivergedError` at the first step whose loss is NaN or infinite (or
    whose parameters became so); the last checkpoint written before it is left as it was."""

    order = -100

    def on_step_end(self, trainer, step: StepInfo) -> None:
        if step.error is None and math.isfinite(step.loss):
            return
        loss = "nan (parameters became NaN or infinite)" if step.error is not None else step.loss
        ckpt = trainer.callback(Checkpoint)
        raise TrainingDivergedError(
            f"loss became {loss} at step {step.step - 1} (epoch {step.epoch}); "
            + (f"the last good checkpoint is kept at {ckpt.path}. " if ckpt is not None else "")
            + "Try a smaller learning rate, gradient clipping or a beta warm-up."
        ) from step.error


class EarlyStopping(Callback):
    """Stop when the epoch rows' ``monitor`` column has not improved for ``patience`` epochs.

    ``monitor``: a column of the epoch's row, ``"loss"`` (the training loss) by default or e.g.
    an evaluation column ``"eval_<key>"`` of :class:`PeriodicEvaluation`; epochs whose row lacks it
    (evaluation not due) are skipped. ``mode``: ``"min"`` or ``"max"``; an improvement must beat
    the best value so far by more than ``min_delta``; NaN never improves. The run stops after the
    epoch that makes ``patience`` epochs in a row without improvement (its checkpoint is written
    as usual); ``best``, ``best_epoch`` and ``wait`` are saved with checkpoints, so a resumed run
    stops where the uninterrupted one would.
    """

    def __init__(self, monitor: str = "loss", patience: int = 5, min_delta: float = 0.0, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, float(min_delta), mode
        self.best, self.best_epoch, self.wait = None, None, 0

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer, row: dict) -> None:
        if row.get(self.monitor) is None:
            return
        value = float(row[self.monitor])
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, row["epoch"], 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.request_stop(
                f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} for "
                f"{self.patience} epochs (best {self.best} at epoch {self.best_epoch})"
            )

    def on_train_end(self, trainer) -> None:
        if trainer.error is None and trainer.history and not any(self.monitor in r for r in trainer.history):
            warnings.warn(f"EarlyStopping: no epoch row had a {self.monitor!r} column "
                          f"(columns: {sorted(trainer.history[-1])}); it never stopped the run", stacklevel=2)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


class _Stopwatch:
    """Wall time of a run summed over its processes: ``spent_before`` (restored from a
    checkpoint) plus the time since :meth:`start` in this process."""

    def __init__(self):
        self.spent_before, self.started = 0.0, None

    def start(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        if self.started is None:
            return self.spent_before
        return self.spent_before + time.perf_counter() - self.started

    def restore(self, spent: float) -> None:
        self.spent_before, self.started = float(spent), None


class TimeBudget(Callback):
    """Stop once the run has trained for ``seconds`` of wall time in all: periodic evaluations
    included, summed over resumed processes (the time spent is saved with checkpoints, so a
    resumed run gets only what is left, and one resumed after its budget stops at once). The stop
    comes at the first step boundary past the budget; ``progress`` shows a bar in seconds with
    the time left.

    A wall-clock budget depends on the machine: the steps reached are in the log and the result
    (``TrainResult.steps``), and ``TrainConfig(epochs=...)`` with that many steps reproduces the
    run exactly.
    """

    def __init__(self, seconds: float, progress: bool = True, desc: str = "train (time budget)"):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        self.seconds, self.progress, self.desc = float(seconds), progress, desc
        self.clock, self.bar = _Stopwatch(), None

    def spent(self) -> float:
        """Seconds trained so far, this process and the resumed ones before it."""
        return self.clock.seconds()

    def on_train_start(self, trainer) -> None:
        self.clock.start()
        self.bar = tqdm(total=round(self.seconds), initial=min(round(self.clock.spent_before), round(self.seconds)),
                        disable=not (self.progress and trainer.is_main), desc=self.desc, unit="s",
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
                        dynamic_ncols=True)
        self._check(trainer)

    def _check(self, trainer) -> None:
        spent = self.spent()
        if spent >= self.seconds:
            trainer.request_stop(f"time budget of {self.seconds:g} s reached ({spent:.0f} s, "
                                 f"{trainer.state['step']} steps)")

    def on_step_end(self, trainer, step: StepInfo) -> None:
        self._check(trainer)
        if self.bar is not None and not self.bar.disable:
            self.bar.n = min(self.spent(), self.seconds)
            self.bar.set_postfix(step=step.step, loss=f"{step.loss / max(step.size, 1):.4g}", refresh=True)

    def on_train_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def state_dict(self) -> dict:
        return {"spent": self.spent()}

    def load_state_dict(self, state: dict) -> None:
        self.clock.restore(state["spent"])


class StepBudget(Callback):
    """Stop after ``steps`` optimiser steps in all (resumed processes included: the step count is
    the trainer's own), at the step boundary, even inside an epoch. Unlike :class:`TimeBudget`,
    what the run learns does not depend on the machine's speed; ``progress`` shows a bar in steps
    with the estimated time left."""

    def __init__(self, steps: int, progress: bool = True, desc: str = "train"):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.steps, self.progress, self.desc, self.bar = steps, progress, desc, None

    def on_train_start(self, trainer) -> None:
        done = int(trainer.state["step"])
        self.bar = tqdm(total=self.steps, initial=min(done, self.steps), disable=not (self.progress and trainer.is_main),
                        desc=self.desc, unit="step", dynamic_ncols=True)
        self._check(trainer)

    def _check(self, trainer) -> None:
        if trainer.state["step"] >= self.steps:
            trainer.request_stop(f"step budget of {self.steps} steps reached")

    def on_step_end(self, trainer, step: StepInfo) -> None:
        self._check(trainer)
        if self.bar is not None and not self.bar.disable:
            self.bar.n = min(step.step, self.steps)
            self.bar.set_postfix(loss=f"{step.loss / max(step.size, 1):.4g}", refresh=True)

    def on_train_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- columns of the epoch's row ---------------------------------------------------------------
def chain_columns(prior) -> dict:
    """The log columns of ``prior.diagnostics()`` (an MCMC prior's chains; empty for a prior
    without it): :data:`CHAIN_FIELDS` for the keys named there, ``chain_<key>`` for every other
    numeric key; text values (warnings) are left out."""
    if not isinstance(prior, MCMCPrior):
        return {}
    diag = prior.diagnostics()
    named = {key: column for column, key in CHAIN_FIELDS.items()}
    out = {column: _number(diag[key]) for column, key in CHAIN_FIELDS.items() if key in diag}
    out |= {f"chain_{key}": _number(value) for key, value in diag.items() if key not in named}
    return {column: value for column, value in out.items() if value is not None}


class ChainDiagnostics(Callback):
    """Adds the model's MCMC prior diagnostics (``model.prior.diagnostics()``, e.g. the NN-MRF
    prior's persistent chains) to every epoch's row as ``chain_*`` columns (see
    :func:`chain_columns`); does nothing for other priors."""

    order = -10

    def on_epoch_end(self, trainer, row: dict) -> None:
        row.update(chain_columns(getattr(trainer.model, "prior", None)))


class ChainSnapshots(Callback):
    """Every ``every_epochs`` epochs, saves the MCMC prior's chains (``model.prior.inference_data()``,
    ArviZ ``InferenceData``) as ``<directory>/chains_epoch<EEEE>.nc`` (netCDF, written atomically),
    readable with ``arviz.from_netcdf`` alone. Does nothing for a prior without chains."""

    def __init__(self, directory, every_epochs: int):
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
        self.directory, self.every = Path(directory), int(every_epochs)

    def on_epoch_end(self, trainer, row: dict) -> None:
        prior = getattr(trainer.model, "prior", None)
        if row["epoch"] % self.every or not isinstance(prior, MCMCPrior):
            return
        atomic_netcdf(prior.inference_data(), self.directory / f"chains_epoch{row['epoch']:04d}.nc")


class PeriodicEvaluation(Callback):
    """Calls ``fn(model, epoch) -> {name: number}`` every ``every_epochs`` epochs (at the epoch's
    end) and/or every ``every_steps`` steps (``epoch``: the epoch in progress, 1-based); the results
    become columns ``prefix + name`` of the epoch's row, hence of ``log.csv``, TensorBoard and
    :class:`EarlyStopping`. A row holds the epoch-end results when they are due, else those of the
    epoch's last step evaluation (none: empty cells); step results also go to TensorBoard at
    their step.

    ``fn`` runs in eval mode (``model.eval()``, restored afterwards) under ``torch.no_grad()``
    (use ``torch.enable_grad()`` inside if it needs gradients), and on a copy of the random state:
    whatever it draws, training continues with the numbers it would have had without it. In a
    data-parallel run it runs on every process.
    """

    order = -10

    def __init__(self, fn: Callable, every_epochs: int = 1, every_steps: int = 0, prefix: str = "eval_"):
        for name, value in (("every_epochs", every_epochs), ("every_steps", every_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (every_epochs or every_steps):
            raise ValueError("PeriodicEvaluation needs every_epochs or every_steps > 0")
        self.fn, self.every_epochs, self.every_steps, self.prefix = fn, every_epochs, every_steps, prefix
        self._latest, self._latest_step = {}, None  # the last step evaluation of this epoch

    def evaluate(self, model, epoch: int) -> dict:
        """``fn(model, epoch)`` as columns, in eval mode and with the random state left as it was."""
        rng = capture_rng_state()
        was_training = getattr(model, "training", None)
        if was_training is not None:
            model.eval()
        try:
            with torch.no_grad():
                results = self.fn(model, epoch)
        finally:
            if was_training is not None:
                model.train(was_training)
            restore_rng_state(rng)
        if not isinstance(results, Mapping):
            raise ValueError(f"the evaluation function must return a dict of numbers, got {type(results).__name__}")
        columns = {}
        for key, value in results.items():
            number = _number(value)
            if not isinstance(key, str) or number is None:
                raise ValueError(f"the evaluation function returned {key!r}: {value!r}; expected str keys and numbers")
            columns[self.prefix + key] = float(number)
        return columns

    def on_step_end(self, trainer, step: StepInfo) -> None:
        if self.every_steps and step.step % self.every_steps == 0:
            self._latest, self._latest_step = self.evaluate(trainer.model, step.epoch), step.step
            step.metrics.update(self._latest)

    def on_epoch_end(self, trainer, row: dict) -> None:
        results = self._latest
        due = self.every_epochs and row["epoch"] % self.every_epochs == 0
        if due and self._latest_step != row["step"]:  # not just evaluated at this very step
            results = self.evaluate(trainer.model, row["epoch"])
        row.update(results)
        self._latest, self._latest_step = {}, None

    def state_dict(self) -> dict:
        return {"latest": dict(self._latest), "latest_step": self._latest_step}

    def load_state_dict(self, state: dict) -> None:
        self._latest, self._latest_step = dict(state["latest"]), state["latest_step"]


class LearningCurve(PeriodicEvaluation):
    """A :class:`PeriodicEvaluation` every ``every_steps`` steps (and once before the first step)
    that also keeps every evaluation as a row of the CSV file ``path``: ``step``, ``seconds``
    (wall time trained so far, evaluations included, summed over resumed processes) and the
    columns. A resumed run keeps the rows up to its checkpoint's step, so the file matches an
    uninterrupted run's steps. :func:`pyro_mcvae.plots.learning_curve_figure` draws it."""

    def __init__(self, fn: Callable, path, every_steps: int, prefix: str = "eval_"):
        if isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(f"every_steps must be a positive integer, got {every_steps!r}")
        super().__init__(fn, every_epochs=0, every_steps=every_steps, prefix=prefix)
        self.path = Path(path)
        self.rows, self.clock = [], _Stopwatch()

    def seconds(self) -> float:
        """Wall time trained so far, evaluations included, summed over resumed processes."""
        return self.clock.seconds()

    def _record(self, trainer, step: int, columns: dict) -> None:
        self.rows.append({"step": step, "seconds": round(self.seconds(), 2), **columns})
        if trainer.is_main:
            atomic_write_csv(self.rows, self.path)

    def on_train_start(self, trainer) -> None:
        self.clock.start()
        step = trainer.state["step"]
        earlier = [row | {"step": int(row["step"])} for row in read_number_csv(self.path)] if step else []
        self.rows = [row for row in earlier if row["step"] <= step]
        if step == 0:
            self._record(trainer, 0, self.evaluate(trainer.model, 1))

    def on_step_end(self, trainer, step: StepInfo) -> None:
        super().on_step_end(trainer, step)
        if step.step % self.every_steps == 0:
            self._record(trainer, step.step, self._latest)

    def state_dict(self) -> dict:
        return super().state_dict() | {"spent": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.clock.restore(state.get("spent", 0.0))


# -- writers ------------------------------------------------------------------------------------
class CSVLogger(Callback):
    """One row per epoch in the CSV file ``path``, rewritten from the run's history at the start
    (so a crash between a log write and a checkpoint cannot leave duplicated or missing rows
    after a resume). Columns: ``fields`` (default: the loop's ``log_fields``), then every other
    column of the rows in order of appearance; a row with a new column (the first evaluation,
    say) rewrites the file with the wider header. Written by the main process only."""

    order = 10

    def __init__(self, path, fields=None):
        self.path, self.fields = Path(path), fields
        self.file = self.writer = None

    def _widen(self, rows) -> bool:
        new = [key for row in rows for key in row if key not in self.columns]
        self.columns.extend(dict.fromkeys(new))
        return bool(new)

    def _rewrite(self, rows) -> None:
        if self.file is not None:
            self.file.close()
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()

    def on_train_start(self, trainer) -> None:
        if not trainer.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = list(self.fields if self.fields is not None else trainer.log_fields)
        self._widen(trainer.history)
        self._rewrite(trainer.history)

    def on_epoch_end(self, trainer, row: dict) -> None:
        if self.file is None:
            return
        if self._widen([row]):
            self._rewrite(trainer.history)  # the history already holds this row
            return
        self.writer.writerow(row)
        self.file.flush()

    def on_train_end(self, trainer) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def summary_writer_class():
    """TensorBoard's ``SummaryWriter``, or an ``ImportError`` saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError("TensorBoard logging (TrainConfig(tensorboard=True)) needs the tensorboard package: "
                          "pip install tensorboard") from err
    return SummaryWriter


class TensorBoard(Callback):
    """Every numeric column of the epoch rows but ``epoch``, ``step`` and ``seconds`` as scalars
    ``train/<column>`` at the row's step, and the step evaluations at their step, in ``log_dir``.
    A resumed run hides the events a crashed run logged after its last checkpoint (``purge_step``).
    Fails when constructed if the ``tensorboard`` package is missing, i.e. before training."""

    order = 10
    skip = ("epoch", "step", "seconds")

    def __init__(self, log_dir):
        self.log_dir, self.writer_class, self.board = Path(log_dir), summary_writer_class(), None

    def on_train_start(self, trainer) -> None:
        if trainer.is_main:
            step = trainer.state["step"]
            self.board = self.writer_class(str(self.log_dir), purge_step=step + 1 if step else None)

    def on_step_end(self, trainer, step: StepInfo) -> None:
        if self.board is not None and step.metrics:
            for key, value in step.metrics.items():
                self.board.add_scalar(f"train/{key}", value, step.step)

    def on_epoch_end(self, trainer, row: dict) -> None:
        if self.board is None:
            return
        for key, value in row.items():
            if key not in self.skip and _number(value) is not None:
                self.board.add_scalar(f"train/{key}", value, row["step"])
        self.board.flush()

    def on_train_end(self, trainer) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None


def _default_postfix(row: dict) -> dict:
    out = {"loss": f"{row['loss']:.4f}"}
    if "beta" in row:
        out["beta"] = f"{row['beta']:.3g}"
    if "chain_max_rhat" in row:
        out["rhat"] = f"{row['chain_max_rhat']:.2f}"
    return out


class ProgressBar(Callback):
    """A tqdm bar over the run's steps (with its rate and ETA), shown by the main process when
    ``enabled``; at each epoch's end it shows ``postfix(row)`` (default: loss, beta and the
    chains' worst R-hat when the row has them)."""

    order = 10

    def __init__(self, enabled: bool = True, desc: str = "train", unit: str = "step",
                 postfix: Callable[[dict], dict] | None = None):
        self.enabled, self.desc, self.unit = enabled, desc, unit
        self.postfix, self.bar = postfix or _default_postfix, None

    def on_train_start(self, trainer) -> None:
        self.bar = tqdm(total=trainer.epochs * trainer.batches, initial=trainer.state["step"],
                        disable=not (self.enabled and trainer.is_main), desc=self.desc, unit=self.unit,
                        dynamic_ncols=True)

    def on_step_end(self, trainer, step: StepInfo) -> None:
        self.bar.update(1)

    def on_epoch_end(self, trainer, row: dict) -> None:
        self.bar.set_postfix(**self.postfix(row))

    def on_train_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpoint(Callback):
    """The run's state (``trainer.state_dict()``: parameters, optimiser, random generators, loop
    position, history and the callbacks' states) in ``path``, written atomically
    (:func:`~.checkpoint.save_checkpoint`) by the main process: at every epoch's end, every
    ``every_steps`` steps (0: never mid-epoch), when a stop request ends the run mid-epoch, and
    at a ``KeyboardInterrupt`` (at the last finished step). Never after any other error: the last
    good checkpoint stays.

    A run has one identity. If ``path`` exists, with ``resume`` the run continues from it (in
    :meth:`setup`), with the numbers an uninterrupted run would have had (a finished run is
    reused as it is), and a run of other settings is refused (the trainer's
    ``load_state_dict`` names them); without ``resume`` it is refused. Both refusals
    (:class:`~.checkpoint.RunConflictError`) come before anything is written. ``overwrite``:
    discard an existing checkpoint and start afresh, the one way to replace a run.
    """

    order = 100

    def __init__(self, path, every_steps: int = 0, resume: bool = True, overwrite: bool = False):
        self.path, self.every_steps, self.resume, self.overwrite = Path(path), int(every_steps), resume, overwrite
        self._saved_step = None

    def setup(self, trainer) -> None:
        if self.path.exists():
            if self.overwrite:
                if trainer.is_main:
                    self.path.unlink()
            elif not self.resume:
                raise RunConflictError(f"{self.path} already holds a training run; fit(..., resume=False) does not "
                                       "replace it. Resume or reuse it (resume=True, with the settings it was "
                                       "trained with), or train into another out_dir (nothing was changed)")
            else:
                # On the CPU: generator states must stay there; load_state_dict copies to the device.
                trainer.load_state_dict(load_checkpoint(self.path, map_location="cpu"),
                                        source=f"checkpoint {self.path}")
        self._saved_step = trainer.state["step"]

    def save(self, trainer, collective: bool = True) -> None:
        """Write the checkpoint now. In a data-parallel run every process must call it (it
        gathers their random states) unless ``collective`` is false."""
        state = trainer.state_dict(collective=collective)
        if trainer.is_main:
            save_checkpoint(state, self.path)
        self._saved_step = trainer.state["step"]

    def on_step_end(self, trainer, step: StepInfo) -> None:
        if self.every_steps and step.step % self.every_steps == 0:
            self.save(trainer)

    def on_epoch_end(self, trainer, row: dict) -> None:
        self.save(trainer)

    def on_train_end(self, trainer) -> None:
        if isinstance(trainer.error, KeyboardInterrupt):
            # Other ranks may not be interrupted at the same point: no collective here; ranks > 0
            # then draw fresh noise on resume.
            self.save(trainer, collective=False)
            trainer.error.pyro_mcvae_checkpoint = self.path  # read by saved_checkpoint
        elif trainer.error is None and trainer.state["step"] != self._saved_step:
            self.save(trainer)  # a stop request ended the run mid-epoch


def saved_checkpoint(err: BaseException) -> Path | None:
    """The checkpoint a :class:`Checkpoint` callback wrote when ``err`` (a ``KeyboardInterrupt``)
    stopped its run, or ``None``: what the command line tells the user after Ctrl-C."""
    return getattr(err, "pyro_mcvae_checkpoint", None)
