"""The PolyMNIST recipe: backgrounds, compositing and the seeded tuples, all in memory.

Shapes: MNIST digits uint8 ``(N, 28, 28)``; a background float ``(3, H, W)`` in [0, 1]; a
modality's images uint8 ``(N, 3, 28, 28)``; a split uint8 ``(N, M, 3, 28, 28)`` with labels
int64 ``(N,)``. The recipe itself is stated in the package docstring.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._store import derive_seed, pillow, to_uint8
from ..mnist import DATA_ENV_VAR, DataNotFoundError, find_data_root

__all__ = [
    "POLYMNIST_BACKGROUNDS",
    "RECIPE_VERSION",
    "SIZE",
    "composite_polymnist",
    "generate_polymnist_arrays",
    "load_backgrounds",
    "polymnist_to_float",
    "resolve_backgrounds_dir",
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

#: The random streams are named ``pyro_mcvae.polymnist/{seed}/{split}/{tag}``.
SEED_NAMESPACE = "pyro_mcvae.polymnist"


def _generator(seed: int, *tags: str) -> torch.Generator:
    """A torch generator for one named stream (split, modality), independent of the others."""
    return torch.Generator().manual_seed(derive_seed(SEED_NAMESPACE, seed, *tags))


# --------------------------------------------------------------------------- backgrounds


def _backgrounds_hint() -> str:
    return (
        "pass backgrounds_dir=... (command line: --backgrounds-dir DIR) pointing at the folder "
        f"with the PolyMNIST background photographs ({', '.join(POLYMNIST_BACKGROUNDS[:5])}, ...), "
        f"or set {DATA_ENV_VAR} to a directory holding polymnist/backgrounds/"
    )


def resolve_backgrounds_dir(directory: str | os.PathLike | None) -> Path:
    """The folder holding the photographs: ``directory`` itself, or its ``polymnist/backgrounds``
    when it is a data root; None: the shared data root's (DataNotFoundError when there is none)."""
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
    directory = resolve_backgrounds_dir(directory)
    Image = pillow()
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
    plain = to_uint8(background)
    inverted = to_uint8(1 - background)
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
