"""Synthetic data sets."""

from .copula import CopulaDataset, copula_correlation, make_copula_splits, sample_copula

__all__ = ["copula_correlation", "sample_copula", "CopulaDataset", "make_copula_splits"]
