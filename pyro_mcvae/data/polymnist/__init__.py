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

Modules, by job: :mod:`.generate` (the recipe in memory: backgrounds, compositing, seeded
tuples), :mod:`.store` (writer and verifier of both layouts), :mod:`.build` (MNIST and
backgrounds to a written data set), :mod:`.load` (reading both layouts, with the PNG cache),
:mod:`.cli` (the command line).
"""

# Besides __all__, the constants and main() stay importable from here, as when this was one module.
from .._store import CHECKSUMS, MANIFEST
from .build import generate_polymnist
from .cli import main
from .generate import (
    POLYMNIST_BACKGROUNDS,
    RECIPE_VERSION,
    SIZE,
    SPLITS,
    THRESHOLD,
    composite_polymnist,
    generate_polymnist_arrays,
    load_backgrounds,
    polymnist_to_float,
)
from .load import PolyMNISTData, load_polymnist
from .store import verify_polymnist, write_polymnist

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
