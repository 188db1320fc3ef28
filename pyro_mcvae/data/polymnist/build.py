"""PolyMNIST from its sources to disk: MNIST and the background photographs in, a checksummed
data set out (:func:`generate_polymnist`, the command line's work)."""

from __future__ import annotations

import os
from pathlib import Path

from .._store import sha256_file
from ..mnist import DATA_ENV_VAR, MNIST_FILES, DataNotFoundError, find_data_root, load_mnist, locate_mnist_file
from .generate import POLYMNIST_BACKGROUNDS, generate_polymnist_arrays, load_backgrounds, resolve_backgrounds_dir
from .store import LAYOUTS, write_polymnist

__all__ = ["generate_polymnist"]


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
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
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
    backgrounds_dir = resolve_backgrounds_dir(backgrounds_dir)
    backgrounds = load_backgrounds(backgrounds_dir, num_modalities)
    splits, mnist_sources = {}, {}
    for split, count in (("train", num_train), ("test", num_test)):
        images, labels = load_mnist(mnist_dir, split=split, download=download)
        splits[split] = generate_polymnist_arrays(images, labels, backgrounds, count, seed, split)
        for stem, _ in MNIST_FILES[split] if mnist_dir is not None else ():
            path = locate_mnist_file(Path(mnist_dir).expanduser(), stem)
            if path is not None:
                mnist_sources[path.name] = sha256_file(path)
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
            f"m{k}": {"file": name, "sha256": sha256_file(backgrounds_dir / name)}
            for k, name in enumerate(POLYMNIST_BACKGROUNDS[:num_modalities])
        },
        "mnist_files": mnist_sources,
    }
    return write_polymnist(out_dir, splits, layout, metadata, overwrite, progress, workers)
