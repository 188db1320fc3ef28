"""Bicycle assemblies on disk: ``{component}/{i:06d}.png``, ``geometry.csv``, checksums.

Written through :class:`~pyro_mcvae.data._store.DatasetWriter` (``SHA256SUMS``, then
``manifest.json`` last, then one rename into place) and checked by its verifier.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._store import DatasetWriter, progress_bar, verify_dataset
from .assemblies import BikeAssemblies
from .geometry import GROUND_ROW, MM_PER_PIXEL, ORIGIN_X, BikeGeometry, sample_bike_geometry
from .laws import BIKE_TYPES, COMPONENTS, GENERATOR_VERSION

__all__ = ["GEOMETRY_CSV", "read_bike_geometry", "verify_bike_assemblies", "write_bike_assemblies"]

GEOMETRY_CSV = "geometry.csv"


def _format_value(value) -> str:
    """One CSV cell: booleans as 0/1, integers plain, floats by ``repr`` (read back exactly)."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _geometry_csv(geometry: BikeGeometry, designs: Sequence[str]) -> str:
    """A ``design`` column, then :meth:`BikeGeometry.to_columns`; one row per design."""
    columns = geometry.to_columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["design", *columns])
    arrays = list(columns.values())
    for i, design in enumerate(designs):
        writer.writerow([design, *(_format_value(a[i]) for a in arrays)])
    return buf.getvalue()


def read_bike_geometry(path: str | os.PathLike) -> tuple[list[str], BikeGeometry]:
    """Read a ``geometry.csv`` written by :func:`write_bike_assemblies`: design names and geometry."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / GEOMETRY_CSV
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the geometry table ({err})") from None
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header row and one row per design")
    header, body = rows[0], rows[1:]
    table = {name: [r[j] for r in body] for j, name in enumerate(header)}
    values = {}
    template = sample_bike_geometry(1)  # the dtype and shape of every field
    try:
        for f in fields(BikeGeometry):
            probe = getattr(template, f.name)
            if probe.ndim == 2:
                values[f.name] = np.stack([np.array(table[f"{f.name}_x"], float),
                                           np.array(table[f"{f.name}_y"], float)], -1)
            elif probe.dtype == bool:
                values[f.name] = np.array(table[f.name], int).astype(bool)
            else:
                values[f.name] = np.array(table[f.name], probe.dtype)
    except KeyError as err:
        raise ValueError(f"{path}: column {err.args[0]!r} is missing") from None
    except ValueError as err:
        raise ValueError(f"{path}: malformed value ({err})") from None
    return table.get("design", [str(i) for i in range(len(body))]), BikeGeometry(**values)


def write_bike_assemblies(
    out_dir: str | os.PathLike,
    assemblies: BikeAssemblies,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Write ``{component}/{i:06d}.png``, ``geometry.csv``, ``SHA256SUMS`` and ``manifest.json``.

    Atomic (:class:`~pyro_mcvae.data._store.DatasetWriter`): an interrupted run leaves no
    ``out_dir``, or the old one untouched.

    Args:
        out_dir: target directory (must not exist unless ``overwrite``, which replaces it).
        assemblies: from :func:`generate_bike_assemblies` (uint8 images ``(n, 5, size, size)``,
            ink 255 on 0).
        progress: tqdm bar over the PNG files written.
        workers: threads encoding and writing PNGs.

    Returns:
        ``out_dir`` as a Path.
    """
    images = assemblies.images
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"assemblies.images must be uint8 (n, {len(COMPONENTS)}, size, size), got {got}")
    if images.shape[1] != len(assemblies.components) or len(images) != len(assemblies.geometry):
        raise ValueError(
            f"assemblies.images {tuple(images.shape)} must hold one image per component "
            f"({len(assemblies.components)}) for each of the {len(assemblies.geometry)} designs"
        )
    n = len(images)
    designs = [f"{i:06d}" for i in range(n)]
    names = [f"{d}.png" for d in designs]
    array = images.numpy()
    with DatasetWriter(out_dir, overwrite) as out, \
            progress_bar(progress, n * images.shape[1], "bike PNG", "img") as bar:
        for k, component in enumerate(assemblies.components):
            out.write_pngs(component, names, array[:, k], workers, bar)
        out.write(GEOMETRY_CSV, _geometry_csv(assemblies.geometry, designs).encode())
        labels = assemblies.labels.long()
        return out.commit({
            "dataset": "procedural bicycle assemblies (pyro_mcvae)",
            "generator_version": GENERATOR_VERSION,
            "seed": assemblies.seed,
            "stream": assemblies.stream,
            "designs": n,
            "size": int(images.shape[-1]),
            "components": list(assemblies.components),
            "ink": "255 on background 0",
            "file_names": "{component}/{design}.png, design = {i:06d}",
            "types": dict(zip(BIKE_TYPES, torch.bincount(labels, minlength=len(BIKE_TYPES)).tolist())),
            "frame": {"mm_per_pixel_at_64": MM_PER_PIXEL, "origin_x_px": ORIGIN_X, "ground_row_px": GROUND_ROW},
            "checksums": out.write_checksums(),
        })


def verify_bike_assemblies(root: str | os.PathLike) -> None:
    """Check every file under ``root`` against ``SHA256SUMS`` and ``manifest.json``.

    Raises:
        ValueError: naming the first missing, changed or unlisted file, or an incomplete set.
    """
    verify_dataset(root, "bike set (interrupted writing?)", folders_key="components")
