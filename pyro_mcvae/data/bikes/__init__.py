"""Bicycle assemblies: five component images per design, procedural or BIKED-style from disk.

Components, in this order everywhere: ``COMPONENTS = ("saddle", "frame", "crank", "wheels",
"handlebars")``. Every image is ``(size, size)`` grayscale with ink 1 on background 0 (uint8:
255 on 0), all five of a design drawn in one common frame, so that their overlay is the bike.

The data, the laws of every parameter, the dependencies between them, the rendering and the
files on disk are specified in ``docs/data/bikes.md``. Modules, by job:

- :mod:`.laws`: the parameter tables; :mod:`.geometry`: :class:`BikeGeometry`,
  :func:`sample_bike_geometry`, millimetre/pixel conversions;
- :mod:`.shapes` and :mod:`.render`: :func:`render_bikes`, vectorised anti-aliased drawing;
- :mod:`.assemblies`: :func:`generate_bike_assemblies`, :func:`make_bike_splits`;
- :mod:`.store`: :func:`write_bike_assemblies`, :func:`verify_bike_assemblies`,
  :func:`read_bike_geometry`;
- :mod:`.biked`: :func:`load_component_images` (BIKED-style folders);
- :mod:`.cli`: ``python -m pyro_mcvae.data.bikes OUT_DIR [--num-train 10000] [--num-test 2000]
  [--seed 0]``.
"""

# Besides __all__, the constants and main() stay importable from here, as when this was one module.
from .._store import CHECKSUMS, MANIFEST
from .assemblies import BikeAssemblies, BikeSplits, generate_bike_assemblies, make_bike_splits
from .biked import IMAGE_EXTENSIONS, ComponentImages, load_component_images
from .cli import main
from .geometry import (
    FRAME_SIZE,
    GROUND_ROW,
    MM_PER_PIXEL,
    ORIGIN_X,
    BikeGeometry,
    mm_to_pixels,
    pixels_to_mm,
    sample_bike_geometry,
)
from .laws import BAR_STYLES, BIKE_TYPES, COMPONENTS, GENERATOR_VERSION
from .render import render_bikes
from .store import GEOMETRY_CSV, read_bike_geometry, verify_bike_assemblies, write_bike_assemblies

__all__ = [
    "BAR_STYLES",
    "BIKE_TYPES",
    "COMPONENTS",
    "MM_PER_PIXEL",
    "BikeAssemblies",
    "BikeGeometry",
    "BikeSplits",
    "ComponentImages",
    "generate_bike_assemblies",
    "load_component_images",
    "make_bike_splits",
    "mm_to_pixels",
    "pixels_to_mm",
    "read_bike_geometry",
    "render_bikes",
    "sample_bike_geometry",
    "verify_bike_assemblies",
    "write_bike_assemblies",
]
