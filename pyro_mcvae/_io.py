"""Files written so that an interruption leaves the old file or the new one, never a torn one,
and read back with errors that say which file and what is wrong.

(Whole data sets are written the same way by :class:`pyro_mcvae.data._store.DatasetWriter`.)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

__all__ = ["atomic_netcdf", "atomic_npz", "atomic_torch_save", "atomic_write_csv", "read_number_csv", "read_torch_file"]


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


def atomic_npz(arrays: dict, path: str | os.PathLike) -> Path:
    """``numpy.savez_compressed(path, **arrays)`` through a temporary file renamed over ``path``."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_netcdf(data, path: str | os.PathLike) -> Path:
    """An ArviZ ``InferenceData`` (anything with ``to_netcdf(path)``) written to a temporary file
    beside ``path`` and renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data.to_netcdf(str(tmp))
    os.replace(tmp, path)
    return path


def read_torch_file(path: str | os.PathLike, missing: Exception, unreadable: str, map_location="cpu",
                    weights_only: bool = True):
    """``torch.load`` of ``path``; raises ``missing`` when there is no such file, and
    ``ValueError(f"{unreadable}: <torch's error>")`` when the file cannot be read (torch raises
    several exception types for a torn or foreign file)."""
    path = Path(path)
    if not path.is_file():
        raise missing
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:
        raise ValueError(f"{unreadable}: {err}") from None


def atomic_write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """``rows`` as a CSV file (columns: every key, in order of first appearance), written into a
    temporary file beside ``path`` and renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def read_number_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of a CSV file of numbers as dicts of floats (empty cells: ``None``); ``[]`` when
    the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(handle)]
