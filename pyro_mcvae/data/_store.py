"""The storage layer shared by the data sets written to disk (bicycle assemblies, PolyMNIST).

One implementation each of:

- the checksummed, atomic data set writer (:class:`DatasetWriter`): files go to a hidden
  temporary sibling of the target, then ``SHA256SUMS`` (``sha256sum -c`` format, one line per
  data file in writing order), then ``manifest.json`` (last, with ``"complete": true``), then
  one rename into place, so a reader sees the old data set or the new one, never half of one;
- the verifier (:func:`verify_dataset`): re-hashes every listed file and names the first
  missing, changed or unlisted one;
- the PNG codec (:func:`encode_pngs`, :func:`read_image`) and the uint8 quantisation the PNG
  files hold (:func:`to_uint8`);
- seed derivation (:func:`derive_seed`) and the chunked thread pool the readers and writers use.

The byte layout of everything written here is part of the data sets' identity: a change to
:func:`encode_pngs`, :func:`derive_seed` or the ``SHA256SUMS`` format changes the checksums of
data sets already on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"

# --------------------------------------------------------------------------- seeds and values


def derive_seed(namespace: str, seed, *tags: str) -> int:
    """A 63-bit seed for the stream named ``namespace/seed/tag/...``, independent of the others.

    The first 8 bytes of the SHA-256 of that text, little-endian, shifted right by one bit (so
    it fits a signed 64-bit integer). ``namespace`` keeps data sets apart (bikes use
    ``"pyro_mcvae.bikes"``, PolyMNIST ``"pyro_mcvae.polymnist"``); changing it, or how the text
    is joined, changes every generated image.
    """
    text = "/".join([namespace, str(seed), *tags]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (any shape) -> uint8 ``floor(255 x + 0.5)`` clamped to 0..255.

    Round half up, as torchvision's ``save_image``: the values the PNG files hold.
    """
    return torch.floor(255 * images + 0.5).clamp_(0, 255).to(torch.uint8)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- threads and progress


@contextmanager
def progress_bar(enabled: bool, total: int, desc: str, unit: str) -> Iterator:
    """A tqdm bar (closed on leaving, also on error), or None when not ``enabled``."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit)
    try:
        yield bar
    finally:
        bar.close()


def map_chunks(work: Callable[[int, int], list | None], total: int, chunk: int, workers: int, bar=None) -> list:
    """Run ``work(start, stop)`` over ``0..total`` in chunks on ``workers`` threads.

    Threads pay off because file I/O, zlib and PIL decoding release the GIL. Returns the lists
    the calls return, concatenated in chunk order (so results keep the order of the input);
    ``bar`` advances by each chunk's length.
    """

    def run(start: int) -> list:
        stop = min(start + chunk, total)
        out = work(start, stop)
        if bar is not None:
            bar.update(stop - start)
        return out or []

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [item for part in pool.map(run, range(0, total, chunk)) for item in part]


# --------------------------------------------------------------------------- PNG


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC-32 of tag and data."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = png_chunk(b"IEND", b"")


def encode_pngs(images: np.ndarray) -> list[bytes]:
    """uint8 ``(n, h, w)`` (grayscale) or ``(n, h, w, 3)`` (RGB) -> ``n`` PNG files.

    8 bits per sample, filter 0 (none) on every row, one IDAT compressed by zlib at level 9.
    A direct encoder: Pillow's ``save`` costs ~3x more per tiny image, and these fixed settings
    keep the files byte-stable across Pillow and platform versions (the checksums of written
    data sets depend on it).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise ValueError(f"expected uint8 (n, h, w) or (n, h, w, 3), got {images.dtype} {images.shape}")
    n, h, w = images.shape[:3]
    colour = 0 if images.ndim == 3 else 2  # PNG colour types: 0 grayscale, 2 RGB
    head = _PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    row = w if colour == 0 else 3 * w
    raw = np.zeros((n, h, 1 + row), np.uint8)  # column 0: the filter byte of each row
    raw[:, :, 1:] = images.reshape(n, h, row)
    return [head + png_chunk(b"IDAT", zlib.compress(r.tobytes(), 9)) + _PNG_END for r in raw]


def pillow():
    """The ``PIL.Image`` module, with an install hint when Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with torchvision
        raise ImportError("reading images needs Pillow: pip install pillow") from None
    return Image


# What a damaged file makes Pillow raise (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, zlib.error)


def read_image(path: str | os.PathLike, read: Callable, damaged: str):
    """Open ``path`` with Pillow, decode it fully and return ``read(image)``.

    Errors name the file: ``"{path}: file is missing"``, or ``"{path}: {damaged} ({error})"``
    for anything Pillow (or ``read``) raises on a damaged file.
    """
    Image = pillow()
    try:
        with Image.open(path) as im:
            im.load()
            return read(im)
    except FileNotFoundError:
        raise ValueError(f"{path}: file is missing") from None
    except _DECODE_ERRORS as err:
        raise ValueError(f"{path}: {damaged} ({err})") from None


# --------------------------------------------------------------------------- writing


def commit_directory(tmp: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Move a finished temporary folder ``tmp`` (on the same file system) to ``out_dir``. An
    existing ``out_dir`` is first moved aside and deleted only after the rename, so a reader
    never sees a half-written data set under ``out_dir``."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "data")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def finish_dataset(tmp: str | os.PathLike, out_dir: str | os.PathLike, manifest: dict,
                   libraries=("torch", "numpy", "pillow")) -> Path:
    """Complete a data set written in ``tmp``: ``manifest.json`` last (with the package and
    library versions that shape the bytes, the time and ``"complete": true``), then
    :func:`commit_directory` to ``out_dir``."""
    # Imported here: the package __init__ imports the data package, which imports this module.
    from .. import __version__
    from ..provenance import versions

    manifest = dict(manifest) | {"package_version": __version__, "versions": versions(libraries),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": True}
    (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return commit_directory(tmp, out_dir)


class DatasetWriter:
    """Write a data set into a hidden temporary sibling of ``out_dir``, renamed into place last.

    Usage::

        with DatasetWriter(out_dir, overwrite) as out:
            out.write_pngs("frame", names, images)      # records every file's sha256
            out.write("geometry.csv", data)
            out.commit({..., "checksums": out.write_checksums()})

    Leaving the block by an exception (``KeyboardInterrupt`` included), or without
    :meth:`commit`, deletes the temporary folder: an interrupted run leaves no ``out_dir`` (or
    the old one, untouched).

    Raises:
        FileExistsError: ``out_dir`` exists and not ``overwrite``.
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False):
        self.out_dir = Path(out_dir).expanduser().absolute()
        if self.out_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.out_dir} already exists; pass overwrite=True (--overwrite) to replace it")
        self.sums: list[tuple[str, str]] = []  # (path relative to the data set, sha256), in writing order
        self.tmp: Path | None = None
        self._committed = False

    def __enter__(self) -> "DatasetWriter":
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A sibling, so that the final rename stays on one file system (atomic).
        self.tmp = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.partial-"))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` (a ``/``-separated path inside the data set) and record it."""
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.sums.append((rel, hashlib.sha256(data).hexdigest()))

    def save_torch(self, rel: str, obj) -> None:
        """``torch.save(obj)`` to ``rel`` and record it."""
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
        self.sums.append((rel, sha256_file(path)))

    def write_pngs(self, folder: str, names: Sequence[str], images: np.ndarray, workers: int = 2, bar=None) -> None:
        """Write ``images`` uint8 ``(n, h, w)`` or ``(n, h, w, 3)`` as ``folder/{names[i]}`` PNGs.

        Encoded and written on ``workers`` threads in chunks of 1000; recorded in index order.
        """
        target = self.tmp / folder
        target.mkdir(parents=True, exist_ok=True)

        def work(start: int, stop: int) -> list[tuple[str, str]]:
            out = []
            for name, data in zip(names[start:stop], encode_pngs(images[start:stop])):
                (target / name).write_bytes(data)
                out.append((f"{folder}/{name}", hashlib.sha256(data).hexdigest()))
            return out

        self.sums += map_chunks(work, len(images), 1000, workers, bar)

    def write_checksums(self) -> dict:
        """Write ``SHA256SUMS`` (``{sha256}  {path}`` per recorded file) and return the manifest
        entry ``{"file", "files", "sha256"}`` that pins it."""
        text = "".join(f"{digest}  {rel}\n" for rel, digest in self.sums).encode()
        (self.tmp / CHECKSUMS).write_bytes(text)
        return {"file": CHECKSUMS, "files": len(self.sums), "sha256": hashlib.sha256(text).hexdigest()}

    def commit(self, manifest: dict) -> Path:
        """Write ``manifest.json`` (see :func:`finish_dataset`) and rename the set into place."""
        finish_dataset(self.tmp, self.out_dir, manifest)
        self._committed = True
        return self.out_dir


# --------------------------------------------------------------------------- verifying


def _read_checksums(sums_path: Path) -> dict[str, str]:
    """``SHA256SUMS`` -> {relative path: sha256}, in file order; ValueError on a malformed line."""
    listed = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{sums_path}, line {number}: expected '<sha256>  <path>', got {line!r}")
        listed[rel] = digest
    return listed


def verify_dataset(root: str | os.PathLike, incomplete: str, folders_key: str, progress: bool = False,
                   desc: str = "verify") -> dict:
    """Check every file of a data set written by :class:`DatasetWriter` and return its manifest.

    The manifest must exist and say ``"complete": true``; ``SHA256SUMS`` must have the sha256
    the manifest pins and list as many files as it says; every listed file must exist with its
    sha256; and no other file may stand in the folders named by ``manifest[folders_key]``
    (names starting with ``.`` are ignored: caches, partial files).

    Args:
        root: the data set's folder.
        incomplete: what a folder without manifest is not, e.g. ``"bike set (interrupted writing?)"``.
        folders_key: manifest entry naming the data folders (``"components"``, ``"splits"``).
        progress: tqdm bar over the files hashed, labelled ``desc``.

    Raises:
        ValueError: naming the first missing, changed or unlisted file, or an incomplete set.
    """
    root = Path(root).expanduser()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} is missing: not a complete {incomplete}")
    try:
        manifest = json.loads(manifest_path.read_text())
        check = manifest["checksums"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{manifest_path}: unreadable manifest ({err})") from None
    if manifest.get("complete") is not True:
        raise ValueError(f"{manifest_path}: the set is not marked complete")
    sums_path = root / check["file"]
    if not sums_path.is_file():
        raise ValueError(f"{sums_path} is missing (listed in {manifest_path})")
    if sha256_file(sums_path) != check["sha256"]:
        raise ValueError(f"{sums_path} was modified: its sha256 differs from the one in {manifest_path}")
    listed = _read_checksums(sums_path)
    if len(listed) != check["files"]:
        raise ValueError(f"{sums_path} lists {len(listed)} files, the manifest says {check['files']}")
    with progress_bar(progress, len(listed), desc, "file") as bar:
        for rel, digest in listed.items():
            path = root / rel
            if not path.is_file():
                raise ValueError(f"{path} is missing (listed in {sums_path})")
            if sha256_file(path) != digest:
                raise ValueError(f"{path} was modified: sha256 differs from {sums_path}")
            if bar is not None:
                bar.update()
    for folder in manifest.get(folders_key, []):
        for dirpath, dirnames, files in os.walk(root / folder):
            dirnames.sort()  # sorted walk: the same extra file is named first on every system
            for name in sorted(files):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if not name.startswith(".") and rel not in listed:
                    raise ValueError(f"{root / rel} is not listed in {sums_path} (an extra file)")
    return manifest
