"""Synthetic data sets."""

from .copula import (
    CopulaDataset,
    copula_correlation,
    copula_spearman,
    make_copula_splits,
    sample_copula,
)

from .bikes import (
    BIKE_TYPES,
    COMPONENTS,
    BikeAssemblies,
    BikeGeometry,
    ComponentImages,
    generate_bike_assemblies,
    load_component_images,
    make_bike_splits,
    render_bikes,
    sample_bike_geometry,
    verify_bike_assemblies,
    write_bike_assemblies,
)
from .heavy_tails import HeavyTailDataset, make_heavy_tail_splits, sample_skew_t
from .mnist import DataNotFoundError, find_data_root, load_mnist
from .polymnist import (
    POLYMNIST_BACKGROUNDS,
    PolyMNISTData,
    composite_polymnist,
    generate_polymnist,
    generate_polymnist_arrays,
    load_backgrounds,
    load_polymnist,
    polymnist_to_float,
    verify_polymnist,
    write_polymnist,
)

__all__ = [
    "BIKE_TYPES",
    "COMPONENTS",
    "BikeAssemblies",
    "BikeGeometry",
    "ComponentImages",
    "generate_bike_assemblies",
    "load_component_images",
    "make_bike_splits",
    "render_bikes",
    "sample_bike_geometry",
    "verify_bike_assemblies",
    "write_bike_assemblies",
    "POLYMNIST_BACKGROUNDS",
    "CopulaDataset",
    "DataNotFoundError",
    "PolyMNISTData",
    "composite_polymnist",
    "find_data_root",
    "generate_polymnist",
    "generate_polymnist_arrays",
    "load_backgrounds",
    "load_mnist",
    "load_polymnist",
    "polymnist_to_float",
    "verify_polymnist",
    "write_polymnist",
    "HeavyTailDataset",
    "copula_correlation",
    "copula_spearman",
    "make_copula_splits",
    "make_heavy_tail_splits",
    "sample_copula",
    "sample_skew_t",
]
