"""Loading PolyMNIST from disk: the PNG layout (with an optional decoded cache) and the tensor
layout, with checks that name the offending file.

PNG layout: ``{split}/m{k}/{i}.{label}.png``, 28x28 RGB, indices ``0..N-1`` without gaps, the
same label for index ``i`` in every modality. Tensor layout: ``{split}/m{k}.pt`` uint8 (or
float in [0, 1]) ``(N, 3, 28, 28)`` and ``{split}/labels.pt`` integer ``(N,)``.
"""

from __future__ import annotations

import hashlib
import operator
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._store import MANIFEST, map_chunks, progress_bar, read_image, to_uint8
from .generate import SIZE

__all__ = ["PolyMNISTData", "load_polymnist"]

_PNG_NAME = re.compile(r"^(\d+)\.(\d+)\.png$")


@dataclass
class PolyMNISTData:
    """One split: ``images`` uint8 ``(N, M, 3, 28, 28)``, ``labels`` int64 ``(N,)``, modality names."""

    images: torch.Tensor
    labels: torch.Tensor
    modalities: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _modality_names(modalities: Sequence[int | str]) -> list[int]:
    """``[0, "m2"]`` -> ``[0, 2]``; ValueError on anything else, duplicates or negatives."""
    out = []
    for m in modalities:
        if isinstance(m, str) and re.fullmatch(r"m\d+", m):
            out.append(int(m[1:]))
        else:
            try:
                out.append(operator.index(m))
            except TypeError:
                raise ValueError(f"modalities are ints or names like 'm0', got {m!r}") from None
    if len(set(out)) != len(out) or any(k < 0 for k in out):
        raise ValueError(f"modalities must be distinct and >= 0, got {list(modalities)!r}")
    return out


def _scan_png_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    """File names of ``folder`` in index order 0..N-1 and their labels; ValueError on gaps."""
    found: dict[int, tuple[str, int]] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.name.endswith(".png"):
                continue
            match = _PNG_NAME.match(entry.name)
            if match is None:
                raise ValueError(f"{folder / entry.name}: PNG name must be '{{index}}.{{label}}.png'")
            index, label = int(match[1]), int(match[2])
            if index in found:
                raise ValueError(f"{folder}: index {index} appears twice ({found[index][0]} and {entry.name})")
            if label > 9:
                raise ValueError(f"{folder / entry.name}: label {label}, expected a digit 0..9")
            found[index] = (entry.name, label)
    for i in range(len(found)):
        if i not in found:
            raise ValueError(
                f"{folder}: file {i}.*.png is missing; expected indices 0..{len(found) - 1} "
                f"(largest index found {max(found)})"
            )
    names = [found[i][0] for i in range(len(found))]
    return names, np.array([found[i][1] for i in range(len(found))], dtype=np.int64)


def _png_facts(im) -> tuple:
    """What :func:`_decode_png` checks: format, size, mode, and the pixels as an array."""
    return im.format, im.size, im.mode, np.asarray(im)


def _decode_png(path: Path) -> np.ndarray:
    """One PNG file -> uint8 (28, 28, 3); ValueError naming the file otherwise."""
    fmt, size, mode, arr = read_image(path, _png_facts, "corrupt or truncated PNG")
    if fmt != "PNG":
        raise ValueError(f"{path}: holds {fmt} data, expected a PNG")
    if size != (SIZE, SIZE) or mode != "RGB":
        raise ValueError(f"{path}: {size[0]}x{size[1]} {mode} image, expected 28x28 RGB")
    return arr


def _fingerprint(folders: Sequence[Path], root: Path) -> str:
    """Cheap identity of the PNG folders: names, sizes and mtimes, plus the manifest if any."""
    h = hashlib.sha256()
    for folder in folders:
        with os.scandir(folder) as it:
            for entry in sorted(it, key=lambda e: e.name):
                st = entry.stat()
                h.update(f"{folder.name}/{entry.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    if (root / MANIFEST).is_file():
        h.update((root / MANIFEST).read_bytes())
    return h.hexdigest()


def _load_png_split(root: Path, split_dir: Path, mods: list[int], cache: bool, progress: bool, workers: int):
    """PNG layout -> images uint8 ``(N, M, 3, 28, 28)``, labels int64 ``(N,)`` (from the names)."""
    folders = [split_dir / f"m{k}" for k in mods]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder} is missing (expected the PNG folder of modality {folder.name})")
    cache_path = split_dir / f".cache-{'-'.join(f'm{k}' for k in mods)}.pt"
    fingerprint = None
    if cache:
        fingerprint = _fingerprint(folders, root)
        if cache_path.is_file():
            try:
                saved = torch.load(cache_path, map_location="cpu", weights_only=True)
                if saved.get("fingerprint") == fingerprint:
                    return saved["images"], saved["labels"]
            except Exception:  # a stale or broken cache is rebuilt, never trusted
                pass
    scans = [_scan_png_folder(folder) for folder in folders]
    names0, labels0 = scans[0]
    for folder, (names, labels) in zip(folders[1:], scans[1:]):
        if len(names) != len(names0):
            raise ValueError(
                f"{folder} holds {len(names)} PNGs but {folders[0]} holds {len(names0)}; "
                "expected the same count"
            )
        bad = np.flatnonzero(labels != labels0)
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"label mismatch at index {i}: {folders[0] / names0[i]} vs {folder / names[i]}; "
                "all modalities of a tuple must show the same digit"
            )
    n = len(names0)
    out = np.empty((n, len(mods), SIZE, SIZE, 3), dtype=np.uint8)
    jobs = [
        (j, i, os.path.join(folders[j], name)) for j in range(len(mods)) for i, name in enumerate(scans[j][0])
    ]

    def work(start: int, stop: int) -> None:
        for j, i, path in jobs[start:stop]:
            out[i, j] = _decode_png(path)

    with progress_bar(progress, len(jobs), f"PolyMNIST {split_dir.name}", "img") as bar:
        map_chunks(work, len(jobs), 2000, workers, bar)
    images = torch.from_numpy(out).permute(0, 1, 4, 2, 3).contiguous()
    labels = torch.from_numpy(labels0)
    if cache:
        try:
            fd, tmp = tempfile.mkstemp(dir=split_dir, prefix=".cache-", suffix=".partial")
            os.close(fd)
            torch.save({"fingerprint": fingerprint, "images": images, "labels": labels}, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the data beside it is not
            os.replace(tmp, cache_path)
        except OSError:  # a read-only data folder just goes uncached
            pass
    return images, labels


def _load_pt(path: Path) -> torch.Tensor:
    """A tensor saved with ``torch.save`` (weights_only: no code runs); ValueError naming the file."""
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot load the tensor ({err})") from None
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a tensor")
    return obj


def _load_pt_split(split_dir: Path, mods: list[int]):
    """Tensor layout -> images uint8 ``(N, M, 3, 28, 28)`` (floats quantised), labels int64 ``(N,)``."""
    labels_path = split_dir / "labels.pt"
    labels = _load_pt(labels_path)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"{labels_path}: labels of shape {tuple(labels.shape)} {labels.dtype}, expected integer (N,)"
        )
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{labels_path}: labels must be digits 0..9")
    images = []
    for k in mods:
        path = split_dir / f"m{k}.pt"
        x = _load_pt(path)
        if x.dim() != 4 or x.shape[1:] != (3, SIZE, SIZE):
            raise ValueError(f"{path}: shape {tuple(x.shape)}, expected (N, 3, 28, 28)")
        if len(x) != len(labels):
            raise ValueError(f"{path} holds {len(x)} images but {labels_path} holds {len(labels)} labels")
        if x.is_floating_point():
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise ValueError(f"{path}: float images must lie in [0, 1]")
            x = to_uint8(x)
        elif x.dtype != torch.uint8:
            raise ValueError(f"{path}: dtype {x.dtype}, expected uint8 or float in [0, 1]")
        images.append(x)
    return torch.stack(images, 1), labels


def _available_modalities(split_dir: Path, layout: str) -> list[int]:
    """The ``k`` of every ``m{k}`` folder (png) or ``m{k}.pt`` file (pt); they must be ``0..M-1``."""
    pattern = re.compile(r"^m(\d+)$" if layout == "png" else r"^m(\d+)\.pt$")
    found = sorted(int(m[1]) for name in os.listdir(split_dir) if (m := pattern.match(name)))
    if not found:
        what = "folders m0/" if layout == "png" else "files m0.pt"
        raise ValueError(f"{split_dir}: no modality {what} found")
    if found != list(range(len(found))):
        raise ValueError(
            f"{split_dir}: modalities {['m%d' % k for k in found]}, expected m0..m{len(found) - 1} without gaps"
        )
    return found


def load_polymnist(
    root: str | os.PathLike,
    split: str = "train",
    modalities: Sequence[int | str] | None = None,
    layout: str = "auto",
    cache: bool = False,
    progress: bool = False,
    workers: int = 2,
) -> PolyMNISTData:
    """Load one split of PolyMNIST from disk.

    Args:
        root: directory holding ``{split}/`` (as written by :func:`write_polymnist`, or the
            published PNG set).
        split: ``"train"`` or ``"test"`` (any folder name under ``root``).
        modalities: ints or names (``[0, 2]``, ``["m0", "m2"]``); None: every ``m{k}``.
        layout: ``"png"`` (``{split}/m{k}/{i}.{label}.png``), ``"pt"`` (``{split}/m{k}.pt`` and
            ``{split}/labels.pt``) or ``"auto"`` (``pt`` when ``m0.pt`` exists, else ``png``).
        cache: PNG layout only: keep a ``.cache-*.pt`` copy in ``{split}/`` keyed by the file
            names, sizes and mtimes (and the manifest), reused while they are unchanged.
        progress: tqdm bar while decoding PNGs.
        workers: threads decoding PNGs.

    Returns:
        :class:`PolyMNISTData` with ``images`` uint8 ``(N, M, 3, 28, 28)`` and ``labels`` int64
        ``(N,)`` (PNG: from the file names, which must agree across modalities).

    Raises:
        ValueError: a missing, corrupt or mis-sized file, gaps in the indices, disagreeing labels
            or counts; the message names the file.
    """
    root = Path(root).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        raise ValueError(
            f"{split_dir} not found; expected {root} to hold {split}/m0/ (PNG layout) or {split}/m0.pt "
            "(tensor layout), e.g. as written by generate_polymnist"
        )
    if layout == "auto":
        layout = "pt" if (split_dir / "m0.pt").is_file() else "png"
    if layout not in ("png", "pt"):
        raise ValueError(f"layout must be 'auto', 'png' or 'pt', got {layout!r}")
    mods = _available_modalities(split_dir, layout) if modalities is None else _modality_names(modalities)
    if not mods:
        raise ValueError("modalities is empty; pass None for all or e.g. [0, 1]")
    if layout == "png":
        images, labels = _load_png_split(root, split_dir, mods, cache, progress, workers)
    else:
        images, labels = _load_pt_split(split_dir, mods)
    return PolyMNISTData(images, labels, [f"m{k}" for k in mods])
