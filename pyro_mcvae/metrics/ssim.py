"""Structural similarity (SSIM) between paired images: scikit-image's definition, batched in torch.

The definition is ``skimage.metrics.structural_similarity`` with its defaults (uniform ``7x7``
window, sample covariances with the ``NP / (NP - 1)`` correction, ``K1 = 0.01``, ``K2 = 0.03``),
the SSIM map averaged over the window positions that fit inside the image; for colour images the
per-channel SSIMs are averaged (``channel_axis``). The ``7x7`` window fits PolyMNIST's 28x28
images; smaller images get the largest odd window that fits (at least 3).

Only the window positions that fit inside the image are averaged, so scikit-image's boundary
mode never enters: each local mean is the mean of a window that lies inside the image (a valid
box filter, computed separably). That computes every pair of a batch at once, in float64 (the
variances are differences of means, where float32 would cancel digits), in chunks of ``chunk``
pairs to bound the memory. ``backend="skimage"``
calls scikit-image itself pair by pair (about 0.4 ms a pair on one core: 80 s for the 200,000
pairs of one PolyMNIST evaluation); the tests hold the two backends equal to 1e-10.
"""

from __future__ import annotations

import numpy as np
import torch

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


def _check_pair(images_a, images_b, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches validated and returned as float64 CPU tensors ``(N, C, H, W)`` (grey images
    get one channel)."""
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
        x = x.detach().to("cpu", torch.float64)
        if bool(torch.isnan(x).any()):
            raise ValueError(f"{name} contains NaN values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > data_range:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, data_range={data_range}]"
            )
        out.append(x if x.dim() == 4 else x.unsqueeze(1))
    return out[0], out[1]


def _ssim_batch(a: torch.Tensor, b: torch.Tensor, data_range: float, win: int) -> torch.Tensor:
    """``(n,)`` SSIM of float64 pairs ``(n, C, H, W)``: the SSIM map over the valid window
    positions, averaged over positions and channels."""
    def mean(t):
        # The window mean, separably: rows, then columns (on one core about 4x faster than
        # ``avg_pool2d`` for float64 images of this size, and equal to it to 1e-15).
        return t.unfold(-1, win, 1).mean(-1).unfold(-2, win, 1).mean(-1)

    cov_norm = win * win / (win * win - 1.0)  # sample (unbiased) covariances, as skimage's default
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def _ssim_skimage(a: torch.Tensor, b: torch.Tensor, data_range: float, win: int) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    values = [structural_similarity(x, y, win_size=win, data_range=float(data_range), channel_axis=0)
              for x, y in zip(a.numpy(), b.numpy())]
    return torch.tensor(values, dtype=torch.float64)


def ssim(
    images_a: torch.Tensor, images_b: torch.Tensor, data_range: float = 1.0, win_size: int | None = None,
    backend: str = "torch", chunk: int = 128,
) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` float64 between paired images.

    Args:
        images_a, images_b: ``(N, C, H, W)`` (channels averaged) or ``(N, H, W)``, with values
            in ``[0, data_range]``.
        data_range: the dynamic range of the images (1 for images in ``[0, 1]``).
        win_size: odd side of the uniform window; default ``min(7, H, W)`` made odd.
        backend: ``"torch"`` (batched, the default) or ``"skimage"`` (scikit-image, pair by pair).
        chunk: pairs computed at once by the torch backend (128 keeps a chunk's float64 maps in
            the cache; larger chunks were slower on one core).

    Returns:
        ``(N,)`` SSIM of ``images_a[i]`` and ``images_b[i]``; 1 for identical images.
    """
    if backend not in ("torch", "skimage"):
        raise ValueError(f"backend must be 'torch' or 'skimage', got {backend!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    a, b = _check_pair(images_a, images_b, data_range)
    win = _window(a.shape[-2], a.shape[-1], win_size)
    if backend == "skimage":
        return _ssim_skimage(a, b, data_range, win)
    return torch.cat([_ssim_batch(a[i:i + chunk], b[i:i + chunk], float(data_range), win)
                      for i in range(0, a.shape[0], chunk)])


def mean_ssim(
    images_a: torch.Tensor, images_b: torch.Tensor, data_range: float = 1.0, win_size: int | None = None
) -> float:
    """Mean over the ``N`` image pairs of :func:`ssim`."""
    return float(ssim(images_a, images_b, data_range, win_size).mean())
