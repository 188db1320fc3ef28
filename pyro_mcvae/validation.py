"""Input checks shared by the package: each raises a ``ValueError`` naming what was expected.

Data reach a model as ``torch`` tensors or NumPy arrays of floating point, in any floating dtype:
:func:`check_components` converts them to the model's dtype (and, where asked, device), so that
``torch.from_numpy`` output (float64) works with a float32 model. Integer data are refused rather
than converted (8-bit images need scaling, which only the caller knows).
"""

from __future__ import annotations

import numbers
import operator
from typing import Sequence

import numpy as np
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
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> list[torch.Tensor]:
    """Normalise multi-component input to a list of ``(batch, D_i)`` tensors and check it.

    ``xs`` is either a list of ``M`` tensors or NumPy arrays ``(batch, D_i)`` or one ``(batch, M,
    D)`` when every component has the same size ``D``, of floating point. ``dtype`` and ``device``
    (``None``: as given; NumPy arrays: the default dtype and the CPU) are what the tensors are
    converted to, the model's. ``check_values``: refuse NaN and infinite values.
    """
    m = len(component_dims)
    if isinstance(xs, np.ndarray):
        xs = _as_tensor(xs, name)
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
        x = xs[i] = _as_tensor(x, f"{name} component {i}", dtype, device)
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
    """A presence mask: ``None`` (all present) or bool ``(batch, M)`` (tensor or NumPy array), True
    where present."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (batch, M), got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != (batch, num_components):
        raise ValueError(f"mask must have shape (batch={batch}, M={num_components}), got {tuple(mask.shape)}")
    return mask


def _as_tensor(x, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """``x`` (tensor or NumPy array of floating point) as a tensor of ``dtype`` on ``device``."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise ValueError(f"{name} must be floating point, got a NumPy array of {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
        dtype = dtype or torch.get_default_dtype()
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or a NumPy array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype} (convert it, e.g. x.float() / 255 for "
                         "8-bit images)")
    return x.to(device=device, dtype=dtype)


def check_domains(xs: Sequence[torch.Tensor], domains: Sequence, name: str = "data",
                  mask: torch.Tensor | None = None, labels: Sequence[int] | None = None) -> None:
    """Raise if a component's values leave its likelihood's domain. ``domains``: per component
    ``None`` (any real number) or ``(kind, low, high)``, e.g. ``("bernoulli", 0.0, 1.0)``;
    ``mask`` (bool ``(batch, M)``): only the present rows of each component are checked;
    ``labels``: the components' indices in messages (default ``0..M-1``)."""
    for i, (x, domain) in enumerate(zip(xs, domains)):
        if domain is None:
            continue
        kind, low, high = domain
        values = x if mask is None else x[mask[:, i].to(x.device)]
        if values.numel() and not bool(((values >= low) & (values <= high)).all()):
            lo, hi = float(values.min()), float(values.max())
            raise ValueError(f"{name} component {i if labels is None else labels[i]} has values in [{lo:g}, {hi:g}]; its {kind} likelihood takes "
                             f"values in [{low:g}, {high:g}]")


def check_sizes(sizes, name: str = "component sizes") -> list[int]:
    """A non-empty sequence of positive integers (e.g. the components' sizes), as Python integers."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {sizes!r}")
    for k in sizes:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not k >= 1:
            raise ValueError(f"{name} must be positive integers, got {list(sizes)!r}")
    return [int(k) for k in sizes]


def module_dtype(module: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of a module's first floating-point parameter or buffer (the default
    dtype and the CPU for a module with none): what the data it takes are converted to."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")
