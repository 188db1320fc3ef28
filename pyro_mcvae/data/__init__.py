"""Synthetic data sets."""

from .copula import (
    CopulaDataset,
    copula_correlation,
    copula_spearman,
    make_copula_splits,
    sample_copula,
)

__all__ = ["copula_correlation", "copula_spearman", "sample_copula", "CopulaDataset", "make_copula_splits"]
