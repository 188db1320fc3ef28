"""Structural coherence of multi-component image assemblies (the bicycle case).

An assembly is ``K`` component images ``(N, K, H, W)`` drawn in a common frame (ink >= 0 on a
zero background), e.g. saddle, frame, crank, wheels and handlebars of a bicycle.

Centres of mass use the pixel-centre convention: pixel ``(row r, col c)`` sits at
``x = (c + 0.5) / W``, ``y = (r + 0.5) / H`` in unit coordinates (``x`` to the right, ``y``
downwards, both in ``[0, 1]``); in pixel units the same point is ``(c + 0.5, r + 0.5)``.

Empty components (no ink) have no centre of mass: their centre is NaN (both coordinates).
:func:`com_wasserstein` drops every assembly with an empty component and reports how many it
dropped; :func:`empty_components` flags them beforehand.

The GMRF MCVAE paper (arXiv 2507.12165) reports W1 between centre-of-mass laws (GMRF 0.31,
baselines 0.46-0.51) without stating the coordinate scale; this module defaults to unit
coordinates (resolution-independent) and offers pixel units, so compare models within this
library rather than with the paper's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..infer.callbacks import ProgressBar
from ..infer.loop import SupervisedTrainer
from .fid import fid
from .ssim import ssim
from .wasserstein import wasserstein_joint

__all__ = [
    "centres_of_mass",
    "empty_components",
    "com_wasserstein",
    "com_wasserstein_report",
    "overlay",
    "assembly_ssim",
    "assembly_fid",
    "KeypointRegressor",
    "train_keypoint_regressor",
    "predict_keypoints",
    "assembly_validity",
]

_UNITS = ("unit", "pixels")


# --------------------------------------------------------------------------------------------
# input checks


def _check_images(images, name: str, ndims: Sequence[int] = (4,), shape_text: str = "(N, K, H, W)") -> torch.Tensor:
    """Float, finite, non-negative images with one of ``ndims`` dimensions."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor {shape_text}, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float images, got dtype {images.dtype}")
    if images.dim() not in ndims:
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))  # NaN propagates into both
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN values")
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{name} contains infinite values")
    if lo < 0.0:
        raise ValueError(f"{name} must be non-negative (ink >= 0 on a 0 background), got a minimum of {lo:.4g}")
    return images


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (threshold >= 0):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    return float(threshold)


def _check_centres(centres, name: str) -> torch.Tensor:
    """Precomputed centres ``(N, K, 2)``: float, NaN allowed (empty components), no inf."""
    if not isinstance(centres, torch.Tensor) or centres.dim() != 3 or centres.shape[-1] != 2:
        raise ValueError(
            f"{name} must be images (N, K, H, W) or centres of mass (N, K, 2), "
            f"got {tuple(getattr(centres, 'shape', ())) or type(centres).__name__}"
        )
    if not centres.is_floating_point():
        raise ValueError(f"{name} centres must be floating point, got dtype {centres.dtype}")
    if centres.shape[0] == 0 or centres.shape[1] == 0:
        raise ValueError(f"{name} holds no centres (shape {tuple(centres.shape)})")
    if bool(torch.isinf(centres).any()):
        raise ValueError(f"{name} contains infinite centres")
    return centres


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# centres of mass


def centres_of_mass(images: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Intensity-weighted centre of every component image.

    Args:
        images: ``(N, K, H, W)`` float, finite, ``>= 0``.
        threshold: pixels with values ``< threshold`` count as background (0). The default keeps
            every pixel; a small value (e.g. 0.1) stops a decoder's faint background haze from
            pulling centres towards the middle of the image.

    Returns:
        ``(N, K, 2)`` float64 ``(x, y)`` in unit coordinates, ``x = (col + 0.5) / W``,
        ``y = (row + 0.5) / H``, on the device of ``images``; NaN for an empty component (no
        pixel at or above the threshold, or all zero).
    """
    images = _check_images(images, "images")
    threshold = _check_threshold(threshold)
    if threshold > 0:
        images = torch.where(images >= threshold, images, torch.zeros((), dtype=images.dtype, device=images.device))
    height, width = images.shape[-2:]
    # Project onto the axes first: the (N, K, W) and (N, K, H) profiles are small enough to
    # take to float64 without copying the whole image stack.
    col_mass = images.sum(-2).to(torch.float64)  # (N, K, W)
    row_mass = images.sum(-1).to(torch.float64)  # (N, K, H)
    xs = (torch.arange(width, dtype=torch.float64, device=images.device) + 0.5) / width
    ys = (torch.arange(height, dtype=torch.float64, device=images.device) + 0.5) / height
    mass = col_mass.sum(-1)
    empty = mass <= 0
    safe = torch.where(empty, torch.ones_like(mass), mass)
    centres = torch.stack([(col_mass * xs).sum(-1) / safe, (row_mass * ys).sum(-1) / safe], dim=-1)
    return centres.masked_fill(empty.unsqueeze(-1), float("nan"))


def empty_components(x: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Flag empty components: ``(N, K)`` bool.

    Args:
        x: images ``(N, K, H, W)`` (empty: no pixel ``>= threshold`` with positive value) or
            centres ``(N, K, 2)`` from :func:`centres_of_mass` (empty: NaN centre).
        threshold: as in :func:`centres_of_mass` (images only).

    Returns:
        ``(N, K)`` bool; ``.sum()`` counts the empty components, ``.any(1)`` flags the
        assemblies that :func:`com_wasserstein` drops.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return torch.isnan(centres_of_mass(x, threshold)[..., 0])
    return torch.isnan(_check_centres(x, "x")).any(-1)


# --------------------------------------------------------------------------------------------
# Wasserstein distance between centre-of-mass laws


def _centres_and_size(x, name: str, threshold: float):
    """``(centres (N, K, 2) unit coordinates, (H, W) or None)`` from images or centres."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return centres_of_mass(x, threshold), tuple(x.shape[-2:])
    return _check_centres(x, name).detach().to(torch.float64), None


def com_wasserstein_report(
    real: torch.Tensor,
    generated: torch.Tensor,
    max_points: int | None = None,
    seed: int = 0,
    units: str = "unit",
    image_size: tuple[int, int] | None = None,
    threshold: float = 0.0,
) -> dict:
    """Exact W1 between the joint laws of the assemblies' centres of mass, with its bookkeeping.

    Each assembly is the point ``(x_1, y_1, ..., x_K, y_K)`` in ``R^{2K}``; the distance is
    the exact Wasserstein-1 distance between the two empirical laws (uniform weights,
    Euclidean ground cost, POT's network simplex via
    :func:`pyro_mcvae.metrics.wasserstein.wasserstein_joint`). A rigid shift of every centre
    by the same 2-vector ``v`` moves each point by ``(v, ..., v)``, hence W1 = ``sqrt(K) |v|``.

    Args:
        real, generated: images ``(N, K, H, W)`` (float, ``>= 0``) or precomputed centres
            ``(N, K, 2)`` in unit coordinates (NaN for empty components); the two may differ
            in ``N`` but not in ``K``.
        max_points: if given, after dropping, both sets are subsampled without replacement to
            the same size ``min(max_points, n_real, n_generated)`` (the solver needs
            ``O(n_real * n_generated)`` memory and roughly cubic time; a few thousand is fine).
        seed: seeds that subsampling (same seed, same subsets).
        units: ``"unit"`` (coordinates in ``[0, 1]``, the default) or ``"pixels"``
            (``x * W``, ``y * H``).
        image_size: ``(H, W)``, needed for ``units="pixels"`` when both inputs are centres;
            taken from the images otherwise.
        threshold: background threshold passed to :func:`centres_of_mass` for image inputs.

    Returns:
        dict with ``value`` (W1, float), ``units``, ``n_used_real``, ``n_used_generated``
        (points given to the solver) and ``n_dropped_real``, ``n_dropped_generated``
        (assemblies dropped for an empty component).

    Raises:
        ValueError: bad shapes or values, unknown units, a set left empty after dropping.
    """
    if units not in _UNITS:
        raise ValueError(f"units must be one of {_UNITS}, got {units!r}")
    if max_points is not None:
        _positive_int(max_points, "max_points")
    threshold = _check_threshold(threshold)
    centres_real, size_real = _centres_and_size(real, "real", threshold)
    centres_gen, size_gen = _centres_and_size(generated, "generated", threshold)
    if centres_real.shape[1] != centres_gen.shape[1]:
        raise ValueError(
            f"real has {centres_real.shape[1]} components and generated {centres_gen.shape[1]}; expected the same K"
        )

    if units == "pixels":
        sizes = {s for s in (size_real, size_gen, tuple(image_size) if image_size is not None else None) if s}
        if not sizes:
            raise ValueError('units="pixels" with centres as input needs image_size=(H, W)')
        if len(sizes) > 1:
            raise ValueError(f'units="pixels" needs one image size, got {sorted(sizes)}')
        height, width = sizes.pop()
        scale = torch.tensor([width, height], dtype=torch.float64)
    else:
        scale = torch.ones(2, dtype=torch.float64)

    points = {}
    dropped = {}
    for name, centres in (("real", centres_real), ("generated", centres_gen)):
        centres = centres.cpu()
        keep = ~torch.isnan(centres).any(-1).any(-1)
        dropped[name] = int((~keep).sum())
        if not bool(keep.any()):
            raise ValueError(
                f"every assembly in {name} has an empty component ({dropped[name]} dropped); nothing to compare"
            )
        points[name] = (centres[keep] * scale).flatten(1).numpy()

    if max_points is not None:
        n = min(max_points, len(points["real"]), len(points["generated"]))
        rng = np.random.default_rng(seed)
        for name in ("real", "generated"):
            idx = np.sort(rng.choice(len(points[name]), size=n, replace=False))
            points[name] = points[name][idx]

    return {
        "value": wasserstein_joint(points["real"], points["generated"]),
        "units": units,
        "n_used_real": len(points["real"]),
        "n_used_generated": len(points["generated"]),
        "n_dropped_real": dropped["real"],
        "n_dropped_generated": dropped["generated"],
    }


def com_wasserstein(
    real: torch.Tensor,
    generated: torch.Tensor,
    max_points: int | None = None,
    seed: int = 0,
    units: str = "unit",
    image_size: tuple[int, int] | None = None,
    threshold: float = 0.0,
) -> float:
    """W1 between centre-of-mass laws; the ``value`` of :func:`com_wasserstein_report` (see
    there for the arguments, the unit convention and how empty components are dropped)."""
    return com_wasserstein_report(real, generated, max_points, seed, units, image_size, threshold)["value"]


# --------------------------------------------------------------------------------------------
# full-bike images, SSIM and FID


def overlay(images: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """The full assembly as one image: ``(N, K, H, W) -> (N, H, W)``.

    ``mode="max"``: pixelwise maximum over the components; ``mode="sum"``: their sum clipped
    to at most 1 (for images in ``[0, 1]``).
    """
    images = _check_images(images, "images")
    if mode == "max":
        return images.amax(1)
    if mode == "sum":
        return images.sum(1).clamp(max=1.0)
    raise ValueError(f'mode must be "max" or "sum", got {mode!r}')


def _component_keys(k: int, component_names) -> list:
    if component_names is None:
        return list(range(k))
    names = list(component_names)
    if len(names) != k:
        raise ValueError(f"component_names has {len(names)} names for {k} components")
    return names


def _check_pair(real, generated, paired: bool) -> None:
    _check_images(real, "real")
    _check_images(generated, "generated")
    if paired and real.shape != generated.shape:
        raise ValueError(
            f"real and generated must have the same shape (paired assemblies), "
            f"got {tuple(real.shape)} and {tuple(generated.shape)}"
        )
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(
            f"real and generated differ in (K, H, W): {tuple(real.shape[1:])} and {tuple(generated.shape[1:])}"
        )


def assembly_ssim(
    real: torch.Tensor,
    generated: torch.Tensor,
    mode: str = "max",
    component_names: Sequence[str] | None = None,
    data_range: float = 1.0,
    win_size: int | None = None,
) -> dict:
    """Mean SSIM per component and of the full assembly, between paired assemblies.

    Args:
        real, generated: ``(N, K, H, W)`` in ``[0, data_range]``, paired (sample ``i`` of one
            is compared with sample ``i`` of the other, e.g. reconstructions).
        mode: how :func:`overlay` builds the full assembly.
        component_names: ``K`` keys for ``per_component`` (default ``0..K-1``).
        data_range, win_size: as in :func:`pyro_mcvae.metrics.ssim.ssim` (grey ``(N, H, W)``
            images; default window ``7x7``).

    Returns:
        dict with ``per_component`` ``{name: mean SSIM}``, ``component_mean`` (their mean) and
        ``assembly`` (mean SSIM of the overlaid images).
    """
    _check_pair(real, generated, paired=True)
    keys = _component_keys(real.shape[1], component_names)
    per = {key: float(ssim(real[:, k], generated[:, k], data_range, win_size).mean()) for k, key in enumerate(keys)}
    whole = ssim(overlay(real, mode), overlay(generated, mode), data_range, win_size)
    return {"per_component": per, "component_mean": float(np.mean(list(per.values()))), "assembly": float(whole.mean())}


def assembly_fid(
    real: torch.Tensor,
    generated: torch.Tensor,
    extractor,
    mode: str = "max",
    component_names: Sequence[str] | None = None,
) -> dict:
    """Fréchet distance per component and of the full assembly.

    Args:
        real, generated: ``(N_real, K, H, W)`` and ``(N_gen, K, H, W)`` in ``[0, 1]``; each set
            needs at least 2 assemblies.
        extractor: callable mapping grey images ``(N, 1, H, W)`` to features ``(N, F)``; an
            :class:`pyro_mcvae.metrics.fid.InceptionFeatureExtractor` gives FID proper (it
            repeats the grey channel to RGB); any other callable gives the Fréchet distance in
            its own feature space.
        mode: how :func:`overlay` builds the full assembly.
        component_names: ``K`` keys for ``per_component`` (default ``0..K-1``).

    Returns:
        dict with ``per_component`` ``{name: distance}``, ``component_mean`` and ``assembly``.
    """
    _check_pair(real, generated, paired=False)
    keys = _component_keys(real.shape[1], component_names)
    per = {key: fid(real[:, k : k + 1], generated[:, k : k + 1], extractor) for k, key in enumerate(keys)}
    whole = fid(overlay(real, mode).unsqueeze(1), overlay(generated, mode).unsqueeze(1), extractor)
    return {"per_component": per, "component_mean": float(np.mean(list(per.values()))), "assembly": whole}


# --------------------------------------------------------------------------------------------
# keypoints and assembly validity


class KeypointRegressor(nn.Module):
    """Small CNN locating ``num_points`` keypoints in one grey component image.

    Coordinate channels (CoordConv) are appended to the image; two stride-2 convolutions take it
    to a quarter-resolution grid, dilated convolutions (dilation 2, 4, 8) widen the receptive
    field to the whole 64x64 image (every convolution is followed by BatchNorm and ReLU), and a
    1x1 convolution gives one heatmap per keypoint. Each keypoint is the soft-argmax
    (softmax-weighted mean of the grid-cell centres) of its heatmap, so outputs lie in
    ``[0, 1]`` with the pixel-centre convention of :func:`centres_of_mass`. Soft-argmax rather
    than a dense regression head: it is translation-equivariant, so it learns from few images.

    Input ``(B, H, W)`` or ``(B, 1, H, W)`` with ``H`` and ``W`` multiples of 4 (made for
    64x64); output ``(B, num_points, 2)`` as ``(x, y)`` in unit coordinates.
    """

    def __init__(self, num_points: int, width: int = 16):
        super().__init__()
        self.num_points = _positive_int(num_points, "num_points")
        width = _positive_int(width, "width")
        half = max(width // 2, 1)

        def block(cin, cout, **kw):
            return [nn.Conv2d(cin, cout, 3, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(3, half, stride=2, padding=1),
            *block(half, width, stride=2, padding=1),
            *block(width, width, padding=2, dilation=2),
            *block(width, width, padding=4, dilation=4),
            *block(width, width, padding=8, dilation=8),
            nn.Conv2d(width, self.num_points, 1),
        )

    @staticmethod
    def _grid(n: int, device, dtype) -> torch.Tensor:
        return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (B, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if h % 4 or w % 4:
            raise ValueError(f"image height and width must be multiples of 4, got {h}x{w}")
        ys = self._grid(h, images.device, images.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = self._grid(w, images.device, images.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        heat = self.net(torch.cat([images, xs, ys], dim=1))  # (B, P, H/4, W/4)
        gh, gw = heat.shape[-2:]
        prob = heat.flatten(2).softmax(-1).view(b, self.num_points, gh, gw)
        x = (prob.sum(-2) * self._grid(gw, heat.device, heat.dtype)).sum(-1)
        y = (prob.sum(-1) * self._grid(gh, heat.device, heat.dtype)).sum(-1)
        return torch.stack([x, y], dim=-1)


def _grey_batch(images, name: str) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, 1, H, W)`` -> checked ``(N, H, W)``."""
    images = _check_images(images, name, (3, 4), "(N, H, W) or (N, 1, H, W)")
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(f"{name} must be grey images (N, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
        images = images[:, 0]
    return images


def train_keypoint_regressor(
    images: torch.Tensor,
    points: torch.Tensor,
    epochs: int = 5,
    seed: int = 0,
    device="cpu",
    progress: bool = True,
    batch_size: int = 32,
    lr: float = 3e-3,
    width: int = 16,
    callbacks: Sequence = (),
) -> KeypointRegressor:
    """Fit a :class:`KeypointRegressor` to labelled images (Adam, mean squared error in unit
    coordinates), with the package's :class:`~pyro_mcvae.infer.SupervisedTrainer`.

    Args:
        images: ``(N, H, W)`` (or ``(N, 1, H, W)``) float, ``>= 0``.
        points: ``(N, P, 2)`` keypoints ``(x, y)`` in unit coordinates (pixel-centre convention:
            a keypoint at pixel ``(r, c)`` is ``((c + 0.5) / W, (r + 0.5) / H)``), finite, in
            ``[0, 1]``. Their order is the order of the predictions.
        epochs, batch_size, lr, width: optimisation settings and network width. The defaults
            take about 20-25 s for 10k 64x64 images on one CPU core and locate the bottom
            bracket and dropouts of toy line-drawn frames to about 0.3 px (mean).
        seed: seeds the initial weights and the shuffling (same seed and device, same
            network); the global random state is left untouched.
        device: where to train; the model is returned there, in eval mode.
        progress: show a tqdm bar over the minibatches (with the root mean squared error in
            pixels at each epoch's end).
        callbacks: more training-loop callbacks (:mod:`pyro_mcvae.infer.callbacks`), e.g.
            ``CSVLogger`` or ``EarlyStopping``; the epoch rows' ``loss`` is the mean squared
            error in unit coordinates.

    Returns:
        the trained :class:`KeypointRegressor` with ``num_points = P``.
    """
    images = _grey_batch(images, "images")
    if not isinstance(points, torch.Tensor) or points.dim() != 3 or points.shape[-1] != 2:
        got = tuple(getattr(points, "shape", ())) or type(points).__name__
        raise ValueError(f"points must be a tensor (N, P, 2), got {got}")
    if points.shape[0] != images.shape[0]:
        raise ValueError(f"points has {points.shape[0]} rows for {images.shape[0]} images")
    if points.shape[1] == 0 or not bool(torch.isfinite(points).all()) or bool((points < 0).any() | (points > 1).any()):
        raise ValueError("points must hold at least one finite keypoint per image, in unit coordinates [0, 1]")
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    device = torch.device(device)
    x_all = images.detach().to(device, torch.float32)
    y_all = points.detach().to(device, torch.float32)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = KeypointRegressor(points.shape[1], width).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        pixels = x_all.shape[-1]
        # root mean squared coordinate error in pixels (of the image width): easier to read
        bar = ProgressBar(progress, desc="keypoint regressor", unit="batch",
                          postfix=lambda row: {"rmse_px": f"{math.sqrt(row['loss']) * pixels:.2f}"})
        SupervisedTrainer(model, lambda model, batch: F.mse_loss(model(batch[0]), batch[1]), [x_all, y_all],
                          optimizer, epochs, batch_size, seed=seed, callbacks=[bar, *callbacks]).fit()
    return model.eval()


@torch.no_grad()
def predict_keypoints(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Keypoints ``(N, P, 2)`` float32 on the CPU, ``(x, y)`` in unit coordinates, predicted
    by ``model`` (a :class:`KeypointRegressor`, run in eval mode on its own device) from grey
    images ``(N, H, W)`` or ``(N, 1, H, W)``."""
    images = _grey_batch(images, "images")
    _positive_int(batch_size, "batch_size")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    was_training = model.training
    model.eval()
    try:
        out = [
            model(images[s : s + batch_size].to(device, torch.float32)).cpu()
            for s in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def _summary(distances: torch.Tensor) -> dict:
    """Mean, median and 90th percentile (linear interpolation) of the finite distances."""
    finite = distances[torch.isfinite(distances)]
    if finite.numel() == 0:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    q = torch.quantile(finite, torch.tensor([0.5, 0.9], dtype=finite.dtype))
    return {"mean": float(finite.mean()), "median": float(q[0]), "p90": float(q[1])}


def assembly_validity(
    frames: torch.Tensor,
    cranks: torch.Tensor,
    wheels: torch.Tensor,
    frame_regressor: nn.Module,
    wheel_regressor: nn.Module,
    threshold: float = 0.0,
) -> dict:
    """Do the parts meet where the frame says they should? Distances in unit coordinates.

    The frame regressor reads 3 keypoints from each frame, in this order: bottom bracket, rear
    dropout, front fork end; the wheel regressor reads 2 from each wheels image: rear wheel
    centre, front wheel centre. Per assembly:

    - ``crank``: distance between the crank's centre of mass and the bottom bracket;
    - ``rear_wheel``: distance between the rear wheel centre and the rear dropout;
    - ``front_wheel``: distance between the front wheel centre and the front fork end.

    Apply it to real assemblies (with the same regressors) for the reference values: the
    regressors' own error and the data's geometry set a floor a generator cannot beat.

    Args:
        frames, cranks, wheels: ``(N, H, W)`` (or ``(N, 1, H, W)``) component images of the
            same assemblies.
        frame_regressor: :class:`KeypointRegressor` with 3 points, trained on real frames.
        wheel_regressor: :class:`KeypointRegressor` with 2 points, trained on real wheels.
        threshold: background threshold for the crank's centre of mass.

    Returns:
        dict ``{part: {"distances": (N,) float64 tensor, "mean", "median", "p90"}}`` for each
        ``part`` in ``"crank"``, ``"rear_wheel"``, ``"front_wheel"``, plus ``n`` and
        ``n_empty_cranks``. An empty crank gives a
        NaN distance, left out of the summaries and counted in ``n_empty_cranks``.
    """
    frames = _grey_batch(frames, "frames")
    cranks = _grey_batch(cranks, "cranks")
    wheels = _grey_batch(wheels, "wheels")
    if not (frames.shape == cranks.shape == wheels.shape):
        raise ValueError(
            f"frames, cranks and wheels must have the same shape, got "
            f"{tuple(frames.shape)}, {tuple(cranks.shape)}, {tuple(wheels.shape)}"
        )
    for name, model, want in (("frame_regressor", frame_regressor, 3), ("wheel_regressor", wheel_regressor, 2)):
        got = getattr(model, "num_points", None)
        if got != want:
            raise ValueError(f"{name} must predict {want} keypoints, it predicts {got}")
    frame_points = predict_keypoints(frame_regressor, frames).to(torch.float64)  # (N, 3, 2)
    wheel_points = predict_keypoints(wheel_regressor, wheels).to(torch.float64)  # (N, 2, 2)
    crank_centres = centres_of_mass(cranks.unsqueeze(1), threshold)[:, 0].cpu()  # (N, 2)
    distances = {
        "crank": (crank_centres - frame_points[:, 0]).norm(dim=-1),
        "rear_wheel": (wheel_points[:, 0] - frame_points[:, 1]).norm(dim=-1),
        "front_wheel": (wheel_points[:, 1] - frame_points[:, 2]).norm(dim=-1),
    }
    result = {name: {"distances": d, **_summary(d)} for name, d in distances.items()}
    result["n"] = frames.shape[0]
    result["n_empty_cranks"] = int(torch.isnan(distances["crank"]).sum())
    return result
