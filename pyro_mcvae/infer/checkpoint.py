"""Checkpoints written atomically, holding everything a resumed run needs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_torch_save, read_torch_file

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state"]


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
    if not isinstance(state, dict) or "format" not in state or state["format"] != "pyro_mcvae-1":
        raise ValueError(f"checkpoint {path} is not a pyro_mcvae checkpoint")
    return state
