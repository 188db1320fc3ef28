"""Fréchet distances between image sets: FID (Inception features) and a digit-feature variant.

The Fréchet distance between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` is

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``.

FID is this distance between Gaussians fitted to the 2048-d pool features of the FID Inception
network (pytorch-fid's port of TensorFlow's 2015-12-05 Inception-v3). Its weights
(``pt_inception-2015-12-05-6726825d.pth``) are never replaced by random ones: without them
:class:`InceptionFeatureExtractor` raises :class:`InceptionWeightsUnavailable`.

:func:`digit_frechet_distance` uses the 128-d features of a PolyMNIST digit classifier instead:
it works offline, but its values are not FID values and are not comparable with published FIDs.

FID is biased upwards for small samples (and its covariance is rank-deficient below 2048
images); compare values only at equal sample sizes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import torch

from pyro_mcvae.nets.classifier import check_images

__all__ = [
    "gaussian_statistics",
    "frechet_distance",
    "InceptionWeightsUnavailable",
    "InceptionFeatureExtractor",
    "fid",
    "digit_features",
    "digit_frechet_distance",
]

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "PYRO_MCVAE_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_WEIGHTS_FILE
)


# --------------------------------------------------------------------------------------------
# Gaussian statistics and the Fréchet distance


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` (divisor ``N - 1``, as ``np.cov``) of
    ``features`` ``(N, F)``, in float64."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(features)
    if features.dim() != 2:
        raise ValueError(f"features must have shape (N, F), got {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    x = features.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("features contain NaN or infinite values")
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, 0.5 * (sigma + sigma.T)


def _as_covariance(sigma, dim: int, name: str) -> torch.Tensor:
    sigma = torch.as_tensor(sigma).detach().to(device="cpu", dtype=torch.float64)
    if sigma.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the mean, got {tuple(sigma.shape)}")
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    scale = float(sigma.abs().max())
    if float((sigma - sigma.T).abs().max()) > 1e-6 * max(scale, 1e-300):
        raise ValueError(f"{name} is not symmetric; expected a covariance matrix")
    return 0.5 * (sigma + sigma.T)


def _rounding_floor(w: torch.Tensor) -> float:
    """Eigenvalues below this are rounding noise of a symmetric eigen-solver in float64."""
    return w.shape[0] * torch.finfo(torch.float64).eps * max(float(w.abs().max()), 1e-300)


def _psd_eigenvalues(matrix: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix. Eigenvalues at rounding level (either sign)
    become exactly 0: a singular covariance (fewer samples than features) then keeps its exact
    null space instead of gaining ``sqrt(eps)``-sized square roots. Clearly negative eigenvalues
    are an error."""
    w, v = torch.linalg.eigh(matrix)
    if float(w.min()) < -1e-6 * max(float(w.abs().max()), 1e-300):
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {float(w.min()):.3g})")
    return torch.where(w > _rounding_floor(w), w, torch.zeros_like(w)), v


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Means ``(F,)``, covariances ``(F, F)`` symmetric PSD; computed in float64 as
    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 sum_i sqrt(lambda_i)``, with ``lambda_i`` the
    eigenvalues of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2`` (it has the same trace square
    root as ``S1 S2``). Both square roots come from symmetric eigen-decompositions, so no complex
    arithmetic and no ill-conditioned inverse is needed; rounding-level eigenvalues are set to 0,
    and so is a rounding-level negative result.
    """
    mu1 = torch.as_tensor(mu1).detach().to(device="cpu", dtype=torch.float64)
    mu2 = torch.as_tensor(mu2).detach().to(device="cpu", dtype=torch.float64)
    if mu1.dim() != 1 or mu1.shape != mu2.shape or mu1.numel() == 0:
        raise ValueError(f"means must be vectors of equal size (F,), got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    if not (bool(torch.isfinite(mu1).all()) and bool(torch.isfinite(mu2).all())):
        raise ValueError("means contain NaN or infinite values")
    dim = mu1.shape[0]
    s1 = _as_covariance(sigma1, dim, "sigma1")
    s2 = _as_covariance(sigma2, dim, "sigma2")
    w1, v1 = _psd_eigenvalues(s1, "sigma1")
    w2, _ = _psd_eigenvalues(s2, "sigma2")
    sqrt_s1 = (v1 * w1.sqrt()) @ v1.T
    middle = sqrt_s1 @ s2 @ sqrt_s1
    middle = 0.5 * (middle + middle.T)
    lam = torch.linalg.eigvalsh(middle)
    # Forming the product costs up to ~dim * eps * ||S1|| ||S2|| per eigenvalue, which can exceed
    # eps * lambda_max(middle) when the two covariances point in different directions; a zero
    # eigenvalue computed as that noise would add its square root (~1e-8) to the trace.
    floor = max(_rounding_floor(lam), _rounding_floor(w1) * float(w2.max()))
    trace_sqrt = torch.where(lam > floor, lam, torch.zeros_like(lam)).sqrt().sum()
    diff = mu1 - mu2
    value = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


# --------------------------------------------------------------------------------------------
# FID Inception network


class InceptionWeightsUnavailable(RuntimeError):
    """The FID Inception weights could not be found or downloaded."""


_HOW_TO_GET_WEIGHTS = (
    f"FID needs the Inception weights file {INCEPTION_WEIGHTS_FILE} (pytorch-fid's port of the "
    f"TensorFlow FID network, from {INCEPTION_WEIGHTS_URL}). Download it on a machine with "
    f"internet access and pass its path: InceptionFeatureExtractor(weights_path=...), "
    f"--inception-weights PATH in the examples, or the environment variable {INCEPTION_WEIGHTS_ENV}; "
    f"or put it in torch hub's cache ({{cache}}). Without it use digit_frechet_distance (not FID)."
)

_patch_lock = threading.Lock()


def _pytorch_fid_inception():
    """``pytorch_fid.inception``, or an ImportError saying how to install it."""
    try:
        import pytorch_fid.inception as pfi
    except ImportError as err:
        raise ImportError(
            f"FID needs the pytorch-fid package (pip install pytorch-fid): {err}"
        ) from err
    return pfi


@contextlib.contextmanager
def _pytorch_fid_weights(state_dict):
    """Make pytorch-fid's ``InceptionV3`` take its FID weights from ``state_dict`` instead of
    downloading them: its builder fetches them through the module-level
    ``load_state_dict_from_url``, which is swapped for the duration of the block."""
    pfi = _pytorch_fid_inception()

    def from_memory(url, *args, **kwargs):
        if not url.endswith(INCEPTION_WEIGHTS_FILE):  # pragma: no cover - a pytorch-fid change
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}")
        return state_dict

    with _patch_lock:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = from_memory
        try:
            yield
        finally:
            pfi.load_state_dict_from_url = original


def _hub_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _read_weights(path: Path, origin: str) -> dict:
    if not path.is_file():
        raise InceptionWeightsUnavailable(
            f"Inception weights file {path} (from {origin}) does not exist. "
            + _HOW_TO_GET_WEIGHTS.format(cache=_hub_cache_file())
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a torn or foreign file
        raise InceptionWeightsUnavailable(
            f"cannot read Inception weights {path} (from {origin}): {err}. "
            + _HOW_TO_GET_WEIGHTS.format(cache=_hub_cache_file())
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} (from {origin}) is not a state dict of the FID Inception network")
    return state


def _build_inception(state_dict):
    """pytorch-fid's ``InceptionV3`` (2048-d pool block, resize to 299, scale to [-1, 1]) holding
    ``state_dict``; a state dict of another network is a ``ValueError`` naming the keys."""
    InceptionV3 = _pytorch_fid_inception().InceptionV3

    with _pytorch_fid_weights(state_dict):
        try:
            net = InceptionV3(
                [InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True
            )
        except RuntimeError as err:  # load_state_dict: missing/unexpected keys, wrong shapes
            detail = str(err) if len(str(err)) <= 800 else str(err)[:800] + " ..."
            raise ValueError(f"the weights do not fit the FID Inception network: {detail}") from None
    return net


class InceptionFeatureExtractor:
    """2048-d pool features of the FID Inception network (pytorch-fid's ``InceptionV3``).

    Weights, in this order: ``weights_path``; the file named by the environment variable
    ``PYRO_MCVAE_INCEPTION_WEIGHTS``; the copy in torch hub's cache
    (``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``); if ``download``,
    pytorch-fid's own download into that cache. Files are read with ``weights_only=True``.
    Never random weights: when none is found, :class:`InceptionWeightsUnavailable`.

    Calling it maps images ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (grey, repeated to RGB) in
    ``[0, 1]`` to float32 features ``(N, 2048)`` on the CPU; inputs are resized bilinearly to
    299x299 and scaled to ``[-1, 1]`` exactly as pytorch-fid does.

    Attributes:
        network: the ``pytorch_fid.inception.InceptionV3`` module (eval mode, on ``device``).
        source: where the weights came from.
    """

    feature_dim = 2048

    def __init__(self, weights_path=None, device="cpu", batch_size: int = 50, download: bool = True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        env = os.environ.get(INCEPTION_WEIGHTS_ENV)
        if weights_path is not None:
            state, self.source = _read_weights(Path(weights_path), "weights_path"), str(weights_path)
        elif env:
            state, self.source = _read_weights(Path(env), f"${INCEPTION_WEIGHTS_ENV}"), env
        elif _hub_cache_file().is_file():
            cached = _hub_cache_file()
            state, self.source = _read_weights(cached, "torch hub's cache"), str(cached)
        elif download:
            state, self.source = None, INCEPTION_WEIGHTS_URL
        else:
            raise InceptionWeightsUnavailable(
                "no Inception weights given and download=False. " + _HOW_TO_GET_WEIGHTS.format(cache=_hub_cache_file())
            )
        if state is None:
            InceptionV3 = _pytorch_fid_inception().InceptionV3

            try:
                net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
            except Exception as err:  # no network, HTTP error, hash mismatch, torn download...
                raise InceptionWeightsUnavailable(
                    f"downloading the Inception weights failed ({type(err).__name__}: {err}). "
                    + _HOW_TO_GET_WEIGHTS.format(cache=_hub_cache_file())
                ) from err
        else:
            net = _build_inception(state)
        self.network = net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, 2048)`` float32 (CPU) of images ``(N, 3 or 1, H, W)`` in ``[0, 1]``."""
        images = check_images(images, "images", 4)
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            x = images[start : start + self.batch_size].to(self.device, torch.float32)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            pooled = self.network(x)[0]  # (B, 2048, 1, 1)
            out.append(pooled.flatten(1).cpu())
        return torch.cat(out)


def fid(images_a: torch.Tensor, images_b: torch.Tensor, extractor) -> float:
    """FID between two image sets ``(N_a, C, H, W)`` and ``(N_b, C, H, W)`` in ``[0, 1]``.

    ``extractor`` maps images to features ``(N, F)``: an :class:`InceptionFeatureExtractor` for
    FID proper (another callable gives the Fréchet distance in its feature space).
    """
    fa, fb = extractor(images_a), extractor(images_b)
    return frechet_distance(*gaussian_statistics(fa), *gaussian_statistics(fb))


# --------------------------------------------------------------------------------------------
# offline stand-in: digit-classifier features


@torch.no_grad()
def digit_features(classifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    param = next(iter(classifier.parameters()), None) if hasattr(classifier, "parameters") else None
    device = param.device if param is not None else images.device
    starts = range(0, images.shape[0], batch_size)
    return torch.cat([classifier.features(images[s : s + batch_size].to(device)).cpu() for s in starts])


def digit_frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor, classifier, batch_size: int = 1000) -> float:
    """Fréchet distance between image sets in the 128-d feature space of a digit classifier.

    NOT FID: the features are the penultimate activations of ``classifier`` (a
    :class:`~pyro_mcvae.nets.DigitClassifier`, via its ``features``), not Inception's, so the
    values are on another scale and not comparable with published FIDs. It needs no download.

    Args:
        images_a, images_b: ``(N_a, 3, 28, 28)`` and ``(N_b, 3, 28, 28)`` in ``[0, 1]`` (one
            modality; use the classifier trained for that modality).
        classifier: a module with ``features(x) -> (B, 128)``.
    """
    if not hasattr(classifier, "features"):
        raise ValueError(f"classifier must have a features() method (DigitClassifier), got {type(classifier).__name__}")
    a = check_images(images_a, "images_a", 4)
    b = check_images(images_b, "images_b", 4)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    fa, fb = digit_features(classifier, a, batch_size), digit_features(classifier, b, batch_size)
    return frechet_distance(*gaussian_statistics(fa), *gaussian_statistics(fb))
