"""Synthetic data sets."""

from .copula import (
    CopulaDataset,
    copula_correlation,
    copula_spearman,
    make_copula_splits,
    sample_copula,
)

from .heavy_tails import HeavyTailDataset, make_heavy_tail_splits, sample_skew_t

__all__ = [
    "CopulaDataset",
    "HeavyTailDataset",
    "copula_correlation",
    "copula_spearman",
    "make_copula_splits",
    "make_heavy_tail_splits",
    "sample_copula",
    "sample_skew_t",
]
