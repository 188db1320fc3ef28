"""Cross-modal coherence of generated PolyMNIST tuples, judged by digit classifiers.

Protocol (the one of MMVAE / MoPoE-VAE / MMVAE+ on PolyMNIST):

- **Judges.** One digit classifier per modality: classifier ``k`` reads modality ``k``
  (``pyro_mcvae.nets.load_mopoe_classifiers`` for the published ones, or
  ``train_digit_classifiers`` for our own). The judges are trained on real data and frozen;
  they are run in eval mode, without gradients.
- **Conditional coherence.** For a test tuple with label ``y`` and a subset ``A`` of observed
  modalities, the model generates the unobserved modalities ``B = {0..M-1} \\ A`` from ``x_A``.
  Coherence for ``A`` is the fraction of generated images ``x_k, k in B`` that classifier ``k``
  assigns to ``y``, averaged over ``k in B`` (:func:`conditional_coherence`).
- **By subset size.** For each size ``s = 1..M-1`` the coherence is averaged over all
  ``C(M, s)`` subsets of that size (:func:`coherence_by_subset_size`); its ``"mean"`` entry
  averages over all subsets, every subset weighted equally.
- **Unconditional coherence.** For tuples sampled from the prior there is no label; coherence is
  the fraction of tuples whose ``M`` predicted digits all agree (:func:`unconditional_coherence`).
  A generator that ignores the shared digit scores about ``10**-(M-1)``; one that copies it
  scores the judges' joint accuracy.

All images are float tensors in ``[0, 1]`` of shape ``(N, M, 3, 28, 28)``; labels ``(N,)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from pyro_mcvae.validation import check_component_indices
from pyro_mcvae.nets.classifier import _check_classifiers, _check_images, _check_labels, _predict_digits

__all__ = [
    "predict_digits",
    "conditional_coherence",
    "coherence_by_subset_size",
    "unconditional_coherence",
]


def predict_digits(classifiers: Sequence[nn.Module], images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted digits ``(N, M)`` int64: argmax of classifier ``k`` on ``images[:, k]``.

    Runs in eval mode (each module's mode is restored afterwards), without gradients, in batches
    of ``batch_size``, on each classifier's device; the result is on the CPU.

    Args:
        classifiers: ``M`` modules mapping ``(B, 3, 28, 28)`` to logits ``(B, 10)``.
        images: ``(N, M, 3, 28, 28)`` float in ``[0, 1]``.
    """
    images = _check_images(images, "images", 5)
    classifiers = _check_classifiers(classifiers, images.shape[1])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return _predict_digits(classifiers, images, batch_size)


def conditional_coherence(
    generated: torch.Tensor,
    labels: torch.Tensor,
    classifiers: Sequence[nn.Module],
    observed: Sequence[int],
    batch_size: int = 1000,
) -> float:
    """Coherence of modalities generated from the ``observed`` ones.

    Args:
        generated: ``(N, M, 3, 28, 28)`` tuples whose unobserved slots hold the generated
            images (the observed slots are ignored and may hold anything in ``[0, 1]``, e.g.
            the inputs or reconstructions).
        labels: ``(N,)`` the digit of the source tuple each row was generated from.
        classifiers: ``M`` digit classifiers, one per modality.
        observed: indices of the conditioning modalities, a proper subset of ``0..M-1``
            (may be empty: then every modality counts).

    Returns:
        ``mean_{k not in observed} P(classifier_k(generated[:, k]) == label)``, a float in [0, 1].
    """
    images = _check_images(generated, "generated", 5)
    n, m = images.shape[:2]
    labels = _check_labels(labels, n)
    observed = check_component_indices(observed, m, name="observed modality")
    targets = [k for k in range(m) if k not in observed]
    if not targets:
        raise ValueError(f"observed={observed} leaves no modality to judge; expected a proper subset of 0..{m - 1}")
    classifiers = _check_classifiers(classifiers, m)
    pred = _predict_digits([classifiers[k] for k in targets], images[:, targets], batch_size)
    return float((pred == labels[:, None]).double().mean())


def coherence_by_subset_size(
    results: Mapping[tuple[int, ...], float], num_modalities: int | None = None
) -> dict:
    """Average conditional coherences over the subsets of each size.

    Args:
        results: ``{observed subset (tuple of modality indices): coherence}``.
        num_modalities: if given, every subset of size ``1..M-1`` of ``0..M-1`` must be present
            (the literature's protocol); a missing one is an error naming it.

    Returns:
        ``{size: mean over the subsets of that size, ..., "mean": mean over all subsets}``;
        sizes are ints in increasing order, every subset is weighted equally in ``"mean"``.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {subset tuple: coherence}")
    by_size: dict[int, list[float]] = {}
    for subset, value in results.items():
        if isinstance(subset, (str, bytes)) or not isinstance(subset, Sequence):
            raise ValueError(f"result key {subset!r} is not a tuple of modality indices")
        if len(set(subset)) != len(subset):
            raise ValueError(f"result key {subset!r} repeats a modality")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"coherence for subset {subset!r} is {value}, expected a value in [0, 1]")
        by_size.setdefault(len(subset), []).append(value)
    if num_modalities is not None:
        present = {frozenset(int(k) for k in s) for s in results}
        missing = [
            c
            for s in range(1, num_modalities)
            for c in itertools.combinations(range(num_modalities), s)
            if frozenset(c) not in present
        ]
        if missing:
            raise ValueError(
                f"results miss {len(missing)} subset(s) of {num_modalities} modalities, e.g. {missing[:5]}"
            )
    out: dict = {size: sum(v) / len(v) for size, v in sorted(by_size.items())}
    values = [v for vs in by_size.values() for v in vs]
    out["mean"] = sum(values) / len(values)
    return out


def unconditional_coherence(
    generated: torch.Tensor, classifiers: Sequence[nn.Module], batch_size: int = 1000
) -> float:
    """Fraction of generated tuples ``(N, M, 3, 28, 28)`` whose ``M`` predicted digits all agree."""
    pred = predict_digits(classifiers, generated, batch_size)
    return float((pred == pred[:, :1]).all(dim=1).double().mean())
