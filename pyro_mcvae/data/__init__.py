"""Synthetic data sets."""

from .copula import (
    CopulaDataset,
    copula_correlation,
    copula_spearman,
    make_copula_splits,
    sample_copula,
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
