"""Evaluation metrics.

The per-image functions ``fid.fid`` and ``ssim.ssim`` are imported from their modules
(``from pyro_mcvae.metrics.fid import fid``) so the names keep meaning the modules here.
"""

from .assembly import (
    KeypointRegressor,
    assembly_fid,
    assembly_ssim,
    assembly_validity,
    centres_of_mass,
    com_wasserstein,
    com_wasserstein_report,
    empty_components,
    overlay,
    predict_keypoints,
    train_keypoint_regressor,
)
from .coherence import coherence_by_subset_size, conditional_coherence, predict_digits, unconditional_coherence
from .dependence import conditional_slice_w1, slice_metrics
from .fid import (
    InceptionFeatureExtractor,
    InceptionWeightsUnavailable,
    digit_frechet_distance,
    frechet_distance,
    gaussian_statistics,
)
from .likelihood import LikelihoodEstimate, conditional_log_likelihood, log_likelihood, log_mean_exp
from .quantiles import quantile_errors
from .ssim import mean_ssim
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
    "KeypointRegressor",
    "assembly_fid",
    "assembly_ssim",
    "assembly_validity",
    "centres_of_mass",
    "com_wasserstein",
    "com_wasserstein_report",
    "empty_components",
    "overlay",
    "predict_keypoints",
    "train_keypoint_regressor",
    "InceptionFeatureExtractor",
    "InceptionWeightsUnavailable",
    "coherence_by_subset_size",
    "conditional_coherence",
    "digit_frechet_distance",
    "frechet_distance",
    "gaussian_statistics",
    "mean_ssim",
    "predict_digits",
    "unconditional_coherence",
    "wasserstein_joint",
    "wasserstein_marginals",
    "spearman_matrix",
    "spearman_error",
    "max_correlation_error",
    "copula_metrics",
    "conditional_copula_metrics",
    "noise_floor",
    "conditional_slice_w1",
    "slice_metrics",
    "quantile_errors",
    "LikelihoodEstimate",
    "log_likelihood",
    "conditional_log_likelihood",
    "log_mean_exp",
]
