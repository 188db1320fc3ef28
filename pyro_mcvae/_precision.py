"""Latent-law linear algebra in full precision, whatever autocast region calls it.

Under ``torch.autocast`` (``TrainConfig(amp="bf16")``) matmuls run in bfloat16, and on CUDA the
linear-algebra kernels (Cholesky, eigvalsh, triangular solves) take their input's dtype and have
no bfloat16 version; a bfloat16 Gram matrix would also make the spectral norms of the SPD
construction inexact. :func:`full_precision` turns autocast off inside the decorated function
and lifts half-precision tensor arguments to float32 (float64 stays float64).
"""

from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["full_precision"]

_HALF = (torch.float16, torch.bfloat16)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device type
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def _lift(value):
    if isinstance(value, torch.Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def full_precision(fn):
    """Run ``fn`` with autocast off and its half-precision tensor arguments in float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        active = [d for d in ("cuda", "cpu") if _autocast_on(d)]
        if not active:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in active:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*[_lift(a) for a in args], **{k: _lift(v) for k, v in kwargs.items()})

    return wrapper
