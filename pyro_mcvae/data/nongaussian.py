"""Synthetic multi-component data whose dependence is not Gaussian.

The copula benchmark (:mod:`pyro_mcvae.data.copula`) with the Gaussian copula swapped for another copula; the
marginals stay exactly its ``U(0, 1)`` marginals and the correlation pattern ``R^j`` stays its
:func:`~.copula.copula_correlation`, so the dependence is the only change. Each observation is an
``(M, J)`` array; coordinates are independent of each other.

``kind="x"`` (the X copula, zero correlation, strong dependence): per sample and coordinate a
latent sign vector ``s`` in ``{+1, -1}^M`` with independent fair entries, ``g ~ N(0, R^j)`` and
``u_k = Phi(s_k g_k)``. Every pair ``(k, l)`` is then the 50/50 mixture of the Gaussian copulas
with correlation ``+R_kl`` and ``-R_kl`` (``|R_kl| = rho``): an X in every pairplot, Pearson,
Spearman and Kendall correlations all zero, while ``|z_k|`` and ``|z_l|`` (``z = Phi^-1(u)``)
are as dependent as under the Gaussian copula. One shared sign for all components cannot do
this for ``M > 2``: the matrix with ``-rho`` everywhere is not positive definite
(``rho < 1/(M-1)`` is needed) and a shared sign leaves some pairs with a fixed sign; independent
signs per component are the mixture over the ``2^(M-1)`` sign patterns ``D_s R^j D_s``.

``kind="t"`` (the Student-t copula): ``t = g / sqrt(W / df)`` with ``g ~ N(0, R^j)``,
``W ~ chi2(df)`` (one per sample and coordinate) and ``u_k = T_df(t_k)``; with ``df = 2`` the
upper and lower tails are strongly dependent (tail coefficient
``2 t_{df+1}(-sqrt((df+1)(1-rho)/(1+rho)))``, zero for the Gaussian copula).

:func:`population_properties` holds the closed forms the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import integrate
from scipy.special import ndtr, stdtr, stdtrit

from .copula import SplitShape, _cholesky_or_raise, copula_correlation

__all__ = ["KINDS", "NonGaussianDataset", "make_nongaussian_splits", "nongaussian_population", "sample_nongaussian",
           "t_joint_exceedance", "t_tail_dependence", "x_pair_moments"]

KINDS = ("x", "t")


def _check(kind: str, n, num_components, num_coordinates, rho: float, df: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if int(num_components) != num_components or num_components < 2:
        raise ValueError(f"num_components must be an int >= 2 (the dependence is between components), "
                         f"got {num_components!r}")
    if int(num_coordinates) != num_coordinates or num_coordinates < 1:
        raise ValueError(f"num_coordinates must be an int >= 1, got {num_coordinates!r}")
    if not np.isfinite(rho) or abs(rho) >= 1.0:
        raise ValueError(f"|rho| must be < 1, got rho={rho!r}")
    if not (np.isfinite(df) and df > 0):
        raise ValueError(f"df must be finite and > 0, got {df!r}")


def sample_nongaussian(kind: str, n: int, seed, *, num_components: int = 4, num_coordinates: int = 2,
                       rho: float = 0.9, df: float = 2.0) -> np.ndarray:
    """``n`` draws ``(n, M, J)`` float32 in ``[0, 1]`` of the ``kind`` copula (module docstring).

    Args:
        kind: ``"x"`` (sign-mixture of Gaussian copulas) or ``"t"`` (Student-t copula).
        seed: anything ``np.random.default_rng`` accepts; same seed, same array.
        rho: magnitude of the copula benchmark's correlations ``R^j``.
        df: degrees of freedom of the t copula (ignored for ``"x"``), > 0.
    """
    _check(kind, n, num_components, num_coordinates, rho, df)
    n, m, num_j = int(n), int(num_components), int(num_coordinates)
    # Every factor checked before drawing (as sample_copula does).
    chols = [_cholesky_or_raise(copula_correlation(j, m, rho), j, rho) for j in range(1, num_j + 1)]
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, m, num_j))
    out = np.empty((n, m, num_j), dtype=np.float32)
    if kind == "x":
        signs = rng.integers(0, 2, size=(n, m, num_j)) * 2.0 - 1.0
        for j, chol in enumerate(chols):
            out[:, :, j] = ndtr(signs[:, :, j] * (g[:, :, j] @ chol.T))
    else:
        w = rng.chisquare(df, size=(n, 1, num_j))
        scale = 1.0 / np.sqrt(w / df)
        for j, chol in enumerate(chols):
            out[:, :, j] = stdtr(df, scale[:, :, j] * (g[:, :, j] @ chol.T))
    return out


@dataclass(frozen=True)
class NonGaussianDataset(SplitShape):
    """Train / test / reference samples of one :func:`sample_nongaussian` setting.

    Attributes:
        train: (n_train, M, J) float32; test, reference: (n_test, M, J) float32 (``reference`` is
            a third independent sample, for noise floors).
        kind, rho, df, seed: the settings that produced them.
    """

    train: np.ndarray
    test: np.ndarray
    reference: np.ndarray
    kind: str
    rho: float
    df: float
    seed: int


def make_nongaussian_splits(kind: str = "x", n_train: int = 10000, n_test: int = 2000, seed: int = 0, *,
                            num_components: int = 4, num_coordinates: int = 2, rho: float = 0.9,
                            df: float = 2.0) -> NonGaussianDataset:
    """Independent train, test and reference samples from the child seeds
    ``np.random.SeedSequence(seed).spawn(3)`` (as :func:`~.copula.make_copula_splits`)."""
    kw = dict(num_components=num_components, num_coordinates=num_coordinates, rho=rho, df=df)
    _check(kind, n_test, num_components, num_coordinates, rho, df)
    train_ss, test_ss, ref_ss = np.random.SeedSequence(seed).spawn(3)
    return NonGaussianDataset(
        train=sample_nongaussian(kind, n_train, train_ss, **kw),
        test=sample_nongaussian(kind, n_test, test_ss, **kw),
        reference=sample_nongaussian(kind, n_test, ref_ss, **kw),
        kind=kind, rho=float(rho), df=float(df), seed=int(seed),
    )


def nongaussian_population(dataset: NonGaussianDataset, n: int, offset: int = 10_000) -> np.ndarray:
    """``n`` fresh true tuples ``(n, M, J)`` of the dataset's law, from seed ``dataset.seed + offset``
    (a stream none of the splits uses: they come from ``SeedSequence(seed).spawn``)."""
    return sample_nongaussian(dataset.kind, n, dataset.seed + int(offset), num_components=dataset.num_components,
                              num_coordinates=dataset.num_coordinates, rho=dataset.rho, df=dataset.df)


# -- population properties (closed forms) ---------------------------------------------------------

def x_pair_moments(rho: float) -> dict:
    """Population moments of a pair ``(z_k, z_l)``, ``z = Phi^-1(u)``, of the X copula with
    ``|R_kl| = rho``: the pair is ``(g_k, g_l)`` bivariate normal (correlation ``r = +-rho``)
    times independent signs.

    ``pearson``, ``spearman``, ``kendall``, ``same_sign`` (``P(z_k z_l > 0)``) and
    ``product`` (``E[z_k z_l]``): 0, 0, 0, 1/2, 0 (the Gaussian copula: ``r``,
    ``(6/pi) arcsin(r/2)``, ``(2/pi) arcsin r``, ``1/2 + arcsin(r)/pi``, ``r``). Kendall's tau is 0
    because two draws with equal signs give ``+-(2/pi) arcsin r`` (averaging to 0) and with
    opposite signs ``(g - h) ~ N(0, R_+ + R_-) = N(0, 2I)`` has independent coordinates.
    ``abs_product`` ``E|z_k z_l| = (2/pi)(sqrt(1 - r^2) + r arcsin r)`` and ``square_product``
    ``E[z_k^2 z_l^2] = 1 + 2 r^2`` (so ``corr(z_k^2, z_l^2) = r^2``): even in each sign, hence the
    Gaussian copula's values.
    """
    r = abs(float(rho))
    return {"pearson": 0.0, "spearman": 0.0, "kendall": 0.0, "same_sign": 0.5, "product": 0.0,
            "abs_product": (2.0 / np.pi) * (np.sqrt(1.0 - r * r) + r * np.arcsin(r)),
            "square_product": 1.0 + 2.0 * r * r, "square_correlation": r * r}


def t_tail_dependence(rho: float, df: float) -> float:
    """Upper (= lower) tail dependence ``lim_{q -> 1} P(U_l > q | U_k > q)`` of the t copula:
    ``2 t_{df+1}(-sqrt((df + 1)(1 - rho) / (1 + rho)))``."""
    return float(2.0 * stdtr(df + 1.0, -np.sqrt((df + 1.0) * (1.0 - rho) / (1.0 + rho))))


def t_joint_exceedance(q: float, rho: float, df: float) -> float:
    """``P(U_l > q | U_k > q)`` of the t copula with correlation ``rho`` at a level ``q`` < 1, exact
    up to quadrature: with ``a = T_df^-1(q)``,
    ``P(T_k > a, T_l > a) = int_a^inf f_df(t) P(T_l > a | T_k = t) dt``, where
    ``T_l | T_k = t`` is Student-t with ``df + 1`` degrees of freedom, location ``rho t`` and scale
    ``sqrt((df + t^2)(1 - rho^2) / (df + 1))``. Tends to :func:`t_tail_dependence` as ``q -> 1``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q!r}")
    if q <= 0.5:
        raise ValueError(f"q must be > 0.5 (a tail level), got {q!r}")
    a = float(stdtrit(df, q))
    const = np.exp(_log_t_norm(df))

    def integrand(t):
        density = const * (1.0 + t * t / df) ** (-(df + 1.0) / 2.0)
        scale = np.sqrt((df + t * t) * (1.0 - rho * rho) / (df + 1.0))
        return density * stdtr(df + 1.0, (rho * t - a) / scale)

    # Substitute t = a / v, v in (0, 1]: a finite interval for the polynomial tail.
    value, _ = integrate.quad(lambda v: integrand(a / v) * a / (v * v), 0.0, 1.0, limit=200, epsabs=1e-13)
    return float(value / (1.0 - q))


def _log_t_norm(df: float) -> float:
    from scipy.special import gammaln

    return float(gammaln((df + 1.0) / 2.0) - gammaln(df / 2.0) - 0.5 * np.log(df * np.pi))
