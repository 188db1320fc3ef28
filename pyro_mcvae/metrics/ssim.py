"""Structural similarity (SSIM) between paired images, via scikit-image.

``skimage.metrics.structural_similarity`` with its defaults (uniform ``7x7`` window, sample
covariances, ``K1 = 0.01``, ``K2 = 0.03``), the SSIM map averaged over the window positions that
fit inside the image; for colour images the per-channel SSIMs are averaged (``channel_axis``).
The ``7x7`` window fits PolyMNIST's 28x28 images; smaller images get the largest odd window that
fits (at least 3).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

__all__ = ["ssim", "mean_ssim"]


def _window(height: int, width: int, win_size: int | None) -> int:
    if win_size is None:
        side = min(7, height, width)
        win_size = side if side % 2 else side - 1
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if win_size > min(height, width):
        raise ValueError(f"win_size={win_size} exceeds the image size {height}x{width}")
    return win_size


def _check_pair(images_a, images_b, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be float images, got dtype {x.dtype}")
        if x.dim() not in (3, 4):
            raise ValueError(f"{name} must have shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} holds no images (shape {tuple(x.shape)})")
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"images_a and images_b must have the same shape (paired images), "
            f"got {tuple(images_a.shape)} and {tuple(images_b.shape)}"
        )
    if not (isinstance(data_range, (int, float)) and np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    out = []
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        arr = x.detach().cpu().to(torch.float64).numpy()
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > data_range:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, data_range={data_range}]"
            )
        out.append(arr)
    return out[0], out[1]


def ssim(
    images_a: torch.Tensor, images_b: torch.Tensor, data_range: float = 1.0, win_size: int | None = None
) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` float64 between paired images.

    Args:
        images_a, images_b: ``(N, C, H, W)`` (channels averaged) or ``(N, H, W)``, with values
            in ``[0, data_range]``.
        data_range: the dynamic range of the images (1 for images in ``[0, 1]``).
        win_size: odd side of the uniform window; default ``min(7, H, W)`` made odd.

    Returns:
        ``(N,)`` SSIM of ``images_a[i]`` and ``images_b[i]``; 1 for identical images.
    """
    a, b = _check_pair(images_a, images_b, data_range)
    win = _window(a.shape[-2], a.shape[-1], win_size)
    channel_axis = 0 if a.ndim == 4 else None
    values = [
        structural_similarity(x, y, win_size=win, data_range=float(data_range), channel_axis=channel_axis)
        for x, y in zip(a, b)
    ]
    return torch.tensor(values, dtype=torch.float64)


def mean_ssim(
    images_a: torch.Tensor, images_b: torch.Tensor, data_range: float = 1.0, win_size: int | None = None
) -> float:
    """Mean over the ``N`` image pairs of :func:`ssim`."""
    return float(ssim(images_a, images_b, data_range, win_size).mean())
