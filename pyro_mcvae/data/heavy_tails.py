"""Synthetic heavy-tailed, skewed multi-component data (the ALMRF benchmark).

Each observation is an ``(M, J)`` array. For every coordinate ``j`` the ``M`` values come from a
skewed multivariate Student-t law (a normal variance-mean mixture with an inverse-gamma mixing
variable), with the correlation pattern of the copula benchmark, and are then pushed through a
per-component affine map (component ``k`` gets its own scale and shift). Coordinates are
independent. With ``df = 3`` the tails are polynomial (variance finite, kurtosis infinite),
and the skew makes the two tails differ: neither a Gaussian nor a symmetric law fits them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .copula import SplitShape, copula_correlation

__all__ = ["HeavyTailDataset", "make_heavy_tail_splits", "sample_skew_t"]


def sample_skew_t(
    n: int,
    seed,
    *,
    num_components: int = 4,
    num_coordinates: int = 2,
    rho: float = 0.8,
    df: float = 3.0,
    skew: float = 1.0,
) -> np.ndarray:
    """``n`` draws ``(n, M, J)``: for coordinate ``j``,
    ``y = gamma_j (W - E[W]) + sqrt(W) L_j u`` with ``W ~ InvGamma(df/2, df/2)``, ``u ~ N(0, I)``,
    ``L_j L_j^T`` the copula benchmark's correlation ``R^j``, ``gamma_j = (-1)^(j+1) skew``
    (coordinates skewed in opposite directions); then ``x_k = k + (1 + k/2) y_k`` for component
    ``k = 0..M-1``.

    Args:
        seed: anything ``np.random.default_rng`` accepts (an int or a ``SeedSequence``).
        df: degrees of freedom, > 2 (finite variance).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not df > 2:
        raise ValueError(f"df must be > 2 (finite variance), got {df!r}")
    rng = np.random.default_rng(seed)
    m, num_j = int(num_components), int(num_coordinates)
    out = np.empty((int(n), m, num_j))
    mean_w = df / (df - 2.0)
    for j in range(num_j):
        chol = np.linalg.cholesky(copula_correlation(j + 1, m, rho))
        w = 1.0 / rng.gamma(df / 2.0, 2.0 / df, size=(int(n), 1))  # InvGamma(df/2, df/2)
        u = rng.standard_normal((int(n), m)) @ chol.T
        gamma = skew if j % 2 == 0 else -skew
        out[:, :, j] = gamma * (w - mean_w) + np.sqrt(w) * u
    k = np.arange(m)[None, :, None]
    return (k + (1.0 + 0.5 * k) * out).astype(np.float32)


@dataclass
class HeavyTailDataset(SplitShape):
    """Train / test / reference samples of :func:`sample_skew_t` (``reference`` is a third
    independent sample for noise floors)."""

    train: np.ndarray
    test: np.ndarray
    reference: np.ndarray
    df: float
    skew: float
    rho: float
    seed: int


def make_heavy_tail_splits(n_train: int = 10000, n_test: int = 2000, seed: int = 0, *,
                           num_components: int = 4, num_coordinates: int = 2, rho: float = 0.8,
                           df: float = 3.0, skew: float = 1.0) -> HeavyTailDataset:
    """Independent train, test and reference samples from child seeds of ``seed``."""
    kw = dict(num_components=num_components, num_coordinates=num_coordinates, rho=rho, df=df, skew=skew)
    train_ss, test_ss, ref_ss = np.random.SeedSequence(seed).spawn(3)
    return HeavyTailDataset(
        train=sample_skew_t(n_train, train_ss, **kw),
        test=sample_skew_t(n_test, test_ss, **kw),
        reference=sample_skew_t(n_test, ref_ss, **kw),
        df=float(df), skew=float(skew), rho=float(rho), seed=int(seed),
    )
