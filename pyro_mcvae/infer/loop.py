"""The training loop every trainer of the package shares: epochs of shuffled minibatches, the
callbacks' events, stop requests, and the loop's part of a checkpoint.

:class:`TrainingLoop` knows nothing of what a step does; :class:`~.trainer.Trainer` (SVI, the
models) and :class:`SupervisedTrainer` (a plain loss and a torch optimiser: the digit classifiers,
the key-point regressors) fill that in, so both use the same callbacks (:mod:`.callbacks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .callbacks import Checkpoint, StepInfo
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import capture_rng_state, restore_rng_state

__all__ = ["TrainResult", "TrainingLoop", "SupervisedTrainer"]


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per epoch, as in the CSV log
    steps: int = 0
    checkpoint: Path | None = None
    stop_reason: str | None = None  # why a callback ended the run early (None: it did not)

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history]


class TrainingLoop:
    """Runs ``epochs`` epochs of ``ceil(num_samples / batch_size)`` steps over a fresh
    permutation per epoch (drawn from a generator seeded with ``seed``), firing the callbacks'
    events (:class:`~.callbacks.Callback`) in the order of their ``order`` attribute.

    Subclasses define what a step is (:meth:`_step`) and may extend :meth:`_prepare`,
    :meth:`_start`, :meth:`_begin_epoch`, :meth:`_epoch_columns`, :meth:`_agree`, :meth:`_finish`
    and the checkpoint state (:meth:`state_dict`, :meth:`load_state_dict`).

    An epoch's row: ``epoch``, ``step``, ``loss`` (the epoch's mean loss per sample), the
    subclass's columns, ``seconds`` (since this call started), ``step_ms`` and ``samples_per_s``
    (this call's share of the epoch: a resumed epoch counts from the resume), then whatever the
    callbacks add.
    """

    log_fields = ("epoch", "step", "loss", "seconds", "step_ms", "samples_per_s")
    is_main = True  # the process that writes files (see Trainer for data-parallel runs)

    def __init__(self, model, num_samples: int, epochs: int, batch_size: int, seed: int = 0,
                 callbacks: Sequence = ()):
        for name, value in (("num_samples", num_samples), ("epochs", epochs), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.model, self.num_samples, self.epochs, self.batch_size = model, int(num_samples), int(epochs), int(batch_size)
        self.seed = seed
        self.batches = math.ceil(self.num_samples / self.batch_size)
        self.callbacks = sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))
        self.state, self.history, self.error, self.stop_reason = None, [], None, None

    # -- for callbacks ---------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested by a callback") -> None:
        """End the run at the next step boundary (the first reason given is kept). A request made
        at a step's end stops before the next step, without a row for the unfinished epoch; one
        made at an epoch's end stops after that epoch."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def callback(self, cls):
        """The first callback of type ``cls``, or ``None``."""
        return next((cb for cb in self.callbacks if isinstance(cb, cls)), None)

    def state_dict(self, collective: bool = True) -> dict:
        """The loop's part of a checkpoint (subclasses add the model and optimiser); in a
        data-parallel run, ``collective`` says every process takes part in this call."""
        return {
            "format": CHECKPOINT_FORMAT,
            "rng": capture_rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
            "loop": dict(self.state),
            "history": self.history,
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks()},
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        """Continue the run ``state`` describes (called by a callback's ``setup``). The random
        state is put back by :meth:`_start`, once nothing else will draw from it."""
        self.shuffle.set_state(state["shuffle_rng"])
        self.state = state["loop"]
        self.history = state["history"]
        saved = state.get("callbacks") or {}  # absent from checkpoints older than the callbacks
        for key, cb in self._keyed_callbacks():
            if saved.get(key) is not None:
                cb.load_state_dict(saved[key])
        self._resumed = state

    def _keyed_callbacks(self):
        """``(key, callback)``: the class name, numbered from the second of a kind."""
        seen: dict = {}
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}#{seen[name]}"), cb

    # -- what subclasses fill in -------------------------------------------------------------------
    def _prepare(self) -> None:
        """Before the callbacks' ``setup``: seed, build the optimiser."""

    def _start(self) -> None:
        """After ``setup`` (the run may have been restored): the random state for the loop."""
        if self._resumed is not None:
            restore_rng_state(self._resumed["rng"])

    def _begin_epoch(self, perm: torch.Tensor) -> None:
        """An epoch over ``perm`` begins or resumes."""

    def _step(self, rows: slice) -> tuple[float, int, dict]:
        """One step on the samples ``self.state["perm"][rows]``: ``(loss summed over the batch,
        batch size, other StepInfo fields)``."""
        raise NotImplementedError

    def _epoch_columns(self) -> dict:
        """Columns of the epoch's row after ``loss``."""
        return {}

    def _agree(self, flag: bool) -> bool:
        """``flag`` agreed among the processes of a data-parallel run (true if any has it)."""
        return flag

    def _finish(self) -> None:
        """After a run that ended without an error."""

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train; returns the history (also of the restored epochs) and the step count."""
        self.shuffle = torch.Generator().manual_seed(self.seed)
        self.state = {"epoch": 0, "step": 0, "batch": 0, "perm": None, "loss_sum": 0.0, "count": 0}
        self.history, self.error, self.stop_reason, self._resumed = [], None, None, None
        self._prepare()
        self._fire("setup")
        self._start()
        try:
            self._fire("on_train_start")
            self._loop()
        except BaseException as err:
            self.error = err
            raise
        finally:
            self._end()
        self._finish()
        ckpt = self.callback(Checkpoint)
        return TrainResult(self.history, self.state["step"], ckpt.path if ckpt is not None else None, self.stop_reason)

    def _fire(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def _end(self) -> None:
        """``on_train_end`` on every callback even if one fails (they close files)."""
        failure = None
        for cb in self.callbacks:
            try:
                cb.on_train_end(self)
            except Exception as err:  # noqa: BLE001 - re-raised below
                failure = failure or err
        if failure is not None and self.error is None:
            raise failure

    def _stopping(self) -> bool:
        if self._agree(self.stop_reason is not None):
            self.stop_reason = self.stop_reason or "stop requested by another process"
            return True
        return False

    def _loop(self) -> None:
        state = self.state
        started = time.perf_counter()
        while state["epoch"] < self.epochs and not self._stopping():
            if state["batch"] == 0:
                state["perm"] = torch.randperm(self.num_samples, generator=self.shuffle)
                state["loss_sum"], state["count"] = 0.0, 0
            self._fire("on_epoch_start", state["epoch"] + 1)
            self._begin_epoch(state["perm"])
            epoch_started, epoch_steps, epoch_samples = time.perf_counter(), 0, 0
            while state["batch"] < self.batches:
                if self._stopping():
                    return
                rows = slice(state["batch"] * self.batch_size, (state["batch"] + 1) * self.batch_size)
                loss, size, extra = self._step(rows)
                state["loss_sum"] += loss
                state["count"] += size
                state["step"] += 1
                state["batch"] += 1
                epoch_steps += 1
                epoch_samples += size
                self._fire("on_step_end", StepInfo(state["step"], state["epoch"] + 1, state["batch"], loss, size, **extra))
            seconds = time.perf_counter() - epoch_started
            row = {
                "epoch": state["epoch"] + 1,
                "step": state["step"],
                "loss": state["loss_sum"] / max(state["count"], 1),
                **self._epoch_columns(),
                "seconds": time.perf_counter() - started,
                "step_ms": 1e3 * seconds / max(epoch_steps, 1),
                "samples_per_s": epoch_samples / seconds if seconds > 0 else float("nan"),
            }
            state["epoch"] += 1
            state["batch"] = 0
            self.history.append(row)
            self._fire("on_epoch_end", row)


class SupervisedTrainer(TrainingLoop):
    """Minibatch training of ``model`` on a plain loss with a torch ``optimizer``.

    ``data``: tensors ``(N, ...)`` (inputs, targets, ...), indexed on their own device and moved to
    ``device`` (``None``: left where they are); ``loss_fn(model, batch) -> scalar tensor``, the
    batch's mean loss (a list like ``data``); each step zeroes the gradients, back-propagates and
    steps the optimiser. The epoch's ``loss`` column is the mean over its samples.

    It sets no seed and draws only from the global generators (initialisation, dropout) and the
    shuffling generator seeded with ``seed``: wrap it in ``torch.random.fork_rng`` to leave the
    caller's random state alone.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, data: Sequence[torch.Tensor], optimizer,
                 epochs: int, batch_size: int, seed: int = 0, device=None, callbacks: Sequence = ()):
        data = list(data)
        if not data or any(len(x) != len(data[0]) for x in data):
            raise ValueError(f"data must be tensors with the same N, got {[tuple(x.shape) for x in data]}")
        self.loss_fn, self.data, self.optimizer = loss_fn, data, optimizer
        self.device = torch.device(device) if device is not None else None
        super().__init__(model, len(data[0]), epochs, batch_size, seed, callbacks)

    def _prepare(self) -> None:
        self.model.train()

    def _step(self, rows: slice) -> tuple[float, int, dict]:
        idx = self.state["perm"][rows]
        batch = [x[idx.to(x.device)] for x in self.data]
        if self.device is not None:
            batch = [b.to(self.device) for b in batch]
        loss = self.loss_fn(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()) * len(idx), len(idx), {}

    def state_dict(self, collective: bool = True) -> dict:
        return super().state_dict(collective) | {"model": self.model.state_dict(),
                                                 "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        super().load_state_dict(state, source)
