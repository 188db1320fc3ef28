"""Files written so that an interruption leaves the old file or the new one, never a torn one.

(Whole data sets are written the same way by :class:`pyro_mcvae.data._store.DatasetWriter`.)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["atomic_torch_save"]


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` into a temporary file beside ``path``, flushed to disk, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
