"""Files written so that an interruption leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["atomic_torch_save", "commit_directory", "finish_dataset"]


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


def finish_dataset(tmp: str | os.PathLike, out_dir: str | os.PathLike, manifest: dict,
                   libraries=("torch", "numpy", "pillow")) -> Path:
    """Complete a data set written in ``tmp``: ``manifest.json`` last (with the package and
    library versions that shape the bytes, the time and ``"complete": true``), then
    :func:`commit_directory` to ``out_dir``."""
    from . import __version__
    from .provenance import versions

    manifest = dict(manifest) | {"package_version": __version__, "versions": versions(libraries),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": True}
    (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return commit_directory(tmp, out_dir)
