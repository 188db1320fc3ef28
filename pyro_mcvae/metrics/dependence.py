"""Dependence-specific distances: the law of the other components on a slice of one component.

The joint W1 of :mod:`.wasserstein` averages the whole cloud; a model can match it fairly well
while drawing the wrong *shape* of dependence (one ellipse where the data form an X). Slicing
sharpens this: keep the tuples whose component ``k`` (coordinate ``j``) falls in a window and
compare the laws of the other components' coordinate ``j`` there. For the X copula
(:mod:`pyro_mcvae.data.nongaussian`) the slice away from the centre is multimodal (each other
component sits on one of the two arms, ``u ~ q`` or ``u ~ 1 - q``) while a Gaussian copula puts
it on one arm; at the centre (``u_k ~ 1/2``) the arms cross and the two laws nearly agree, so the
default window is off-centre.

Functions take arrays or tensors ``(n, M, J)`` and return floats / dicts (JSON-serialisable).
"""

from __future__ import annotations

import numpy as np

from .wasserstein import _as_tuples, _check_same_features, wasserstein_joint

__all__ = ["DEFAULT_WINDOW", "conditional_slice_w1", "slice_metrics"]

#: Quantile levels of the conditioning coordinate: the upper arm of the X, away from its crossing.
DEFAULT_WINDOW = (0.8, 0.95)


def _window_bounds(reference: np.ndarray, window) -> tuple[float, float]:
    lo, hi = (float(w) for w in window)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"window must be quantile levels 0 <= lo < hi <= 1, got {tuple(window)!r}")
    return float(np.quantile(reference, lo)), float(np.quantile(reference, hi))


def _slice(x: np.ndarray, k: int, j: int, bounds, cap: int | None, rng, name: str, min_points: int) -> np.ndarray:
    """Rows of ``x`` whose ``(k, j)`` entry lies in ``bounds``: the other components' coordinate
    ``j``, ``(n_slice, M - 1)``, at most ``cap`` of them (a seeded subsample)."""
    inside = (x[:, k, j] >= bounds[0]) & (x[:, k, j] <= bounds[1])
    rows = np.delete(x[inside][:, :, j], k, axis=1)
    if rows.shape[0] < min_points:
        raise ValueError(f"{name}: {rows.shape[0]} tuples in the slice of component {k}, coordinate {j + 1} "
                         f"(bounds {bounds[0]:.4g}..{bounds[1]:.4g}); at least {min_points} needed: "
                         f"pass more samples or a wider window")
    if cap is not None and rows.shape[0] > cap:
        rows = rows[rng.choice(rows.shape[0], cap, replace=False)]
    return rows


def conditional_slice_w1(generated, reference, given_component: int, coordinate: int, window=DEFAULT_WINDOW, *,
                         quantiles_of: str = "reference", max_points: int | None = 3000, min_points: int = 50,
                         seed: int = 0) -> float:
    """W1 between the laws of the other components' coordinate given that component
    ``given_component``'s coordinate lies in a window.

    Args:
        generated: ``(n, M, J)`` samples of a model.
        reference: ``(m, M, J)`` true samples (a large population sample: a slice keeps about
            ``(hi - lo) * m`` of them).
        given_component: 0-based component ``k`` conditioned on.
        coordinate: 0-based coordinate ``j`` (coordinates are independent in the benchmarks, so
            the slice only informs coordinate ``j`` of the others).
        window: ``(lo, hi)`` quantile levels of the ``(k, j)`` marginal.
        quantiles_of: ``"reference"``: the reference's quantiles bound both slices (the law given
            ``x_k^j`` in a fixed data interval; a model with wrong marginals may put few tuples
            there, fewer than ``min_points`` is an error); ``"each"``: each sample is sliced at its
            own quantiles (the law given the rank of ``x_k^j``: always about ``(hi - lo) n``
            tuples, and the given component's own marginal does not count, the joint W1 sees
            it). The two agree for a model with the true marginals.
        max_points: cap on each slice (seeded subsample) so the exact solver stays quick; ``None``
            for no cap.
        min_points: fewer tuples than this in either slice is a ``ValueError``.
        seed: seed of the subsample.

    Returns:
        Exact W1 (Euclidean ground cost in ``R^(M-1)``) between the two slices.
    """
    gen = _as_tuples(generated, "generated")
    ref = _as_tuples(reference, "reference")
    _check_same_features(gen, ref, "(M, J)")
    m, num_j = ref.shape[1], ref.shape[2]
    if m < 2:
        raise ValueError(f"a slice needs at least 2 components, got M = {m}")
    if not (isinstance(given_component, (int, np.integer)) and 0 <= given_component < m):
        raise ValueError(f"given_component must be an int in 0..{m - 1}, got {given_component!r}")
    if not (isinstance(coordinate, (int, np.integer)) and 0 <= coordinate < num_j):
        raise ValueError(f"coordinate must be an int in 0..{num_j - 1}, got {coordinate!r}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points!r}")
    if quantiles_of not in ("reference", "each"):
        raise ValueError(f"quantiles_of must be 'reference' or 'each', got {quantiles_of!r}")
    bounds = _window_bounds(ref[:, given_component, coordinate], window)
    own = bounds if quantiles_of == "reference" else _window_bounds(gen[:, given_component, coordinate], window)
    rng = np.random.default_rng(seed)
    a = _slice(gen, given_component, coordinate, own, max_points, rng, "generated", min_points)
    b = _slice(ref, given_component, coordinate, bounds, max_points, rng, "reference", min_points)
    return wasserstein_joint(a, b)


def slice_metrics(generated, reference, window=DEFAULT_WINDOW, *, components=None, quantiles_of: str = "each",
                  max_points: int | None = 3000, min_points: int = 50, seed: int = 0) -> dict:
    """:func:`conditional_slice_w1` for every given component (or ``components``) and coordinate;
    by default each sample is sliced at its own quantiles, so a poorly trained model still gets a
    number.

    Returns:
        ``{"window": [lo, hi], "w1": {k: {j + 1: float}}, "w1_mean": float}`` (``k`` 0-based,
        coordinates 1-based as in :func:`~.wasserstein.copula_metrics`).
    """
    ref = _as_tuples(reference, "reference")
    ks = range(ref.shape[1]) if components is None else components
    w1 = {int(k): {j + 1: conditional_slice_w1(generated, ref, int(k), j, window, quantiles_of=quantiles_of,
                                               max_points=max_points, min_points=min_points, seed=seed)
                   for j in range(ref.shape[2])} for k in ks}
    values = [v for by_j in w1.values() for v in by_j.values()]
    return {"window": [float(w) for w in window], "quantiles_of": quantiles_of, "w1": w1,
            "w1_mean": float(np.mean(values))}
