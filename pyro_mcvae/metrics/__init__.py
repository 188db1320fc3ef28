"""Evaluation metrics."""

from .quantiles import quantile_errors
from .wasserstein import (
    conditional_copula_metrics,
    copula_metrics,
    max_correlation_error,
    noise_floor,
    spearman_error,
    spearman_matrix,
    wasserstein_joint,
    wasserstein_marginals,
)

__all__ = [
    "wasserstein_joint",
    "wasserstein_marginals",
    "spearman_matrix",
    "spearman_error",
    "max_correlation_error",
    "copula_metrics",
    "conditional_copula_metrics",
    "noise_floor",
    "quantile_errors",
]
