"""PolyMNIST on disk: the published PNG layout and/or tensors, with checksums.

Layouts: ``{split}/m{k}/{i}.{label}.png`` (28x28 RGB, the published set's) and/or
``{split}/m{k}.pt`` (uint8 ``(N, 3, 28, 28)``) with ``{split}/labels.pt`` (int64 ``(N,)``);
plus ``SHA256SUMS`` and ``manifest.json``, written through
:class:`~pyro_mcvae.data._store.DatasetWriter` (manifest last, then one rename into place).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .._store import DatasetWriter, progress_bar, verify_dataset
from .generate import RECIPE_VERSION, SIZE

__all__ = ["LAYOUTS", "verify_polymnist", "write_polymnist"]

LAYOUTS = ("png", "pt", "both")


def _write_png_folder(out: DatasetWriter, folder: str, images: torch.Tensor, labels: np.ndarray, workers: int,
                      bar) -> None:
    """Write ``images`` uint8 ``(N, 3, 28, 28)`` as ``folder/{i}.{label}.png`` in ``out``."""
    names = [f"{i}.{label}.png" for i, label in enumerate(labels)]
    out.write_pngs(folder, names, images.permute(0, 2, 3, 1).numpy(), workers, bar)


def _check_split_arrays(split: str, images, labels) -> None:
    """ValueError unless ``images`` is uint8 ``(N, M, 3, 28, 28)`` and ``labels`` digits ``(N,)``."""
    if (
        not isinstance(images, torch.Tensor)
        or images.dtype != torch.uint8
        or images.dim() != 5
        or images.shape[2:] != (3, SIZE, SIZE)
    ):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{split} images must be uint8 (N, M, 3, 28, 28), got {got}")
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dim() != 1
        or labels.is_floating_point()
        or len(labels) != len(images)
    ):
        raise ValueError(f"{split} labels must be an integer tensor ({len(images)},)")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{split} labels must be digits 0..9")



def write_polymnist(
    out_dir: str | os.PathLike,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    layout: str = "png",
    metadata: Mapping | None = None,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Write PolyMNIST arrays to ``out_dir`` with ``SHA256SUMS`` and ``manifest.json``.

    Atomic (:class:`~pyro_mcvae.data._store.DatasetWriter`): an interrupted run leaves no
    ``out_dir``, or the old one untouched.

    Args:
        out_dir: target directory (must not exist unless ``overwrite``, which replaces it).
        splits: split name (e.g. ``"train"``, ``"test"``) -> (``images`` uint8
            ``(N, M, 3, 28, 28)``, ``labels`` int ``(N,)``); M equal in all splits.
        layout: ``"png"`` (``{split}/m{k}/{i}.{label}.png``), ``"pt"`` (``{split}/m{k}.pt``
            uint8 ``(N, 3, 28, 28)`` and ``{split}/labels.pt`` int64 ``(N,)``) or ``"both"``.
        metadata: extra JSON-serialisable entries for the manifest (seed, sources, ...).
        progress: tqdm bar over the PNG files written.
        workers: threads encoding and writing PNGs.

    Returns:
        ``out_dir`` as a Path.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not splits:
        raise ValueError("splits is empty; expected e.g. {'train': (images, labels), 'test': (...)}")
    num_mods = None
    for split, (images, labels) in splits.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
            raise ValueError(f"split names are plain folder names, got {split!r}")
        _check_split_arrays(split, images, labels)
        if num_mods is not None and images.shape[1] != num_mods:
            raise ValueError(f"split {split!r} has {images.shape[1]} modalities, another has {num_mods}")
        num_mods = images.shape[1]
    total = sum(len(im) * im.shape[1] for im, _ in splits.values())
    with DatasetWriter(out_dir, overwrite) as out, \
            progress_bar(progress and layout != "pt", total, "PolyMNIST PNG", "img") as bar:
        counts = {}
        for split, (images, labels) in splits.items():
            labels = labels.long()
            (out.tmp / split).mkdir()  # also when it holds no modality
            counts[split] = {
                "tuples": len(labels),
                "label_counts": torch.bincount(labels, minlength=10).tolist(),
            }
            for k in range(num_mods):
                if layout in ("png", "both"):
                    _write_png_folder(out, f"{split}/m{k}", images[:, k], labels.numpy(), workers, bar)
                if layout in ("pt", "both"):
                    out.save_torch(f"{split}/m{k}.pt", images[:, k].clone())  # clone: not the whole split's storage
            if layout in ("pt", "both"):
                out.save_torch(f"{split}/labels.pt", labels.clone())
        return out.commit({
            "dataset": "PolyMNIST (pyro_mcvae)",
            "recipe_version": RECIPE_VERSION,
            "layout": layout,
            "modalities": [f"m{k}" for k in range(num_mods)],
            "splits": counts,
            "checksums": out.write_checksums(),
            **dict(metadata or {}),
        })


def verify_polymnist(root: str | os.PathLike, progress: bool = False) -> None:
    """Check every data file under ``root`` against ``SHA256SUMS`` and ``manifest.json``.

    Raises:
        ValueError: naming the first missing, changed or unlisted file, or an incomplete set.
    """
    verify_dataset(root, "PolyMNIST directory (interrupted generation?)", folders_key="splits",
                   progress=progress, desc="verify PolyMNIST")
