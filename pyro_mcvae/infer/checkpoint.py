"""Checkpoints written atomically, holding everything a resumed run needs, and the model they
hold: one save/load story for every model built through the registry.

A checkpoint (``fit(..., out_dir=RUN)`` writes ``RUN/checkpoint.pt``; :func:`save_model` a file
of weights alone) records the method's name, its whole config, the component sizes and the
library version beside the weights (``"model_record"``, :func:`~pyro_mcvae.models.model_record`),
so :func:`load_model` rebuilds the model from the file alone, and loading or resuming into a
model of other settings is refused with the settings that differ (:func:`load_weights`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._io import atomic_torch_save, read_torch_file
from ..models.records import build_from_record, model_record, record_differences

__all__ = ["CHECKPOINT_NAME", "RunConflictError", "capture_rng_state", "checkpoint_file", "load_checkpoint",
           "load_model", "load_weights", "model_differences", "model_settings", "restore_rng_state", "save_checkpoint",
           "save_model"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "pyro_mcvae-1"


class RunConflictError(ValueError):
    """A checkpoint holds a model or a run of other settings than those asked for, or a run that
    the call would replace; nothing was changed."""


def capture_rng_state() -> dict:
    """The state of every random generator the training run draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it over ``path``, so an
    interruption leaves either the old or the new checkpoint, never a torn one."""
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint; a missing or unreadable file raises ``ValueError`` saying which."""
    path = Path(path)
    state = read_torch_file(path, ValueError(f"no checkpoint at {path}"),
                            f"checkpoint {path} is corrupt or not a pyro_mcvae checkpoint", map_location,
                            weights_only=False)
    if not isinstance(state, dict) or "format" not in state or state["format"] != FORMAT:
        raise ValueError(f"checkpoint {path} is not a pyro_mcvae checkpoint")
    return state


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint ``path`` names: the file itself, a run directory's ``checkpoint.pt``, or
    the only ``checkpoint.pt`` below a directory (``pyro-mcvae train`` writes ``OUT/train/``)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"no checkpoint at {path} (no such file or directory)")
    if (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    found = sorted(path.rglob(CHECKPOINT_NAME))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"no checkpoint in {path} (no {CHECKPOINT_NAME} in it or below it)")
    shown = ", ".join(str(f.parent) for f in found[:5]) + (", ..." if len(found) > 5 else "")
    raise ValueError(f"{path} holds {len(found)} runs; name one of them: {shown}")


def model_differences(state: dict, model) -> list[str]:
    """The settings in which ``model`` differs from the model a checkpoint's ``state`` records
    (empty when they agree, or when either was built outside the registry)."""
    return record_differences(state.get("model_record"), model_record(model))


def load_weights(model, path: str | os.PathLike, device="cpu"):
    """``model`` with the weights of the checkpoint ``path`` (file or run directory), on
    ``device`` in eval mode. Refused (:class:`RunConflictError`, naming the settings) when the
    checkpoint records a model of other settings; :func:`load_model` needs no model."""
    path = checkpoint_file(path)
    state = load_checkpoint(path, map_location="cpu")
    differences = model_differences(state, model)
    if differences:
        raise RunConflictError(f"{path} holds a model of other settings: {'; '.join(differences)}. Build the "
                               "model with the checkpoint's settings, or load it with pyro_mcvae.load_model(path), "
                               "which reads them from the checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{path} was written by a different model configuration: {err}") from None
    return model.to(_device(device)).eval()


def load_model(path: str | os.PathLike, device="cpu"):
    """The model saved at ``path`` (a checkpoint file, or a run directory of
    ``fit(..., out_dir=...)``), rebuilt through the registry from the settings the checkpoint
    records and loaded with its weights, on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``), in
    eval mode. Needs nothing else: no settings, no code but the method's registration (the
    library's methods register themselves; one of your own must be registered first). The
    caller's random state is left as it was."""
    path = checkpoint_file(path)
    state = load_checkpoint(path, map_location="cpu")
    record = state.get("model_record")
    if record is None:
        raise ValueError(f"{path} does not record which model it holds (a model built outside the registry, or a "
                         "checkpoint written before pyro_mcvae recorded it): build the model as it was trained and "
                         "load the weights with pyro_mcvae.experiments.restore(model, run_dir)")
    try:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights, then replaced
            model = build_from_record(record)
    except ValueError as err:
        raise ValueError(f"{path} (written by pyro_mcvae {state.get('version', 'unknown')}): {err}") from None
    model.load_state_dict(state["model"])
    return model.to(_device(device)).eval()


def save_model(model, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model``'s weights with its settings (method, config, component sizes, library
    version) to the file ``path``, for :func:`load_model`. An existing file is refused unless
    ``overwrite``; a model built outside the registry is refused (nothing could rebuild it)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name, e.g. {path / 'model.pt'}")
    if path.exists() and not overwrite:
        raise RunConflictError(f"{path} exists; save_model does not replace a file unless overwrite=True")
    state = saved_state(model)
    if state["model_record"] is None:
        raise ValueError(f"this {type(model).__name__} was not built through the registry, so nothing could "
                         "rebuild it from a file: build it with pyro_mcvae.build_model (register your own method "
                         "with pyro_mcvae.register first), or save its state_dict yourself")
    return save_checkpoint(state, path)


def model_settings(model) -> dict:
    """What a checkpoint records of ``model`` beside its weights: its settings
    (``"model_record"``; ``None`` outside the registry) and the library version."""
    return {"model_record": model_record(model), "version": __version__}


def saved_state(model) -> dict:
    """A checkpoint of the model alone: its weights and :func:`model_settings`."""
    return {"format": FORMAT, "model": model.state_dict()} | model_settings(model)


def _device(name) -> torch.device:
    from .trainer import resolve_device  # the trainer imports this module

    return resolve_device(name)
