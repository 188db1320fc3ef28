"""Bicycle assemblies in memory: sampled geometry, rendered and quantised to uint8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .._store import to_uint8
from .geometry import BikeGeometry, sample_bike_geometry
from .laws import COMPONENTS
from .render import render_bikes

__all__ = ["BikeAssemblies", "BikeSplits", "generate_bike_assemblies", "make_bike_splits"]


@dataclass
class BikeAssemblies:
    """``images`` uint8 ``(n, 5, size, size)`` (ink 255 on 0, ``COMPONENTS`` order), the geometry
    behind them, ``labels`` int64 ``(n,)`` (index into ``BIKE_TYPES``) and how they were made."""

    images: torch.Tensor
    geometry: BikeGeometry
    labels: torch.Tensor
    seed: int | None = None
    stream: str = ""
    components: tuple[str, ...] = COMPONENTS

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self) -> torch.Tensor:
        """float32 ``(n, 5, size, size)`` in [0, 1] (value / 255)."""
        return self.images.float().div_(255.0)


class BikeSplits(NamedTuple):
    train: BikeAssemblies
    test: BikeAssemblies


def generate_bike_assemblies(
    n: int, seed: int = 0, size: int = 64, supersample: int = 4, spokes: int = 3, stream: str = ""
) -> BikeAssemblies:
    """Sample ``n`` designs and render them (see :func:`sample_bike_geometry`, :func:`render_bikes`).

    Images are stored as uint8 ``floor(255 x + 0.5)``, exactly what the PNG files hold.
    """
    geometry = sample_bike_geometry(n, seed, stream)
    images = to_uint8(render_bikes(geometry, size, supersample, spokes))
    return BikeAssemblies(images, geometry, torch.as_tensor(geometry.type_index), seed, stream)


def make_bike_splits(n_train: int, n_test: int, seed: int = 0, **kwargs) -> BikeSplits:
    """Train and test assemblies from the independent streams ``(seed, "train")`` and ``(seed, "test")``.

    ``kwargs`` go to :func:`generate_bike_assemblies` (``size``, ``supersample``, ``spokes``).
    """
    return BikeSplits(
        generate_bike_assemblies(n_train, seed, stream="train", **kwargs),
        generate_bike_assemblies(n_test, seed, stream="test", **kwargs),
    )
