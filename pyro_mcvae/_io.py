"""Files written so that an interruption leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_torch_save", "commit_directory"]


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


def commit_directory(tmp: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Move a finished temporary folder ``tmp`` (on the same file system) to ``out_dir``. An
    existing ``out_dir`` is first moved aside and deleted only after the rename, so a reader
    never sees a half-written data set under ``out_dir``."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "data")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir
