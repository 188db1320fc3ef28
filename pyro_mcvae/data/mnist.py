"""MNIST from its IDX files, and where the project's shared reference data lives.

The IDX format (big-endian throughout): two zero bytes, one byte naming the element type
(``0x08`` = unsigned byte), one byte with the number of dimensions, one uint32 per dimension,
then the elements in C order. MNIST images have magic number 2051 (``0x00000803``, shape
``(N, 28, 28)``) and labels 2049 (``0x00000801``, shape ``(N,)``). Files may be gzipped.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataNotFoundError",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "find_data_root",
    "load_mnist",
    "locate_mnist_file",
    "parse_idx",
]

#: Environment variable naming the shared data directory (holding ``mnist/`` and ``polymnist/``).
DATA_ENV_VAR = "PYRO_MCVAE_DATA"

#: Mirrors tried in order by :func:`load_mnist` with ``download=True``.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

#: The four gzipped IDX files per split, with the MD5 published alongside them.
MNIST_FILES = {
    "train": (
        ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
}

_IMAGE_MAGIC = 0x00000803
_LABEL_MAGIC = 0x00000801
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class DataNotFoundError(FileNotFoundError):
    """Data files are missing; the message says which argument, flag or variable to set."""


def _mnist_hint(offer_download: bool = True) -> str:
    hint = (
        "pass mnist_dir=... (command line: --mnist-dir DIR) pointing at a directory with the four "
        "MNIST IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (plain or gzipped; a torchvision "
        f"MNIST/raw/ folder works), or set {DATA_ENV_VAR} to a directory holding mnist/"
    )
    return hint + (", or pass download=True on a machine with internet access" if offer_download else "")


def find_data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The shared reference-data directory, or None when there is none.

    Looks at, in order: ``explicit``; the environment variable ``PYRO_MCVAE_DATA``;
    ``<repo root>/../shared/data`` where the repo root is the parent of the ``pyro_mcvae``
    package directory. The first two must exist when given (a ``DataNotFoundError`` says so);
    the last is used only if it exists.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"data directory {str(path)!r} does not exist or is not a directory")
        return path
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(
                f"{DATA_ENV_VAR}={env!r} does not name a directory; unset it or point it at the "
                "shared data directory (the one holding mnist/ and polymnist/)"
            )
        return path
    repo_root = Path(__file__).resolve().parents[2]
    candidate = repo_root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def default_cache_dir() -> Path:
    """Where downloads go when no directory is given: ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyro_mcvae" / "mnist"


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        if path.suffix == ".gz":
            raise ValueError(f"{path}: the name ends in .gz but the file is not gzip data")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from None


def parse_idx(data: bytes, name: str = "<bytes>", expected_magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array of the stored shape.

    Args:
        data: the file contents.
        name: the file name, used in error messages.
        expected_magic: the full 4-byte magic as an int (2051 for MNIST images, 2049 for labels),
            or None to accept any valid IDX type.

    Returns:
        array of the stored shape and type (uint8 for MNIST), read-only view of ``data``.

    Raises:
        ValueError: bad magic number, unknown element type, or a byte count that does not match
            the header (truncated or with trailing bytes).
    """
    if len(data) < 4:
        raise ValueError(f"{name}: {len(data)} bytes, too short for an IDX header (expected >= 4)")
    magic = struct.unpack(">I", data[:4])[0]
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{name}: IDX magic number {magic:#010x}, expected {expected_magic:#010x} "
            f"({'images' if expected_magic == _IMAGE_MAGIC else 'labels'}); is this the right file?"
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{name}: {magic:#010x} is not an IDX magic number (00 00 <type> <ndim>)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated header, {len(data)} bytes, expected >= {header}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: {kind}: header says shape {tuple(dims)} ({expected} data bytes), "
            f"file has {got} data bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _split_prefix(split: str) -> str:
    if split not in ("train", "test", "t10k"):
        raise ValueError(f"split must be 'train' or 'test' (or 't10k'), got {split!r}")
    return "train" if split == "train" else "test"


def locate_mnist_file(root: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` (or ``stem.gz``) under ``root``, ``root/mnist`` or ``root/MNIST/raw``; None if absent."""
    for folder in (root, root / "mnist", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _download(root: Path, stem: str, md5: str, mirrors=MNIST_MIRRORS, timeout: float = 60.0) -> Path:
    """Fetch ``stem.gz`` into ``root`` from the first mirror whose copy has the published MD5."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / (stem + ".gz")
    failures = []
    for mirror in mirrors:
        url = mirror + stem + ".gz"
        fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{stem}.", suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != md5:
                failures.append(f"{url}: MD5 {digest.hexdigest()}, expected {md5}")
                continue
            os.replace(tmp_name, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as err:
            failures.append(f"{url}: {err}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise DataNotFoundError(
        f"could not download {stem}.gz into {root} ({'; '.join(failures)}). Without internet access, "
        + _mnist_hint(offer_download=False)
    )


def load_mnist(
    root: str | os.PathLike | None = None, split: str = "train", download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits and labels from IDX files.

    Args:
        root: a directory holding the IDX files (``.gz`` or plain), directly or under ``mnist/``
            or ``MNIST/raw/`` (torchvision's layout). None: ``find_data_root()/mnist`` when the
            shared data exists, else the download cache ``~/.cache/pyro_mcvae/mnist``.
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000, the ``t10k`` files).
        download: fetch missing files from the public mirrors into ``root`` (MD5-checked,
            written atomically).

    Returns:
        ``images`` uint8 ``(N, 28, 28)`` and ``labels`` int64 ``(N,)`` with values in 0..9.

    Raises:
        DataNotFoundError: files missing (and not downloadable); the message names what to pass.
        ValueError: a file that is not valid MNIST IDX data (the message names the file).
    """
    prefix = _split_prefix(split)
    if root is None:
        shared = find_data_root()
        root = shared / "mnist" if shared is not None and (shared / "mnist").is_dir() else default_cache_dir()
    root = Path(root).expanduser()
    paths = []
    for stem, md5 in MNIST_FILES[prefix]:
        path = locate_mnist_file(root, stem)
        if path is None:
            if not download:
                raise DataNotFoundError(
                    f"MNIST file {stem}[.gz] not found in {root} (nor in its mnist/ or MNIST/raw/); "
                    + _mnist_hint()
                )
            path = _download(root, stem, md5)
        paths.append(path)
    images = parse_idx(_read_maybe_gzip(paths[0]), str(paths[0]), _IMAGE_MAGIC)
    labels = parse_idx(_read_maybe_gzip(paths[1]), str(paths[1]), _LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"{paths[0]}: images of shape {images.shape} and type {images.dtype}, expected (N, 28, 28) uint8"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{paths[1]}: labels of shape {labels.shape} and type {labels.dtype}, expected (N,) uint8"
        )
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{paths[1]}: label {int(labels.max())} found, expected digits 0..9")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
