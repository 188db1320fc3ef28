"""Wasserstein-1 and rank-correlation metrics for copula-structured samples.

All functions accept numpy arrays or torch tensors, compute in float64 and
return plain Python floats / lists / dicts so results are JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import ot
import scipy.spatial.distance
import scipy.stats

__all__ = [
    "wasserstein_joint",
    "wasserstein_marginals",
    "spearman_matrix",
    "max_correlation_error",
    "copula_metrics",
    "conditional_copula_metrics",
    "noise_floor",
]

# Network simplex needs many more pivots than POT's default (1e5) once both
# point clouds have a few thousand atoms.
_NUM_ITER_MAX = 10_000_000


def _to_numpy(x, name: str) -> np.ndarray:
    """Array-like or torch tensor -> float64 numpy array (no shape change)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _as_points(x, name: str) -> np.ndarray:
    """Samples as (n, k) float64; a 1-D input is read as n points in R^1."""
    arr = _to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, k) or (n,), got {arr.shape}")
    return arr


def _as_tuples(x, name: str) -> np.ndarray:
    """Copula samples as (n, M, J) float64."""
    arr = _to_numpy(x, name)
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (n, M, J), got {arr.shape}")
    return arr


def _check_same_features(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"{what} mismatch: {x.shape[1:]} vs {y.shape[1:]} (shapes {x.shape}, {y.shape})")


def wasserstein_joint(x, y) -> float:
    """Exact W1 between two empirical distributions with uniform weights.

    Ground cost is the Euclidean distance matrix (n, m); solved exactly with
    POT's network simplex (``ot.emd2``).

    Args:
        x: (n, k) samples (or (n,) for k = 1).
        y: (m, k) samples.

    Returns:
        W1 as a Python float.

    Raises:
        ValueError: empty input, NaN/inf, or different k.
        RuntimeError: if the solver did not reach the optimum.
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    _check_same_features(x, y, "feature dimension")
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    # Not ot.dist(metric="euclidean"): it uses the |x|^2 + |y|^2 - 2<x, y>
    # expansion, whose cancellation leaves ~sqrt(eps) * |x| error on near-zero
    # distances (W1(x, x) came out ~5e-7 instead of 0).  cdist differences
    # coordinates directly and is exact to rounding.
    cost = scipy.spatial.distance.cdist(x, y, metric="euclidean")
    value, log = ot.emd2(a, b, cost, numItermax=_NUM_ITER_MAX, log=True)
    # A non-None warning means the simplex stopped early (iteration cap,
    # infeasibility): the value is then not the distance, so fail loudly.
    if log.get("warning") is not None:
        raise RuntimeError(f"ot.emd2 did not converge: {log['warning']}")
    return float(value)


def wasserstein_marginals(x, y) -> np.ndarray:
    """1-D W1 between matching columns of x and y.

    Args:
        x: (n, k), y: (m, k).

    Returns:
        (k,) float64 array; entry i is W1(x[:, i], y[:, i]).
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    _check_same_features(x, y, "feature dimension")
    return np.array(
        [scipy.stats.wasserstein_distance(x[:, i], y[:, i]) for i in range(x.shape[1])],
        dtype=np.float64,
    )


def spearman_matrix(x) -> np.ndarray:
    """Spearman rank-correlation matrix of the columns of x.

    Args:
        x: (n, k) with n >= 2.

    Returns:
        (k, k) float64 matrix.  A constant column yields NaN entries.
    """
    x = _as_points(x, "x")
    n, k = x.shape
    if n < 2:
        raise ValueError(f"spearman_matrix needs at least 2 samples, got {n}")
    if k == 1:
        return np.ones((1, 1))
    res = scipy.stats.spearmanr(x)
    rho = np.asarray(res.statistic if hasattr(res, "statistic") else res[0], dtype=np.float64)
    if k == 2:
        # spearmanr returns the single coefficient, not a matrix, for 2 columns.
        r = float(rho)
        return np.array([[1.0, r], [r, 1.0]])
    return rho


def max_correlation_error(x, y) -> float:
    """Largest absolute difference between the Spearman matrices of x and y.

    Args:
        x: (n, k), y: (m, k).
    """
    sx = spearman_matrix(x)
    sy = spearman_matrix(y)
    if sx.shape != sy.shape:
        raise ValueError(f"feature dimension mismatch: {sx.shape[0]} vs {sy.shape[0]}")
    return float(np.max(np.abs(sx - sy)))


def copula_metrics(generated, reference) -> dict:
    """Distribution metrics between generated and reference copula tuples.

    Args:
        generated: (n, M, J) samples.
        reference: (m, M, J) samples.

    Returns:
        dict with
          ``joint_w1``: {j+1: W1 between the M-vectors of coordinate j},
          ``joint_w1_mean``: mean of joint_w1 over coordinates,
          ``marginal_w1``: {j+1: [1-D W1 per component]},
          ``spearman_max_error``: max ``|Spearman difference|`` over the M*J
          flattened features (captures cross-coordinate dependence too).
    """
    gen = _as_tuples(generated, "generated")
    ref = _as_tuples(reference, "reference")
    _check_same_features(gen, ref, "(M, J)")
    num_j = gen.shape[2]
    joint = {j + 1: wasserstein_joint(gen[:, :, j], ref[:, :, j]) for j in range(num_j)}
    marginal = {j + 1: wasserstein_marginals(gen[:, :, j], ref[:, :, j]).tolist() for j in range(num_j)}
    spear = max_correlation_error(gen.reshape(gen.shape[0], -1), ref.reshape(ref.shape[0], -1))
    return {
        "joint_w1": joint,
        "joint_w1_mean": float(np.mean(list(joint.values()))),
        "marginal_w1": marginal,
        "spearman_max_error": spear,
    }


def conditional_copula_metrics(generated_given: Mapping[int, object], reference) -> dict:
    """Joint W1 of conditional generations, one source component at a time.

    Args:
        generated_given: {k: (n, M, J)} where component k holds the observed
            true values and the other components were generated from it.
            Keys are passed through unchanged (0-based component index by
            convention).
        reference: (m, M, J) true test tuples.

    Returns:
        dict with
          ``by_source``: {k: {"joint_w1": {j+1: float}, "joint_w1_mean": float}},
          ``joint_w1_mean``: mean over all sources and coordinates.
    """
    if len(generated_given) == 0:
        raise ValueError("generated_given is empty")
    ref = _as_tuples(reference, "reference")
    by_source = {}
    all_values = []
    for k, gen in generated_given.items():
        gen = _as_tuples(gen, f"generated_given[{k!r}]")
        _check_same_features(gen, ref, "(M, J)")
        joint = {j + 1: wasserstein_joint(gen[:, :, j], ref[:, :, j]) for j in range(gen.shape[2])}
        all_values.extend(joint.values())
        by_source[int(k)] = {"joint_w1": joint, "joint_w1_mean": float(np.mean(list(joint.values())))}
    return {"by_source": by_source, "joint_w1_mean": float(np.mean(all_values))}


def noise_floor(sample_a, sample_b) -> dict:
    """copula_metrics between two independent TRUE samples of equal size.

    The result is the value each metric takes from sampling noise alone at
    this sample size, i.e. the best a perfect generator can expect.

    Args:
        sample_a, sample_b: (n, M, J) independent draws from the true law.

    Returns:
        Same layout as :func:`copula_metrics`.
    """
    a = _as_tuples(sample_a, "sample_a")
    b = _as_tuples(sample_b, "sample_b")
    if a.shape != b.shape:
        raise ValueError(f"noise_floor needs samples of equal shape, got {a.shape} and {b.shape}")
    if np.array_equal(a, b):
        # Identical arrays give an all-zero floor, which would silently make
        # every model look infinitely worse than noise.
        raise ValueError("noise_floor got two identical samples; pass independent draws")
    return copula_metrics(a, b)


def spearman_error(x, target) -> float:
    """Largest absolute difference between the Spearman matrix of ``x (n, k)`` and a known
    ``(k, k)`` matrix (e.g. the population value from :func:`pyro_mcvae.data.copula_spearman`)."""
    sx = spearman_matrix(x)
    target = np.asarray(target, dtype=np.float64)
    if target.shape != sx.shape:
        raise ValueError(f"target must have shape {sx.shape}, got {target.shape}")
    return float(np.max(np.abs(sx - target)))
