"""Tail quantile errors of generated multi-component samples."""

from __future__ import annotations

import numpy as np

__all__ = ["quantile_errors"]


def quantile_errors(generated, reference, probs=(0.01, 0.99)) -> dict:
    """Error of the generated marginal quantiles, per coordinate, in units of the reference's
    interquartile range (so components of different scales count alike).

    Args:
        generated, reference: ``(n, M, J)`` samples (``n`` may differ).
        probs: quantile levels.

    Returns:
        ``{"by_level": {p: errors}, "mean": {p: float}, "signed_mean": {p: float}}``, where
        ``errors`` is the ``(M, J)`` list of ``|q_gen(p) - q_ref(p)| / IQR_ref`` (signed: positive
        where the generated quantile lies further out in the tail than the reference's, negative
        where it is too light).
    """
    gen, ref = np.asarray(generated, dtype=float), np.asarray(reference, dtype=float)
    if gen.ndim != 3 or ref.ndim != 3 or gen.shape[1:] != ref.shape[1:]:
        raise ValueError(f"generated and reference must be (n, M, J) with the same M, J; got "
                         f"{gen.shape} and {ref.shape}")
    if not (np.isfinite(gen).all() and np.isfinite(ref).all()):
        raise ValueError("generated and reference must be finite")
    probs = [float(p) for p in probs]
    if not all(0 < p < 1 for p in probs):
        raise ValueError(f"quantile levels must lie in (0, 1), got {probs}")
    q1, q3 = np.quantile(ref, [0.25, 0.75], axis=0)
    iqr = q3 - q1
    out = {"by_level": {}, "mean": {}, "signed_mean": {}}
    for p in probs:
        diff = (np.quantile(gen, p, axis=0) - np.quantile(ref, p, axis=0)) / iqr
        outward = diff if p > 0.5 else -diff
        out["by_level"][p] = np.abs(diff).tolist()
        out["mean"][p] = float(np.abs(diff).mean())
        out["signed_mean"][p] = float(outward.mean())
    return out
