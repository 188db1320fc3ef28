"""Your own components from files: a NumPy ``.npz`` with one array per component, a folder of
images per component, an optional presence mask, and a seeded train/test split.

Rows are paired by position: row ``i`` of every ``.npz`` array, and the ``i``-th image of every
folder in the sorted order of the file names, which must be the same names in every folder
(extensions aside). Components are numbered in the order given: the ``.npz`` arrays first (in
the file's order, or the order of ``keys``), then the image folders.

Values: arrays of floating point, integers or booleans are read as their values (scale 8-bit
data yourself, or give them as images); an array ``(N, ...)`` becomes ``(N, D)`` (its other axes
flattened; ``(N,)`` is one coordinate). Images become flat vectors in [0, 1]: greyscale folders
one channel, any other mode RGB (alpha dropped); all images of one folder must have one size.
A mask is a ``.npy`` array ``(N, M)`` of booleans (or 0/1), True where a component is present;
absent entries may hold anything (NaN included) and are set to 0; present entries must be
finite. Every problem raises a ``ValueError`` (``FileNotFoundError`` for a missing path) naming
the file and what was expected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["ComponentFiles", "IMAGE_SUFFIXES", "read_component_files", "split_rows"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ComponentFiles:
    """Components read from files, paired by row.

    ``data``: ``M`` float32 arrays ``(N, D_k)`` (absent entries 0); ``names``: a label per
    component (the ``.npz`` key or the folder's name); ``shapes``: each row's shape before
    flattening (``(C, H, W)`` for images); ``images``: which components came from image folders;
    ``mask``: bool ``(N, M)`` or ``None`` (all present); ``sources`` and ``digests``: the path and
    the SHA-256 of every input by its role (``"npz"``, ``"images 0"``, ..., ``"mask"``), to tell
    later whether the files changed; ``row_names``: the image file names (stems)
    that pair the rows, when there are image folders."""

    data: list[np.ndarray]
    names: list[str]
    shapes: list[tuple[int, ...]]
    images: list[bool]
    mask: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    row_names: list[str] | None = None

    @property
    def num_rows(self) -> int:
        return self.data[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [x.shape[1] for x in self.data]


def _existing(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found")
    return path


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def _as_rows(x: np.ndarray, name: str) -> np.ndarray:
    """An array ``(N, ...)`` of numbers as float32 ``(N, D)``."""
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers (float, integer or bool), got an array of {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0 or (x.ndim > 1 and int(np.prod(x.shape[1:])) == 0):
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1 rows of at least one value, got {x.shape}")
    return x.reshape(x.shape[0], -1).astype(np.float32)


def read_npz(path, keys: Sequence[str] | None = None) -> tuple[list[str], list[np.ndarray], list[tuple]]:
    """``(names, arrays (N, D_k) float32, row shapes)`` of the arrays in ``path`` (all, in the
    file's order, or ``keys`` in that order)."""
    path = _existing(path, "data file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a NumPy .npz file: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array; expected a .npz with one array per component "
                         "(np.savez(path, name1=x1, name2=x2, ...))")
    with archive:
        names = list(archive.files) if keys is None else [str(k) for k in keys]
        missing = [k for k in names if k not in archive.files]
        if missing:
            raise ValueError(f"{path} has no array {missing[0]!r}; it holds {archive.files}")
        if not names:
            raise ValueError(f"{path} holds no arrays; expected one per component")
        arrays = [archive[k] for k in names]
    return names, [_as_rows(x, f"{path.name}[{k!r}]") for k, x in zip(names, arrays)], \
        [tuple(x.shape[1:]) or (1,) for x in arrays]


def _image_files(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    by_stem = {}
    for p in files:
        if p.stem in by_stem:
            raise ValueError(f"image folder {folder} holds two images named {p.stem!r} ({by_stem[p.stem].name}, "
                             f"{p.name}); rows are paired by file name")
        by_stem[p.stem] = p
    return by_stem


def _pixels(image) -> np.ndarray:
    """A PIL image as float32 ``(C, H, W)`` in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return (np.asarray(image, dtype=np.float32) / 65535.0)[None]
    if image.mode in ("1", "L", "LA"):
        return (np.asarray(image.convert("L"), dtype=np.float32) / 255.0)[None]
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def read_image_folder(folder, stems: Sequence[str]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The images ``stems`` of ``folder`` (in that order) as float32 ``(N, C*H*W)`` in [0, 1] and
    their shape ``(C, H, W)``: one channel if every image is greyscale, else RGB."""
    from PIL import Image, UnidentifiedImageError

    files = _image_files(Path(folder))
    pixels = []
    for stem in stems:
        try:
            with Image.open(files[stem]) as image:
                pixels.append(_pixels(image))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {files[stem]}: {err}") from None
    channels = max(p.shape[0] for p in pixels)
    pixels = [np.repeat(p, 3, axis=0) if p.shape[0] < channels else p for p in pixels]
    first = pixels[0].shape[1:]
    for stem, p in zip(stems, pixels):
        if p.shape[1:] != first:
            raise ValueError(f"images of one folder must have one size: {files[stems[0]].name} is "
                             f"{first[1]}x{first[0]}, {files[stem].name} is {p.shape[2]}x{p.shape[1]} (in {folder})")
    stack = np.stack(pixels)
    return stack.reshape(len(stems), -1), tuple(stack.shape[1:])


def _paired_stems(folders: Sequence[Path]) -> list[str]:
    """The sorted file names (without extension) every folder holds, refusing folders whose
    names differ."""
    sets = [set(_image_files(f)) for f in folders]
    for folder, names in zip(folders[1:], sets[1:]):
        if names != sets[0]:
            only_first, only_here = sorted(sets[0] - names), sorted(names - sets[0])
            parts = [f"{len(s)} only in {where} (e.g. {s[0]!r})"
                     for s, where in ((only_first, folders[0]), (only_here, folder)) if s]
            raise ValueError(f"image folders {folders[0]} and {folder} hold different file names: "
                             f"{'; '.join(parts)}. Rows are paired by file name: every folder needs the same names")
    return sorted(sets[0])


def _read_mask(path, n: int, m: int) -> np.ndarray:
    path = _existing(path, "mask file")
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"mask {path} is not a NumPy .npy file: {err}") from None
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask {path} must be a .npy array (N, M), not an archive of several arrays")
    if mask.shape != (n, m):
        raise ValueError(f"mask {path} must have shape (N={n}, M={m}) (rows x components), got {mask.shape}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "fiu" or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"mask {path} must hold booleans or 0/1 (True where present), got values of {mask.dtype}")
        mask = mask.astype(bool)
    empty = np.flatnonzero(~mask.any(1))
    if empty.size:
        raise ValueError(f"mask {path}: {empty.size} row(s) have every component absent (first: row {empty[0]}); "
                         "leave such rows out of the data")
    return mask


def read_component_files(npz=None, images: Sequence = (), mask=None, keys: Sequence[str] | None = None
                         ) -> ComponentFiles:
    """The components of ``npz`` (a ``.npz`` path; ``keys``: which arrays, in order) and of the
    ``images`` folders, paired by row, with the presence ``mask`` (a ``.npy`` path) applied."""
    if npz is None and not images:
        raise ValueError("no data: give a .npz file of arrays and/or image folders (one per component)")
    data, names, shapes, is_image, sources, digests, row_names = [], [], [], [], {}, {}, None
    if npz is not None:
        names, data, shapes = read_npz(npz, keys)
        is_image = [False] * len(data)
        sources["npz"], digests["npz"] = str(npz), _digest([Path(npz)])
    folders = [_existing(f, "image folder") for f in images]
    for f in folders:
        if not f.is_dir():
            raise ValueError(f"image folder {f} is not a folder")
    if folders:
        row_names = _paired_stems(folders)
        files = [_image_files(f) for f in folders]
        for i, (folder, by_stem) in enumerate(zip(folders, files)):
            pixels, shape = read_image_folder(folder, row_names)
            data.append(pixels)
            shapes.append(shape)
            names.append(folder.name)
            is_image.append(True)
            sources[f"images {i}"], digests[f"images {i}"] = str(folder), _digest([by_stem[s] for s in row_names])
    if len(set(names)) != len(names):
        names = [f"{i}:{name}" for i, name in enumerate(names)]
    counts = [x.shape[0] for x in data]
    if len(set(counts)) > 1:
        raise ValueError("components must have the same number of rows: "
                         + ", ".join(f"{name} {c}" for name, c in zip(names, counts)))
    presence = None
    if mask is not None:
        presence = _read_mask(mask, counts[0], len(data))
        sources["mask"], digests["mask"] = str(mask), _digest([Path(mask)])
    for k, (x, name) in enumerate(zip(data, names)):
        if presence is not None:
            x[~presence[:, k]] = 0.0  # absent: any placeholder (NaN included) becomes 0
        bad = ~np.isfinite(x).all(1)
        if bad.any():
            raise ValueError(f"component {k} ({name}) has NaN or infinite values in {int(bad.sum())} row(s) "
                             f"(first: row {int(np.flatnonzero(bad)[0])}); mark absent entries in a mask")
    return ComponentFiles(data, names, shapes, is_image, presence, sources, digests, row_names)


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train and test row indices (each sorted): ``round(n * test_fraction)`` test rows
    (at least one when the fraction is positive), drawn without replacement by a private
    generator seeded with ``seed``."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_test < 1:
        raise ValueError(f"{n} row(s) leave nothing to train on with test_fraction {test_fraction}")
    order = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])
