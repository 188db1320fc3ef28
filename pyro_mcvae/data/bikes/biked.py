"""BIKED-style component images from disk: a folder per component, one file stem per design.

Any size and mode is accepted: converted to grayscale, ink polarity normalised to ink 1 on
background 0, padded or stretched to a square and resized, so that the images match the
procedural generator's (``(N, K, size, size)`` float32 in [0, 1]).
"""

from __future__ import annotations

import operator
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .._store import map_chunks, pillow, progress_bar, read_image
from .laws import COMPONENTS

__all__ = ["IMAGE_EXTENSIONS", "ComponentImages", "load_component_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ComponentImages:
    """``images`` float32 ``(N, K, size, size)`` in [0, 1], ink 1 on 0; ``designs`` the sorted file
    stems; ``components`` the K names; ``inverted`` bool ``(N, K)``: whether a file was read as
    dark ink on a light background and inverted."""

    images: torch.Tensor
    designs: list[str]
    components: list[str]
    inverted: torch.Tensor

    def __len__(self) -> int:
        return len(self.designs)


def _natural_key(text: str):
    """Sort key putting ``"2"`` before ``"10"``: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _scan_component_folder(folder: Path, component: str) -> dict[str, Path]:
    """Design stem -> image file in ``folder``; hidden and non-image files are skipped."""
    if not folder.is_dir():
        raise ValueError(
            f"{folder} not found: expected the folder of component {component!r} "
            "(pass names={'" + component + "': 'FolderName', ...} when it is called otherwise)"
        )
    found: dict[str, Path] = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if entry.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise ValueError(f"{folder}: design {path.stem!r} appears twice ({found[path.stem].name} and {entry})")
        found[path.stem] = path
    if not found:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) for component {component!r}")
    return found


def _gray(im) -> np.ndarray:
    """An opened Pillow image -> float32 ``(h, w)`` in [0, 1]; transparency composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im, np.float32) / 65535.0
    if im.mode == "F":
        arr = np.asarray(im, np.float32)
        return arr / 255.0 if arr.size and arr.max() > 1 else arr
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        Image = pillow()
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("L"), np.float32) / 255.0


def _read_gray(path: Path) -> np.ndarray:
    """One image file -> float32 ``(h, w)`` in [0, 1]; ValueError naming the file otherwise."""
    arr = read_image(path, _gray, "unreadable or corrupt image")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{path}: could not read a 2-D grayscale image (got shape {arr.shape})")
    return np.clip(arr, 0, 1)


def _to_square(arr: np.ndarray, size: int, fit: str) -> np.ndarray:
    """float32 ``(h, w)`` -> ``(size, size)``: padded with background (``"pad"``) or stretched."""
    Image = pillow()
    h, w = arr.shape
    if fit == "pad" and h != w:
        side = max(h, w)
        canvas = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = arr
        arr, h, w = canvas, side, side
    if (h, w) == (size, size):
        return arr
    # Box (area) filter when shrinking: no ringing, and ink mass and centre of mass are kept.
    shrinking = h >= size and w >= size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    out = Image.fromarray(np.ascontiguousarray(arr, np.float32)).resize((size, size), resample)
    return np.clip(np.asarray(out, np.float32), 0, 1)


def load_component_images(
    root: str | os.PathLike,
    components: Sequence[str] = COMPONENTS,
    size: int = 64,
    names: Mapping[str, str] | Sequence[str] | None = None,
    invert: str | bool = "auto",
    on_missing: str = "error",
    fit: str = "pad",
    workers: int = 2,
    progress: bool = False,
) -> ComponentImages:
    """Load BIKED-style component images: a folder per component, one file stem per design.

    Each file (PNG, JPEG, ... any size and mode) becomes grayscale (luma; transparency over
    white), ink polarity is normalised to ink 1 on background 0, it is padded to a square
    (``fit="pad"``, centred, with background) or stretched (``fit="stretch"``) and resized to
    ``size x size`` with Pillow (box filter when shrinking, bicubic when enlarging; files already
    ``size x size`` are not resampled). BIKED renders are dark lines on white, the generator's
    PNGs light ink on black: ``invert="auto"`` inverts an image when its median pixel is bright
    (> 0.5), ``True`` always, ``False`` never.

    Args:
        root: folder holding the component folders.
        components: the K component names, in the order of the output.
        size: output side in pixels.
        names: folder name per component, as a mapping (``{"frame": "Frame_images"}``;
            unnamed components use their own name) or a sequence aligned with ``components``.
        invert: ``"auto"``, ``True`` or ``False`` (see above).
        on_missing: ``"error"``: a design lacking a component raises; ``"skip"``: such designs
            are left out (with a warning saying how many).
        fit: ``"pad"`` or ``"stretch"`` for non-square images.
        workers: threads decoding files.
        progress: tqdm bar over files.

    Returns:
        :class:`ComponentImages` with designs sorted naturally (``"2"`` before ``"10"``).

    Raises:
        ValueError: a missing or empty folder, a design missing a component (naming both), an
            unreadable file (naming it), or a bad argument.
    """
    root = Path(root).expanduser()
    components = list(components)
    if not components or len(set(components)) != len(components):
        raise ValueError(f"components must be distinct names, at least one, got {components!r}")
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if invert not in ("auto", True, False):
        raise ValueError(f"invert must be 'auto', True or False, got {invert!r}")
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    if fit not in ("pad", "stretch"):
        raise ValueError(f"fit must be 'pad' or 'stretch', got {fit!r}")
    if names is None:
        folders = list(components)
    elif isinstance(names, Mapping):
        unknown = set(names) - set(components)
        if unknown:
            raise ValueError(f"names has entries for unknown components {sorted(unknown)}; components are {components}")
        folders = [names.get(c, c) for c in components]
    else:
        folders = list(names)
        if len(folders) != len(components):
            raise ValueError(f"names lists {len(folders)} folders for {len(components)} components")
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory; expected one folder per component ({', '.join(folders)})")
    scans = [_scan_component_folder(root / folder, c) for folder, c in zip(folders, components)]
    all_designs = set().union(*scans)
    missing = {d: [c for c, scan in zip(components, scans) if d not in scan] for d in all_designs}
    missing = {d: cs for d, cs in missing.items() if cs}
    if missing:
        first = sorted(missing, key=_natural_key)[:10]
        listing = "; ".join(f"{d}: {', '.join(missing[d])}" for d in first)
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        if on_missing == "error":
            raise ValueError(
                f"{len(missing)} design(s) under {root} lack component files: {listing}{more}; "
                "every component folder needs a file with the same stem (on_missing='skip' leaves them out)"
            )
        warnings.warn(f"skipping {len(missing)} design(s) without every component: {listing}{more}", stacklevel=2)
    designs = sorted(all_designs - set(missing), key=_natural_key)
    if not designs:
        raise ValueError(f"{root}: no design has a file in every component folder ({', '.join(folders)})")
    images = np.empty((len(designs), len(components), size, size), np.float32)
    inverted = np.zeros((len(designs), len(components)), bool)
    jobs = [(i, k, scans[k][d]) for i, d in enumerate(designs) for k in range(len(components))]

    def work(start: int, stop: int) -> None:
        for i, k, path in jobs[start:stop]:
            arr = _read_gray(path)
            flip = bool(np.median(arr) > 0.5) if invert == "auto" else bool(invert)
            if flip:
                arr = 1.0 - arr
            images[i, k] = _to_square(arr, size, fit)
            inverted[i, k] = flip

    with progress_bar(progress, len(jobs), "component images", "img") as bar:
        map_chunks(work, len(jobs), 500, workers, bar)
    return ComponentImages(torch.from_numpy(images), designs, components, torch.from_numpy(inverted))
