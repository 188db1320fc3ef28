"""Digit classifiers for PolyMNIST: the MoPoE architecture, its pretrained weights, and our own.

Coherence (``pyro_mcvae.metrics.coherence``) needs one digit classifier per modality. Two sources:

- the five classifiers distributed with the MoPoE-VAE code (``load_mopoe_classifiers``), an
  external judge that makes our coherence numbers comparable with the published ones;
- classifiers trained by :func:`pyro_mcvae.metrics.coherence.train_digit_classifiers`, saved to one file with their metadata
  (``save_classifiers`` / ``load_classifiers``).

Both use :class:`DigitClassifier`. Images are float tensors in ``[0, 1]``; PolyMNIST tuples are
``(N, M, 3, 28, 28)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from .._io import atomic_torch_save, read_torch_file
import torch.nn as nn
import torch.nn.functional as F


__all__ = [
    "DigitClassifier",
    "load_mopoe_classifiers",
    "StackedDigitClassifiers",
    "check_classifiers",
    "check_images",
    "check_labels",
    "predict_digits",
    "classifier_accuracy",
    "save_classifiers",
    "load_classifiers",
]

IMAGE_SHAPE = (3, 28, 28)
NUM_CLASSES = 10
FEATURE_DIM = 128
CLASSIFIERS_FORMAT = "pyro_mcvae-digit-classifiers-1"
MOPOE_FILE_PATTERN = "pretrained_img_to_digit_clf_m{}"


class DigitClassifier(nn.Module):
    """The PolyMNIST digit classifier of MoPoE-VAE, layer for layer (state-dict keys
    ``encoder.{0,3,7,10}``, so the published weights load unchanged).

    ``forward``: images ``(N, 3, 28, 28)`` in ``[0, 1]`` -> logits ``(N, 10)``.
    """

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 10, kernel_size=4, stride=2, padding=1),  # 0: -> (10, 14, 14)
            nn.Dropout2d(0.5),
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=4, stride=2, padding=1),  # 3: -> (20, 7, 7)
            nn.Dropout2d(0.5),
            nn.ReLU(),
            nn.Flatten(),  # 6: -> 980
            nn.Linear(980, FEATURE_DIM),  # 7
            nn.Dropout(0.5),
            nn.ReLU(),  # 9: the penultimate activations
            nn.Linear(FEATURE_DIM, NUM_CLASSES),  # 10
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` of images ``(N, 3, 28, 28)``."""
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(N, 128)`` (after the last ReLU) of images ``(N, 3, 28, 28)``,
        always computed in eval mode (no dropout); the module's train/eval mode is restored."""
        was_training = self.training
        self.eval()
        try:
            return self.encoder[:10](x)
        finally:
            self.train(was_training)


# --------------------------------------------------------------------------------------------
# input checks


def check_images(images, name: str, ndim: int, allow_uint8: bool = False) -> torch.Tensor:
    """Float images in ``[0, 1]`` with ``ndim`` dimensions (or uint8 where ``allow_uint8``; those
    stay uint8, to be scaled by 1/255 batch by batch)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(images).__name__}")
    if allow_uint8 and images.dtype == torch.uint8 and images.dim() == ndim and images.numel():
        return images
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float images in [0, 1] (or uint8), got dtype {images.dtype}")
    if images.dim() != ndim:
        want = "(N, M, C, H, W)" if ndim == 5 else "(N, C, H, W)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    lo, hi = (float(v) for v in torch.aminmax(images))  # one pass; NaN propagates into both
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(clamp decoder means with .clamp(0, 1) or rescale)"
        )
    return images


def check_labels(labels, n: int, name: str = "labels") -> torch.Tensor:
    """Integer digit labels ``(n,)`` in ``0..9``, returned as int64."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name} must be integer digit labels, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {tuple(labels.shape)}")
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(f"{name} must lie in 0..9, got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def check_classifiers(classifiers, num_modalities: int) -> list[nn.Module]:
    if isinstance(classifiers, nn.ModuleList):
        classifiers = list(classifiers)
    if isinstance(classifiers, nn.Module) or not isinstance(classifiers, Sequence):
        raise ValueError(
            f"classifiers must be a list of {num_modalities} modules (one per modality), "
            f"got {type(classifiers).__name__}"
        )
    if len(classifiers) != num_modalities:
        raise ValueError(
            f"got {len(classifiers)} classifiers for {num_modalities} modalities; expected one per modality"
        )
    for k, clf in enumerate(classifiers):
        if not callable(clf):
            raise ValueError(f"classifier {k} is not callable (got {type(clf).__name__})")
    return list(classifiers)


def _module_device(module, default: torch.device) -> torch.device:
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
    return default


@torch.no_grad()
def predict_digits(classifiers: Sequence[nn.Module], images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Argmax predictions ``(N, M)`` int64 of classifier ``k`` on ``images[:, k]`` (checked input),
    in eval mode and batches; each classifier's train/eval mode is restored afterwards."""
    n, m = images.shape[:2]
    out = torch.empty(n, m, dtype=torch.int64)
    modes = [getattr(c, "training", None) for c in classifiers]
    try:
        for clf in classifiers:
            if isinstance(clf, nn.Module):
                clf.eval()
        for k, clf in enumerate(classifiers):
            device = _module_device(clf, images.device)
            for start in range(0, n, batch_size):
                x = images[start : start + batch_size, k].to(device)
                if x.dtype == torch.uint8:
                    x = x.float() / 255.0
                out[start : start + batch_size, k] = clf(x).argmax(-1).cpu()
    finally:
        for clf, mode in zip(classifiers, modes):
            if isinstance(clf, nn.Module) and mode is not None:
                clf.train(mode)
    return out


def classifier_accuracy(
    classifiers: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """Accuracy ``(M,)`` of classifier ``k`` on ``images[:, k]`` against ``labels``.

    Args:
        classifiers: ``M`` modules mapping ``(B, 3, 28, 28)`` to logits ``(B, 10)``.
        images: ``(N, M, 3, 28, 28)`` float in ``[0, 1]`` (or uint8).
        labels: ``(N,)`` integer digits.
    """
    images = check_images(images, "images", 5, allow_uint8=True)
    labels = check_labels(labels, images.shape[0])
    classifiers = check_classifiers(classifiers, images.shape[1])
    pred = predict_digits(classifiers, images, batch_size)
    return (pred == labels[:, None]).double().mean(0)


# --------------------------------------------------------------------------------------------
# loading state dicts


def _load_state_dict_into(clf: DigitClassifier, state, source: str) -> None:
    """Load ``state`` into ``clf``; a clear ``ValueError`` naming missing, unexpected or
    mis-shaped keys otherwise."""
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{source} is not a state dict (a mapping of parameter names to tensors); "
            f"got {type(state).__name__}"
        )
    expected = clf.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append("wrong shapes " + "; ".join(wrong))
    if problems:
        raise ValueError(
            f"{source} does not match the DigitClassifier architecture "
            f"(keys encoder.{{0,3,7,10}}.{{weight,bias}}): " + ", ".join(problems)
        )
    clf.load_state_dict(state)


def load_mopoe_classifiers(
    directory: str | os.PathLike, modalities: Iterable[int] = range(5), device="cpu"
) -> list[DigitClassifier]:
    """The pretrained PolyMNIST classifiers of MoPoE-VAE, one per modality, in eval mode.

    Reads ``directory/pretrained_img_to_digit_clf_m{k}`` for each ``k`` in ``modalities`` with
    ``torch.load(..., weights_only=True)`` (no code from the file is executed).

    Raises:
        FileNotFoundError: the directory or one of the files does not exist.
        ValueError: a file is unreadable, not a state dict, or its keys/shapes do not match.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MoPoE classifier directory {directory} does not exist; expected a folder holding "
            f"{MOPOE_FILE_PATTERN.format('{k}')} files (distributed with the MoPoE-VAE code)"
        )
    classifiers = []
    for k in modalities:
        path = directory / MOPOE_FILE_PATTERN.format(int(k))
        state = read_torch_file(path, FileNotFoundError(f"MoPoE classifier for modality {k} not found: {path}"),
                                f"cannot read MoPoE classifier {path} as a state dict", device)
        clf = DigitClassifier().to(device)
        _load_state_dict_into(clf, state, f"MoPoE classifier file {path}")
        classifiers.append(clf.eval())
    return classifiers


# --------------------------------------------------------------------------------------------
# training our own: the M classifiers run as one grouped network


class StackedDigitClassifiers(nn.Module):
    """``M`` independent :class:`DigitClassifier` s evaluated in one pass: the convolutions are
    grouped by modality and the linear layers batched, so modality ``k`` only ever sees
    ``images[:, k]`` and only its own weights. Input ``(B, M, 3, 28, 28)`` -> logits ``(B, M, 10)``."""

    def __init__(self, classifiers: Sequence[DigitClassifier]):
        super().__init__()
        m = self.num_modalities = len(classifiers)
        enc = [c.encoder for c in classifiers]
        self.conv1 = nn.Conv2d(3 * m, 10 * m, 4, 2, 1, groups=m)
        self.conv2 = nn.Conv2d(10 * m, 20 * m, 4, 2, 1, groups=m)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.cat([e[0].weight for e in enc]))
            self.conv1.bias.copy_(torch.cat([e[0].bias for e in enc]))
            self.conv2.weight.copy_(torch.cat([e[3].weight for e in enc]))
            self.conv2.bias.copy_(torch.cat([e[3].bias for e in enc]))
        self.w1 = nn.Parameter(torch.stack([e[7].weight.detach() for e in enc]))  # (M, 128, 980)
        self.b1 = nn.Parameter(torch.stack([e[7].bias.detach() for e in enc]))  # (M, 128)
        self.w2 = nn.Parameter(torch.stack([e[10].weight.detach() for e in enc]))  # (M, 10, 128)
        self.b2 = nn.Parameter(torch.stack([e[10].bias.detach() for e in enc]))  # (M, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m = x.shape[:2]
        h = x.reshape(b, m * 3, 28, 28)  # modality-major channels, as the groups expect
        # Dropout2d zeroes whole channels, so dropping channels of the stacked map is the same
        # as dropping them in each classifier separately.
        h = F.relu(F.dropout2d(self.conv1(h), 0.5, self.training))
        h = F.relu(F.dropout2d(self.conv2(h), 0.5, self.training))
        h = h.reshape(b, m, 980)  # each modality's (20, 7, 7) block, flattened as nn.Flatten does
        h = torch.einsum("bmi,moi->bmo", h, self.w1) + self.b1
        h = F.relu(F.dropout(h, 0.5, self.training))
        return torch.einsum("bmi,moi->bmo", h, self.w2) + self.b2

    def unstack(self) -> list[DigitClassifier]:
        out = []
        for k in range(self.num_modalities):
            clf = DigitClassifier()
            state = {
                "encoder.0.weight": self.conv1.weight[10 * k : 10 * (k + 1)],
                "encoder.0.bias": self.conv1.bias[10 * k : 10 * (k + 1)],
                "encoder.3.weight": self.conv2.weight[20 * k : 20 * (k + 1)],
                "encoder.3.bias": self.conv2.bias[20 * k : 20 * (k + 1)],
                "encoder.7.weight": self.w1[k],
                "encoder.7.bias": self.b1[k],
                "encoder.10.weight": self.w2[k],
                "encoder.10.bias": self.b2[k],
            }
            clf.load_state_dict({key: v.detach().cpu().clone() for key, v in state.items()})
            out.append(clf.eval())
        return out


# --------------------------------------------------------------------------------------------
# saving and loading our own


def _plain_metadata(value, where: str = "metadata"):
    """Metadata as plain Python (str/int/float/bool/None, lists, str-keyed dicts), so the file
    loads with ``weights_only=True``; tensors and NumPy values become numbers or lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_metadata(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be strings, got {k!r}")
            out[k] = _plain_metadata(v, f"{where}[{k!r}]")
        return out
    raise ValueError(
        f"{where} must hold only str/int/float/bool/None, lists, dicts or tensors, got {type(value).__name__}"
    )


def save_classifiers(
    classifiers: Sequence[DigitClassifier], path: str | os.PathLike, metadata: Mapping | None = None
) -> Path:
    """Write ``M`` classifiers and ``metadata`` (e.g. seed, epochs, test accuracy) to one file.

    The file is a dict written by ``torch.save``, ``{"format": "pyro_mcvae-digit-classifiers-1",
    "state_dicts": [...], "metadata": {...}}`` written to a temporary file and renamed over
    ``path``, so an interruption never leaves a torn file. ``metadata`` must be plain data
    (tensors are converted to lists).
    """
    if isinstance(classifiers, nn.Module) or not isinstance(classifiers, Sequence) or not classifiers:
        raise ValueError("classifiers must be a non-empty list of DigitClassifier")
    for k, clf in enumerate(classifiers):
        if not isinstance(clf, DigitClassifier):
            raise ValueError(f"classifier {k} must be a DigitClassifier, got {type(clf).__name__}")
    payload = {
        "format": CLASSIFIERS_FORMAT,
        "architecture": "DigitClassifier",
        "num_modalities": len(classifiers),
        "state_dicts": [{k: v.detach().cpu() for k, v in c.state_dict().items()} for c in classifiers],
        "metadata": _plain_metadata(dict(metadata or {})),
    }
    return atomic_torch_save(payload, path)


def load_classifiers(path: str | os.PathLike, device="cpu") -> tuple[list[DigitClassifier], dict]:
    """Read a file written by :func:`save_classifiers`: ``(classifiers, metadata)``, the
    classifiers in eval mode on ``device``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is corrupt, or not a pyro_mcvae classifier file (e.g. a MoPoE
            state dict: use :func:`load_mopoe_classifiers` for those).
    """
    path = Path(path)
    payload = read_torch_file(path, FileNotFoundError(f"no classifier file at {path}"),
                              f"classifier file {path} is corrupt or not a torch file", device)
    if not isinstance(payload, Mapping) or payload.get("format") != CLASSIFIERS_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise ValueError(
            f"{path} is not a pyro_mcvae classifier file (expected format {CLASSIFIERS_FORMAT!r}, "
            f"found {found!r}); MoPoE's pretrained files load with load_mopoe_classifiers()"
        )
    states = payload.get("state_dicts")
    if not isinstance(states, list) or not states:
        raise ValueError(f"classifier file {path} holds no state dicts")
    classifiers = []
    for k, state in enumerate(states):
        clf = DigitClassifier()
        _load_state_dict_into(clf, state, f"classifier {k} in {path}")
        classifiers.append(clf.to(device).eval())
    return classifiers, dict(payload.get("metadata") or {})
