"""Incomplete data: seeded missing-at-random presence masks, and the convention for storing them.

The law of :func:`missing_mask`. Write ``r`` for ``missing_ratio``, ``M`` for the number of
components and ``p`` for ``min_present``. Each component of each sample is absent independently
with probability ``r``, *conditioned on at least p components of the sample being present*. The
rows are independent, and for one row the number of absent components ``K`` and the absent set
are:

    P(K = k) = C(M, k) r^k (1 - r)^(M - k) / Z,    k = 0 .. M - p,
    Z = sum_{k=0}^{M-p} C(M, k) r^k (1 - r)^(M - k),

a binomial ``Bin(M, r)`` truncated to ``k <= M - p``; given ``K = k`` the absent set is uniform
over the ``C(M, k)`` subsets of size ``k`` (every pattern with ``k`` absences has the same
probability ``r^k (1-r)^(M-k)`` under the independent law, so conditioning keeps them equally
likely). This is exactly the law of rejection sampling (redraw the rows that violate the
constraint), drawn here without rejection: ``K`` from its truncated law, then the set as the
``K`` smallest of ``M`` uniform keys.

The per-entry absent rate is therefore ``E[K] / M`` (:func:`expected_absent_fraction`), a little
*below* ``r`` because the all-absent rows are excluded: for ``M = 4``, ``r = 0.5``, ``p = 1`` it
is ``(M r - M r^M) / (M (1 - r^M)) = 0.4667``; for ``M = 5`` it is ``0.4839``. Every component
has the same rate (the law is exchangeable in the components). ``r = 0`` gives every entry
present.

Storage: absent entries keep their place in the data and are overwritten by a finite fill value
(zero by default, :func:`apply_mask`). The trainer requires finite data (no NaN), and the models
never read an absent entry: the encoders see zeros in its place and its likelihood term is
masked out, so the fill value does not change the loss (``tests/models/test_masks.py``).
Zeroing is still done so that an incomplete data set holds no trace of what is absent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["apply_mask", "absent_count_law", "expected_absent_fraction", "missing_mask"]


def _check(num_components: int, missing_ratio: float, min_present: int) -> None:
    if not isinstance(num_components, int) or num_components < 1:
        raise ValueError(f"num_components must be an integer >= 1, got {num_components!r}")
    if not 0.0 <= float(missing_ratio) < 1.0:
        raise ValueError(f"missing_ratio must be in [0, 1), got {missing_ratio!r}")
    if not isinstance(min_present, int) or not 1 <= min_present <= num_components:
        raise ValueError(f"min_present must be an integer in 1..M={num_components}, got {min_present!r}")


def absent_count_law(num_components: int, missing_ratio: float, min_present: int = 1) -> torch.Tensor:
    """``P(K = k)`` for ``k = 0 .. M - min_present``: the truncated binomial of the absent count
    per sample (module docstring). Float64 ``(M - min_present + 1,)``, summing to one."""
    _check(num_components, missing_ratio, min_present)
    m, r = num_components, float(missing_ratio)
    weights = torch.tensor([math.comb(m, k) * r ** k * (1.0 - r) ** (m - k) for k in range(m - min_present + 1)],
                           dtype=torch.float64)
    return weights / weights.sum()  # the k = 0 weight (1 - r)^M > 0, so the sum is positive


def expected_absent_fraction(num_components: int, missing_ratio: float, min_present: int = 1) -> float:
    """The per-entry absent rate of :func:`missing_mask`, ``E[K] / M`` (exact)."""
    law = absent_count_law(num_components, missing_ratio, min_present)
    return float((law * torch.arange(len(law), dtype=torch.float64)).sum()) / num_components


def missing_mask(num_samples: int, num_components: int, missing_ratio: float, seed: int,
                 min_present: int = 1) -> torch.Tensor:
    """A presence mask, bool ``(num_samples, num_components)``, True where a component is
    present: each entry absent with probability ``missing_ratio`` independently, conditioned on
    at least ``min_present`` present per row (law in the module docstring; absent rate
    :func:`expected_absent_fraction`). The same arguments give the same mask (a private
    ``torch.Generator`` seeded with ``seed``; the global random state is untouched).

    Raises ``ValueError`` for ``missing_ratio`` outside ``[0, 1)``, ``min_present`` outside
    ``1..num_components`` or a negative ``num_samples``.
    """
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
    law = absent_count_law(num_components, missing_ratio, min_present)
    g = torch.Generator().manual_seed(int(seed))
    if num_samples == 0:
        return torch.ones(0, num_components, dtype=torch.bool)
    absent_count = torch.multinomial(law, num_samples, replacement=True, generator=g)  # (N,)
    # A uniform subset of size K: the components whose uniform keys rank among the K smallest.
    keys = torch.rand(num_samples, num_components, generator=g, dtype=torch.float64)
    rank = keys.argsort(dim=-1).argsort(dim=-1)
    return rank >= absent_count[:, None]


def apply_mask(data, mask: torch.Tensor, fill: float = 0.0):
    """The data with every absent entry overwritten by ``fill`` (a copy; the input is unchanged).

    Args:
        data: ``(N, M, ...)`` tensor or NumPy array, or a list of ``M`` tensors ``(N, ...)``.
        mask: bool ``(N, M)``, False where absent.
        fill: finite value stored in absent entries (the trainer rejects NaN).

    Returns the same kind of container as ``data``.
    """
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"mask must be a bool tensor (N, M), got {mask.dtype} {tuple(mask.shape)}")
    if not math.isfinite(fill):
        raise ValueError(f"fill must be finite (the trainer rejects NaN and infinite data), got {fill}")
    n, m = mask.shape
    if isinstance(data, (list, tuple)):
        if len(data) != m or any(x.shape[0] != n for x in data):
            raise ValueError(f"data: expected {m} tensors with {n} rows each, got "
                             f"{[tuple(x.shape) for x in data]}")
        return [x.masked_fill(~mask[:, k].reshape(n, *([1] * (x.dim() - 1))).to(x.device), fill)
                for k, x in enumerate(data)]
    if tuple(data.shape[:2]) != (n, m):
        raise ValueError(f"data of shape {tuple(data.shape)} does not match the mask (N={n}, M={m}, ...)")
    absent = ~mask.reshape(n, m, *([1] * (len(data.shape) - 2)))
    if isinstance(data, torch.Tensor):
        return data.masked_fill(absent.to(data.device), fill)
    out = np.array(data, copy=True)
    out[np.broadcast_to(absent.numpy(), out.shape)] = fill
    return out
