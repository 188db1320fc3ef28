"""PolyMNIST: M image modalities of the same digit, each on its own photographic background.

The recipe (from the published dataset code, but seeded here):

- one background photograph per modality; for every digit, a uniformly random 28x28 crop of
  that modality's background, RGB in [0, 1];
- the MNIST digit is binarised at pixel value > 128 and the crop is inverted (x -> 1 - x) in
  all three channels where the digit is on;
- tuples share only the label: tuple ``i`` has the label of MNIST image ``i``, and modality
  ``k`` shows the MNIST image that an independent random permutation within that digit class
  assigns to ``i``, so every MNIST image is used once per modality and two modalities of a
  tuple show different writings of the digit (they coincide only by chance, about once per
  class for each pair of modalities).

On disk (``write_polymnist``): the published PNG layout ``{split}/m{k}/{i}.{label}.png``
(28x28 RGB) and/or ``{split}/m{k}.pt`` (uint8 ``(N, 3, 28, 28)``) with ``{split}/labels.pt``,
plus ``SHA256SUMS`` (every data file, ``sha256sum -c`` format) and ``manifest.json``, written
last, in a temporary directory that is renamed into place only when complete.

Command line: ``python -m pyro_mcvae.data.polymnist OUT_DIR [--mnist-dir DIR]
[--backgrounds-dir DIR] [--num-modalities 5] [--seed 0] [--layout png|pt|both]``.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .._io import finish_dataset

from .mnist import DATA_ENV_VAR, MNIST_FILES, DataNotFoundError, _locate, find_data_root, load_mnist

__all__ = [
    "POLYMNIST_BACKGROUNDS",
    "PolyMNISTData",
    "composite_polymnist",
    "generate_polymnist",
    "generate_polymnist_arrays",
    "load_backgrounds",
    "load_polymnist",
    "polymnist_to_float",
    "verify_polymnist",
    "write_polymnist",
]

#: Background file of modality m0, m1, ... (the order of /work/shared/data/README.md).
POLYMNIST_BACKGROUNDS = (
    "03milky-way-2695569_1280.jpg",
    "00flowers-19830_1280.jpg",
    "02lena3.jpg",
    "09road-3186188_1280.jpg",
    "05tree-736885_1280.jpg",
    "04poppies-174276_1280.jpg",
    "06woman-570883_1280.jpg",
    "07star_field.jpg",
    "08pink-324175_1280.jpg",
)

#: Bumped whenever the same seed would give different images.
RECIPE_VERSION = 1
SIZE = 28
THRESHOLD = 128
SPLITS = ("train", "test")
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
_PNG_NAME = re.compile(r"^(\d+)\.(\d+)\.png$")
_LAYOUTS = ("png", "pt", "both")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with torchvision
        raise ImportError("PolyMNIST images need Pillow: pip install pillow") from None
    return Image


def _derive_seed(seed: int, *tags: str) -> int:
    """A 63-bit seed for one named stream (split, modality), independent of the others."""
    text = "/".join(["pyro_mcvae.polymnist", str(seed), *tags]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _generator(seed: int, *tags: str) -> torch.Generator:
    return torch.Generator().manual_seed(_derive_seed(seed, *tags))


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _modality_names(modalities: Sequence[int | str]) -> list[int]:
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


# --------------------------------------------------------------------------- backgrounds


def _backgrounds_hint() -> str:
    return (
        "pass backgrounds_dir=... (command line: --backgrounds-dir DIR) pointing at the folder "
        f"with the PolyMNIST background photographs ({', '.join(POLYMNIST_BACKGROUNDS[:5])}, ...), "
        f"or set {DATA_ENV_VAR} to a directory holding polymnist/backgrounds/"
    )


def _resolve_backgrounds_dir(directory: str | os.PathLike | None) -> Path:
    if directory is None:
        root = find_data_root()
        if root is None or not (root / "polymnist" / "backgrounds").is_dir():
            raise DataNotFoundError("no PolyMNIST backgrounds found; " + _backgrounds_hint())
        return root / "polymnist" / "backgrounds"
    directory = Path(directory).expanduser()
    nested = directory / "polymnist" / "backgrounds"
    return nested if not (directory / POLYMNIST_BACKGROUNDS[0]).exists() and nested.is_dir() else directory


def load_backgrounds(
    directory: str | os.PathLike | None = None, num_modalities: int = 5
) -> list[torch.Tensor]:
    """The backgrounds of modalities m0..m{M-1}, in the order of ``POLYMNIST_BACKGROUNDS``.

    Args:
        directory: folder with the photographs (or a data root holding ``polymnist/backgrounds``);
            None: ``find_data_root()/polymnist/backgrounds``.
        num_modalities: M, 1..9.

    Returns:
        M float32 tensors ``(3, H_k, W_k)`` in [0, 1] (RGB, value / 255).
    """
    if not 1 <= operator.index(num_modalities) <= len(POLYMNIST_BACKGROUNDS):
        raise ValueError(
            f"num_modalities must be in 1..{len(POLYMNIST_BACKGROUNDS)} (one per background), "
            f"got {num_modalities}"
        )
    directory = _resolve_backgrounds_dir(directory)
    Image = _pil()
    out = []
    for name in POLYMNIST_BACKGROUNDS[:num_modalities]:
        path = directory / name
        if not path.is_file():
            raise DataNotFoundError(f"background {name} not found in {directory}; " + _backgrounds_hint())
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{path}: cannot read the background image ({err})") from None
        if arr.shape[0] < SIZE or arr.shape[1] < SIZE:
            raise ValueError(
                f"{path}: background of {arr.shape[1]}x{arr.shape[0]} pixels, expected at least 28x28"
            )
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().float().div_(255.0))
    return out


# --------------------------------------------------------------------------- recipe


def _check_digits(digits: torch.Tensor, name: str = "digits") -> None:
    if not isinstance(digits, torch.Tensor) or digits.dtype != torch.uint8:
        got = getattr(digits, "dtype", type(digits))
        raise ValueError(f"{name} must be a uint8 tensor (N, 28, 28), got {got}")
    if digits.dim() != 3 or digits.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"{name} must have shape (N, 28, 28), got {tuple(digits.shape)}")


def _check_background(background: torch.Tensor, name: str = "background") -> None:
    if not isinstance(background, torch.Tensor) or not background.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (3, H, W) in [0, 1]")
    if background.dim() != 3 or background.shape[0] != 3 or min(background.shape[1:]) < SIZE:
        raise ValueError(f"{name} must have shape (3, H, W) with H, W >= 28, got {tuple(background.shape)}")
    if not bool(((background >= 0) & (background <= 1)).all()):
        raise ValueError(f"{name} must hold values in [0, 1] (NaN not allowed)")


def composite_polymnist(
    digits: torch.Tensor, background: torch.Tensor, generator: torch.Generator, chunk_size: int = 4096
) -> torch.Tensor:
    """Put each digit on a random crop of ``background`` (the PolyMNIST recipe).

    For image ``n``: an offset ``(r, c)`` uniform over ``0..H-28`` x ``0..W-28`` (drawn with
    ``generator``: all ``N`` rows, then all ``N`` columns, by ``torch.randint``); the crop
    ``x = background[:, r:r+28, c:c+28]``; ``y = 1 - x`` where ``digits[n] > 128`` (all three
    channels) and ``y = x`` elsewhere. The stored value is
    ``torch.floor(255 * y + 0.5).clamp(0, 255).to(torch.uint8)`` (round half up, as
    torchvision's ``save_image``), computed in the background's dtype. For a background read
    from an 8-bit image (``b / 255``) this is exactly ``b`` off the digit and ``255 - b`` on it.

    Args:
        digits: uint8 ``(N, 28, 28)`` MNIST digits.
        background: float ``(3, H, W)`` in [0, 1], ``H, W >= 28``.
        generator: the random stream for the crop offsets.
        chunk_size: images composed at once (bounds memory, not the result).

    Returns:
        uint8 ``(N, 3, 28, 28)``.
    """
    _check_digits(digits)
    _check_background(background)
    n = digits.shape[0]
    _, height, width = background.shape
    rows0 = torch.randint(0, height - SIZE + 1, (n,), generator=generator)
    cols0 = torch.randint(0, width - SIZE + 1, (n,), generator=generator)
    # The uint8 formula is elementwise, so apply it once to the whole photograph and its
    # inverse and gather: channel c of ``table`` holds the plain pixels (index r * W + col)
    # followed by the inverted ones (index H * W + r * W + col).
    plain = torch.floor(255 * background + 0.5).clamp_(0, 255).to(torch.uint8)
    inverted = torch.floor(255 * (1 - background) + 0.5).clamp_(0, 255).to(torch.uint8)
    table = torch.cat([plain.reshape(3, -1), inverted.reshape(3, -1)], 1)
    index_dtype = torch.int32 if 2 * height * width < 2**31 else torch.int64  # int32: half the traffic
    step = torch.arange(SIZE, dtype=index_dtype)
    corner = (rows0 * width + cols0).to(index_dtype)
    window = step[:, None] * width + step  # (28, 28) offsets from the top-left pixel
    out = torch.empty(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        pixel = corner[sl, None, None] + window  # (n, 28, 28)
        pixel += (digits[sl] > THRESHOLD).to(index_dtype) * (height * width)
        flat = pixel.view(-1)
        for c in range(3):
            out[sl, c] = table[c].index_select(0, flat).view(-1, SIZE, SIZE)
    return out


def _class_permutation(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """source (N,): for each i, an image of the same label; a bijection within each class."""
    source = torch.empty_like(labels)
    for c in range(10):
        members = (labels == c).nonzero().squeeze(1)
        source[members] = members[torch.randperm(len(members), generator=generator)]
    return source


def generate_polymnist_arrays(
    mnist_images: torch.Tensor,
    mnist_labels: torch.Tensor,
    backgrounds: Sequence[torch.Tensor],
    num_tuples: int | None = None,
    seed: int = 0,
    split: str = "train",
    return_sources: bool = False,
):
    """PolyMNIST tuples from MNIST digits and one background per modality.

    Tuple ``i`` has the label of MNIST image ``idx[i]`` (``idx = arange(N)``, or a seeded
    sorted subset when ``num_tuples < N``); modality ``k`` shows MNIST image
    ``perm_k[idx[i]]``, with ``perm_k`` an independent random permutation within each digit
    class, so each MNIST image appears once per modality (in the full set). Modality ``k``
    draws from its own stream derived from ``(seed, split, k)``: the same seed gives
    byte-identical arrays, and modality ``k`` does not depend on how many others are made.

    Args:
        mnist_images: uint8 ``(N, 28, 28)``.
        mnist_labels: integer ``(N,)`` with values 0..9.
        backgrounds: M float tensors ``(3, H_k, W_k)`` in [0, 1].
        num_tuples: how many tuples (``<= N``); None: N.
        seed: int seed.
        split: name mixed into the seed so train and test draw different streams.
        return_sources: also return the MNIST index behind every image.

    Returns:
        ``images`` uint8 ``(num_tuples, M, 3, 28, 28)``, ``labels`` int64 ``(num_tuples,)``
        and, with ``return_sources``, ``sources`` int64 ``(num_tuples, M)``.
    """
    _check_digits(mnist_images, "mnist_images")
    if (
        not isinstance(mnist_labels, torch.Tensor)
        or mnist_labels.dim() != 1
        or mnist_labels.is_floating_point()
    ):
        raise ValueError("mnist_labels must be an integer tensor (N,)")
    if len(mnist_labels) != len(mnist_images):
        raise ValueError(f"{len(mnist_images)} mnist_images but {len(mnist_labels)} mnist_labels")
    labels = mnist_labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("mnist_labels must be digits 0..9")
    if len(backgrounds) < 1:
        raise ValueError("backgrounds must hold at least one (3, H, W) tensor, one per modality")
    for k, bg in enumerate(backgrounds):
        _check_background(bg, f"backgrounds[{k}]")
    seed = operator.index(seed)
    n = len(labels)
    if num_tuples is None:
        idx = torch.arange(n)
    else:
        num_tuples = operator.index(num_tuples)
        if not 0 <= num_tuples <= n:
            raise ValueError(f"num_tuples must be in 0..{n} (the number of MNIST images), got {num_tuples}")
        idx = torch.randperm(n, generator=_generator(seed, split, "subset"))[:num_tuples].sort().values
    images = torch.empty(len(idx), len(backgrounds), 3, SIZE, SIZE, dtype=torch.uint8)
    sources = torch.empty(len(idx), len(backgrounds), dtype=torch.long)
    for k, bg in enumerate(backgrounds):
        gen = _generator(seed, split, f"m{k}")
        sources[:, k] = _class_permutation(labels, gen)[idx]
        images[:, k] = composite_polymnist(mnist_images[sources[:, k]], bg, gen)
    if return_sources:
        return images, labels[idx].clone(), sources
    return images, labels[idx].clone()


def polymnist_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1] (value / 255)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 tensor, got {getattr(images, 'dtype', type(images))}")
    return images.float().div_(255.0)


# --------------------------------------------------------------------------- writing


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


_PNG_HEAD = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0))
_PNG_END = _png_chunk(b"IEND", b"")


def _encode_pngs(images_hwc: np.ndarray) -> list[bytes]:
    """(n, 28, 28, 3) uint8 -> n RGB PNG files (8 bit, no filter, zlib level 9).

    A direct encoder: Pillow's ``save`` costs ~3x more per tiny image, and fixed settings keep
    files byte-stable across Pillow versions.
    """
    raw = np.zeros((len(images_hwc), SIZE, 1 + 3 * SIZE), dtype=np.uint8)  # filter byte 0 per row
    raw[:, :, 1:] = images_hwc.reshape(len(images_hwc), SIZE, 3 * SIZE)
    return [_PNG_HEAD + _png_chunk(b"IDAT", zlib.compress(r.tobytes(), 9)) + _PNG_END for r in raw]


def _write_png_folder(
    folder: Path, images: torch.Tensor, labels: np.ndarray, workers: int, bar
) -> list[tuple[str, str]]:
    """Write ``images`` uint8 (N, 3, 28, 28) as ``folder/{i}.{label}.png``; (name, sha256) per file."""
    folder.mkdir(parents=True)
    hwc = images.permute(0, 2, 3, 1).numpy()
    chunk = 1000

    def work(start: int) -> list[tuple[str, str]]:
        out = []
        for j, data in enumerate(_encode_pngs(hwc[start : start + chunk])):
            name = f"{start + j}.{labels[start + j]}.png"
            with open(folder / name, "wb") as f:
                f.write(data)
            out.append((name, hashlib.sha256(data).hexdigest()))
        if bar is not None:
            bar.update(len(out))
        return out

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [item for part in pool.map(work, range(0, len(hwc), chunk)) for item in part]


def _check_split_arrays(split: str, images, labels) -> None:
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

    Everything goes to a hidden temporary sibling of ``out_dir`` that is renamed to ``out_dir``
    at the end, with the manifest written last, so an interrupted run leaves no ``out_dir``.

    Args:
        out_dir: target directory (must not exist unless ``overwrite``).
        splits: split name (e.g. ``"train"``, ``"test"``) -> (``images`` uint8
            ``(N, M, 3, 28, 28)``, ``labels`` int ``(N,)``); M equal in all splits.
        layout: ``"png"`` (``{split}/m{k}/{i}.{label}.png``), ``"pt"`` (``{split}/m{k}.pt``
            uint8 ``(N, 3, 28, 28)`` and ``{split}/labels.pt`` int64 ``(N,)``) or ``"both"``.
        metadata: extra JSON-serialisable entries for the manifest (seed, sources, ...).
        overwrite: replace an existing ``out_dir``.
        progress: tqdm bar over the files written.
        workers: threads encoding and writing PNGs.

    Returns:
        ``out_dir`` as a Path.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
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
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    bar = None
    try:
        if progress and layout != "pt":
            from tqdm.auto import tqdm

            total = sum(len(im) * im.shape[1] for im, _ in splits.values())
            bar = tqdm(total=total, desc="PolyMNIST PNG", unit="img")
        sums: list[tuple[str, str]] = []
        counts = {}
        for split, (images, labels) in splits.items():
            labels = labels.long()
            lab_np = labels.numpy()
            (tmp / split).mkdir()
            counts[split] = {
                "tuples": len(labels),
                "label_counts": torch.bincount(labels, minlength=10).tolist(),
            }
            for k in range(num_mods):
                if layout in ("png", "both"):
                    written = _write_png_folder(tmp / split / f"m{k}", images[:, k], lab_np, workers, bar)
                    sums += [(f"{split}/m{k}/{name}", digest) for name, digest in written]
                if layout in ("pt", "both"):
                    torch.save(images[:, k].clone(), tmp / split / f"m{k}.pt")
                    sums.append((f"{split}/m{k}.pt", _sha256_file(tmp / split / f"m{k}.pt")))
            if layout in ("pt", "both"):
                torch.save(labels.clone(), tmp / split / "labels.pt")
                sums.append((f"{split}/labels.pt", _sha256_file(tmp / split / "labels.pt")))
        if bar is not None:
            bar.close()
        (tmp / CHECKSUMS).write_text("".join(f"{digest}  {path}\n" for path, digest in sums))
        manifest = {
            "dataset": "PolyMNIST (pyro_mcvae)",
            "recipe_version": RECIPE_VERSION,
            "layout": layout,
            "modalities": [f"m{k}" for k in range(num_mods)],
            "splits": counts,
            "checksums": {"file": CHECKSUMS, "files": len(sums), "sha256": _sha256_file(tmp / CHECKSUMS)},
            **dict(metadata or {}),
        }
        finish_dataset(tmp, out_dir, manifest)
    except BaseException:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def generate_polymnist(
    out_dir: str | os.PathLike,
    mnist_dir: str | os.PathLike | None = None,
    backgrounds_dir: str | os.PathLike | None = None,
    num_modalities: int = 5,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    download: bool = False,
    layout: str = "png",
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 2,
) -> Path:
    """Build PolyMNIST from MNIST and the backgrounds and write it to ``out_dir``.

    Args:
        out_dir: target directory (see :func:`write_polymnist`).
        mnist_dir: folder with the MNIST IDX files; None: ``find_data_root()/mnist``.
        backgrounds_dir: folder with the photographs; None: ``find_data_root()/polymnist/backgrounds``.
        num_modalities: M, 1..9 (m0..m4 are the five of the published set's order).
        seed: int; the same seed gives the same images.
        num_train, num_test: tuples per split (a seeded subset); None: all 60,000 / 10,000.
        download: fetch MNIST from the public mirrors when missing.
        layout: ``"png"``, ``"pt"`` or ``"both"``.
        progress: tqdm bar.
        overwrite: replace an existing ``out_dir``.
        workers: threads writing PNGs.

    Returns:
        ``out_dir`` as a Path; its ``manifest.json`` records seed, counts, backgrounds with
        their sha256, the MNIST files with theirs, and the package version.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    data_root = find_data_root()
    missing = []
    if mnist_dir is None:
        if data_root is not None and (data_root / "mnist").is_dir():
            mnist_dir = data_root / "mnist"
        elif not download:
            missing.append("MNIST: pass mnist_dir=... (command line: --mnist-dir DIR) with the four IDX files")
    shared_backgrounds = data_root is not None and (data_root / "polymnist" / "backgrounds").is_dir()
    if backgrounds_dir is None and not shared_backgrounds:
        missing.append("backgrounds: pass backgrounds_dir=... (command line: --backgrounds-dir DIR)")
    if missing:
        raise DataNotFoundError(
            "PolyMNIST needs MNIST and the background photographs, and no shared data directory was "
            f"found (set {DATA_ENV_VAR} to a directory holding mnist/ and polymnist/backgrounds/, or "
            "pass the folders). Missing: " + "; ".join(missing)
        )
    backgrounds_dir = _resolve_backgrounds_dir(backgrounds_dir)
    backgrounds = load_backgrounds(backgrounds_dir, num_modalities)
    splits, mnist_sources = {}, {}
    for split, count in (("train", num_train), ("test", num_test)):
        images, labels = load_mnist(mnist_dir, split=split, download=download)
        splits[split] = generate_polymnist_arrays(images, labels, backgrounds, count, seed, split)
        for stem, _ in MNIST_FILES[split] if mnist_dir is not None else ():
            path = _locate(Path(mnist_dir).expanduser(), stem)
            if path is not None:
                mnist_sources[path.name] = _sha256_file(path)
    metadata = {
        "seed": seed,
        "generator": "torch.Generator per (seed, split, modality), seeds derived by SHA-256",
        "recipe": {
            "crop": "uniform random 28x28 window of the modality's background, RGB / 255",
            "digit": "binarised at MNIST pixel value > 128",
            "on_digit": "x -> 1 - x in all three channels",
            "uint8": "floor(255 * y + 0.5)",
            "tuples": "label of MNIST image i; modality k uses an independent permutation within each class",
        },
        "backgrounds": {
            f"m{k}": {"file": name, "sha256": _sha256_file(backgrounds_dir / name)}
            for k, name in enumerate(POLYMNIST_BACKGROUNDS[:num_modalities])
        },
        "mnist_files": mnist_sources,
    }
    return write_polymnist(out_dir, splits, layout, metadata, overwrite, progress, workers)


# --------------------------------------------------------------------------- loading


@dataclass
class PolyMNISTData:
    """One split: ``images`` uint8 ``(N, M, 3, 28, 28)``, ``labels`` int64 ``(N,)``, modality names."""

    images: torch.Tensor
    labels: torch.Tensor
    modalities: list[str]

    def __len__(self) -> int:
        return len(self.labels)


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


def _decode_png(path: Path) -> np.ndarray:
    """One PNG file -> uint8 (28, 28, 3); ValueError naming the file otherwise."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            fmt, size, mode = im.format, im.size, im.mode
            arr = np.asarray(im)
    except FileNotFoundError:
        raise ValueError(f"{path}: file is missing") from None
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated PNG ({err})") from None
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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"PolyMNIST {split_dir.name}", unit="img")
    chunk = 2000

    def work(start: int) -> None:
        part = jobs[start : start + chunk]
        for j, i, path in part:
            out[i, j] = _decode_png(path)
        if bar is not None:
            bar.update(len(part))

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(work, range(0, len(jobs), chunk)))
    finally:
        if bar is not None:
            bar.close()
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
            x = torch.floor(255 * x + 0.5).clamp_(0, 255).to(torch.uint8)
        elif x.dtype != torch.uint8:
            raise ValueError(f"{path}: dtype {x.dtype}, expected uint8 or float in [0, 1]")
        images.append(x)
    return torch.stack(images, 1), labels


def _available_modalities(split_dir: Path, layout: str) -> list[int]:
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


# --------------------------------------------------------------------------- verification


def verify_polymnist(root: str | os.PathLike, progress: bool = False) -> None:
    """Check every data file under ``root`` against ``SHA256SUMS`` and ``manifest.json``.

    Raises:
        ValueError: naming the first missing, changed or unlisted file, or an incomplete set.
    """
    root = Path(root).expanduser()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{manifest_path} is missing: not a complete PolyMNIST directory (interrupted generation?)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{manifest_path}: unreadable manifest ({err})") from None
    if manifest.get("complete") is not True:
        raise ValueError(f"{manifest_path}: the set is not marked complete")
    sums_path = root / manifest["checksums"]["file"]
    if not sums_path.is_file():
        raise ValueError(f"{sums_path} is missing (listed in {manifest_path})")
    if _sha256_file(sums_path) != manifest["checksums"]["sha256"]:
        raise ValueError(f"{sums_path} was modified: its sha256 differs from the one in {manifest_path}")
    listed = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{sums_path}, line {number}: expected '<sha256>  <path>', got {line!r}")
        listed[rel] = digest
    if len(listed) != manifest["checksums"]["files"]:
        expected = manifest["checksums"]["files"]
        raise ValueError(f"{sums_path} lists {len(listed)} files, the manifest says {expected}")
    items = listed.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(listed), desc="verify PolyMNIST", unit="file")
    for rel, digest in items:
        path = root / rel
        if not path.is_file():
            raise ValueError(f"{path} is missing (listed in {sums_path})")
        if _sha256_file(path) != digest:
            raise ValueError(f"{path} was modified: sha256 differs from {sums_path}")
    for split in manifest.get("splits", {}):
        for dirpath, _, files in os.walk(root / split):
            for name in files:
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if not name.startswith(".") and rel not in listed:
                    raise ValueError(f"{root / rel} is not listed in {sums_path} (an extra file)")


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m pyro_mcvae.data.polymnist", description="Generate PolyMNIST (seeded)."
    )
    p.add_argument("out_dir")
    p.add_argument("--mnist-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--backgrounds-dir", default=None, help="folder with the background photographs")
    p.add_argument("--num-modalities", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--layout", choices=_LAYOUTS, default="png")
    p.add_argument("--download", action="store_true", help="fetch MNIST from the public mirrors")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verify", action="store_true", help="only check an existing out_dir against its manifest")
    args = p.parse_args(argv)
    if args.verify:
        verify_polymnist(args.out_dir, progress=True)
        print(f"{args.out_dir}: all files match {CHECKSUMS}")
        return
    start = time.perf_counter()
    out = generate_polymnist(
        args.out_dir, args.mnist_dir, args.backgrounds_dir, args.num_modalities, args.seed,
        args.num_train, args.num_test, args.download, args.layout, overwrite=args.overwrite,
    )
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
