"""Input checks shared by the package: each raises a ``ValueError`` naming what was expected."""

from __future__ import annotations

import operator
from typing import Sequence

import torch


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite numbers")


def check_components(
    xs: torch.Tensor | Sequence[torch.Tensor],
    component_dims: Sequence[int],
    name: str = "data",
    check_values: bool = True,
) -> list[torch.Tensor]:
    """Normalise multi-component input to a list of ``(batch, D_i)`` tensors and check it.

    ``xs`` is either a list of ``M`` tensors ``(batch, D_i)`` or one tensor ``(batch, M, D)`` when
    every component has the same size ``D``.
    """
    m = len(component_dims)
    if isinstance(xs, torch.Tensor):
        if xs.dim() != 3:
            raise ValueError(
                f"{name} as one tensor must have shape (batch, M={m}, D), got {tuple(xs.shape)}"
            )
        if xs.shape[1] != m:
            raise ValueError(
                f"{name} has {xs.shape[1]} components, the model expects {m}"
            )
        xs = list(xs.unbind(1))
    elif isinstance(xs, (list, tuple)):
        if len(xs) != m:
            raise ValueError(f"{name} has {len(xs)} components, the model expects {m}")
        xs = list(xs)
    else:
        raise ValueError(
            f"{name} must be a tensor (batch, M, D) or a list of M tensors, got {type(xs).__name__}"
        )
    batch = None
    for i, (x, dim) in enumerate(zip(xs, component_dims)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} component {i} must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} component {i} must be floating point, got {x.dtype}")
        if x.dim() != 2 or x.shape[-1] != dim:
            raise ValueError(
                f"{name} component {i} must have shape (batch, {dim}), got {tuple(x.shape)}"
            )
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            raise ValueError(
                f"{name} components disagree on the batch size: {batch} and {x.shape[0]} "
                f"(component {i})"
            )
        if check_values:
            check_finite(x, f"{name} component {i}")
    return xs


def check_component_indices(indices, num_components: int, name: str = "component") -> list[int]:
    """Sorted, unique component indices, each in ``[0, M)``."""
    out = []
    for k in indices:
        try:
            if isinstance(k, bool):
                raise TypeError
            k = operator.index(k)  # ints, NumPy integers, 0-d integer tensors; never 1.7 -> 1
        except TypeError:
            raise ValueError(f"{name} index {k!r} is not an integer") from None
        if not 0 <= k < num_components:
            raise ValueError(
                f"{name} index {k} is out of range; expected 0 <= index < {num_components}"
            )
        out.append(k)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} indices must be unique, got {list(indices)}")
    return sorted(out)


def check_mask(mask, batch: int, num_components: int) -> torch.Tensor | None:
    """A presence mask: ``None`` (all present) or bool ``(batch, M)``, True where present."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (batch, M), got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != (batch, num_components):
        raise ValueError(f"mask must have shape (batch={batch}, M={num_components}), got {tuple(mask.shape)}")
    return mask
