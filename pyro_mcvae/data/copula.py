"""Synthetic Gaussian-copula data for multi-component VAE experiments.

Each observation is an (M, J) array: M components (e.g. views / modalities)
each carrying J coordinates.  For every coordinate j the M values are tied
together by a Gaussian copula with correlation matrix R^j and mapped to
U(0, 1) marginals, so all dependence lives in the copula and none in the
marginals.  Different coordinates are independent of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

__all__ = [
    "copula_correlation",
    "copula_log_density",
    "sample_copula",
    "CopulaDataset",
    "make_copula_splits",
]


def copula_correlation(coordinate: int, num_components: int = 4, rho: float = 0.9) -> np.ndarray:
    """Correlation matrix R^j of coordinate ``coordinate`` across components.

    R^j_kl = ((-1)^j)^(k+l) * rho for k != l and 1 on the diagonal, with j, k, l
    1-based.  Odd coordinates therefore get an alternating sign pattern and even
    coordinates are all positively correlated.

    Args:
        coordinate: 1-based coordinate index j (>= 1).
        num_components: M, number of components (>= 1).
        rho: off-diagonal magnitude.

    Returns:
        (M, M) float64 symmetric matrix.  Positive definiteness is *not*
        checked here (see :func:`sample_copula`).
    """
    if int(coordinate) != coordinate or coordinate < 1:
        raise ValueError(f"coordinate is a 1-based index and must be an int >= 1, got {coordinate!r}")
    if int(num_components) != num_components or num_components < 1:
        raise ValueError(f"num_components must be an int >= 1, got {num_components!r}")
    if not np.isfinite(rho):
        raise ValueError(f"rho must be finite, got {rho!r}")
    base = (-1.0) ** int(coordinate)
    k = np.arange(1, int(num_components) + 1)
    # base^(k+l): the exponent is an integer, so this is exactly +-1.
    signs = base ** (k[:, None] + k[None, :])
    corr = signs * float(rho)
    np.fill_diagonal(corr, 1.0)
    return corr


def _cholesky_or_raise(corr: np.ndarray, coordinate: int, rho: float) -> np.ndarray:
    """Lower Cholesky factor of ``corr`` (M, M); ValueError if not positive definite."""
    try:
        return np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        eig_min = float(np.linalg.eigvalsh(corr).min())
        raise ValueError(
            f"copula correlation R^{coordinate} with rho={rho} and M={corr.shape[0]} components "
            f"is not positive definite (smallest eigenvalue {eig_min:.3g}); for M components "
            f"rho must lie in (-1/(M-1), 1)"
        ) from None


def sample_copula(
    n: int,
    seed: int | np.random.SeedSequence,
    num_components: int = 4,
    num_coordinates: int = 2,
    rho: float = 0.9,
    mean: float = 3.0,
    std: float = 1.0,
) -> np.ndarray:
    """Draw n tuples from the Gaussian copula with uniform marginals.

    For each coordinate j independently: g ~ N(mean * 1, std^2 * R^j) in R^M,
    then u = Phi((g - mean) / std) elementwise, so each entry is U(0, 1).

    Args:
        n: number of samples (>= 1).
        seed: passed to ``np.random.default_rng``; same seed, same array.
        num_components: M.
        num_coordinates: J.
        rho: copula correlation magnitude, ``|rho| < 1``.
        mean, std: location / scale of the latent Gaussian (std > 0).  They
            cancel in u but are kept so the construction matches its spec.

    Returns:
        (n, M, J) float32 array with entries in [0, 1].
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if int(num_coordinates) != num_coordinates or num_coordinates < 1:
        raise ValueError(f"num_coordinates must be an int >= 1, got {num_coordinates!r}")
    if not np.isfinite(rho) or abs(rho) >= 1.0:
        raise ValueError(f"|rho| must be < 1, got rho={rho!r}")
    if not np.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean!r}")
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"std must be finite and > 0, got {std!r}")
    n, m, num_j = int(n), int(num_components), int(num_coordinates)

    # Build and check every factor before drawing, so a bad setting never
    # yields a partially consumed generator.
    chols = []
    for j in range(1, num_j + 1):
        chols.append(_cholesky_or_raise(copula_correlation(j, m, rho), j, rho))

    rng = np.random.default_rng(seed)
    # One draw of all standard normals keeps the stream layout simple:
    # z[:, :, j-1] feeds coordinate j.
    z = rng.standard_normal((n, m, num_j))
    out = np.empty((n, m, num_j), dtype=np.float32)
    for j, chol in enumerate(chols):
        # Rows z @ L^T have covariance L L^T = R^j.
        g = mean + std * (z[:, :, j] @ chol.T)
        out[:, :, j] = ndtr((g - mean) / std)
    return out


class SplitShape:
    """``num_components`` and ``num_coordinates`` of a dataset whose ``train`` is ``(n, M, J)``."""

    train: np.ndarray

    @property
    def num_components(self) -> int:
        return int(self.train.shape[1])

    @property
    def num_coordinates(self) -> int:
        return int(self.train.shape[2])


@dataclass(frozen=True)
class CopulaDataset(SplitShape):
    """Train / test / reference samples from one copula setting.

    Attributes:
        train: (n_train, M, J) float32.
        test: (n_test, M, J) float32.
        reference: (n_test, M, J) float32, a third independent sample used to
            measure the sampling-noise floor of metrics computed against ``test``.
        rho, mean, std, seed: the settings that produced the arrays.
    """

    train: np.ndarray
    test: np.ndarray
    reference: np.ndarray
    rho: float
    mean: float
    std: float
    seed: int


def make_copula_splits(
    n_train: int = 10000,
    n_test: int = 2000,
    seed: int = 0,
    *,
    num_components: int = 4,
    num_coordinates: int = 2,
    rho: float = 0.9,
    mean: float = 3.0,
    std: float = 1.0,
) -> CopulaDataset:
    """Independent train, test and reference samples derived from one seed.

    The three splits use child seeds from ``np.random.SeedSequence(seed).spawn(3)``
    so they are statistically independent yet reproducible from ``seed``.

    Returns:
        CopulaDataset with train (n_train, M, J), test and reference (n_test, M, J).
    """
    train_ss, test_ss, ref_ss = np.random.SeedSequence(seed).spawn(3)
    kw = dict(num_components=num_components, num_coordinates=num_coordinates, rho=rho, mean=mean, std=std)
    return CopulaDataset(
        train=sample_copula(n_train, train_ss, **kw),
        test=sample_copula(n_test, test_ss, **kw),
        reference=sample_copula(n_test, ref_ss, **kw),
        rho=float(rho),
        mean=float(mean),
        std=float(std),
        seed=int(seed),
    )


def copula_spearman(num_components: int = 4, num_coordinates: int = 2, rho: float = 0.9) -> np.ndarray:
    """Population Spearman correlation matrix of the copula data, ``(M*J, M*J)``.

    Features are ordered as ``x.reshape(n, M*J)`` (component-major). For a Gaussian copula with
    Pearson correlation ``r`` the rank correlation is ``(6 / pi) * arcsin(r / 2)``; different
    coordinates are independent (zero).
    """
    m, jn = int(num_components), int(num_coordinates)
    out = np.zeros((m, jn, m, jn))
    for j in range(jn):
        r = copula_correlation(j + 1, m, rho)
        out[:, j, :, j] = (6.0 / np.pi) * np.arcsin(r / 2.0)
    return out.reshape(m * jn, m * jn)


def copula_log_density(tuples, rho: float = 0.9, components=None) -> np.ndarray:
    """Exact log density of the copula data's law at ``tuples`` ``(n, M, J)`` (values in (0, 1)):
    per coordinate ``j`` the Gaussian copula density of ``R^j``,
    ``log N_R(z) - sum_k log phi(z_k)`` with ``z = Phi^-1(u)``, summed over the independent
    coordinates; what a perfect model's ``log p(x)`` is. ``components``: the marginal law of
    those components only (its copula is the sub-matrix of ``R^j``; a single component is
    uniform, log density 0). Returns ``(n,)`` in nats."""
    from scipy.special import ndtri
    from scipy.stats import multivariate_normal

    x = np.asarray(tuples, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"tuples must be (n, M, J), got shape {x.shape}")
    if not ((x > 0) & (x < 1)).all():
        raise ValueError("copula values must lie strictly inside (0, 1)")
    n, m, num_j = x.shape
    keep = list(range(m)) if components is None else sorted(set(int(k) for k in components))
    z = ndtri(x[:, keep, :])
    out = np.zeros(n)
    for j in range(num_j):
        corr = copula_correlation(j + 1, m, rho)[np.ix_(keep, keep)]
        out += multivariate_normal(np.zeros(len(keep)), corr).logpdf(z[:, :, j]).reshape(n)
        out -= (-0.5 * z[:, :, j] ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1)
    return out
