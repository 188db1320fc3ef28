"""Evaluators: run a trained model's generation and score it. Separate from the models."""

from __future__ import annotations

import numpy as np
import torch

from .data import CopulaDataset, copula_spearman, sample_copula
from .metrics import conditional_copula_metrics, copula_metrics, noise_floor, quantile_errors, spearman_error

__all__ = ["evaluate_copula", "evaluate_heavy_tails", "copula_noise_floor", "generate_copula",
           "heavy_tail_noise_floor", "heavy_tail_population"]


def _stack(parts: list[torch.Tensor]) -> np.ndarray:
    """``M`` tensors ``(..., J)`` to an array ``(..., M, J)``."""
    return torch.stack([p.detach().cpu() for p in parts], dim=-2).numpy()


@torch.no_grad()
def generate_copula(model, dataset, device="cpu", sample_likelihood: bool = False) -> dict:
    """Unconditional draws (as many as test tuples) and, for each source component ``k``, one
    conditional draw per test tuple with component ``k`` observed. Arrays ``(n, M, J)``.

    ``sample_likelihood``: draw ``x ~ p(x | z)`` instead of taking the decoder mean. A model whose
    components share one small latent needs the likelihood's noise to produce each component's
    own variation; the decoder mean makes them functions of the same ``z``.
    """
    test = torch.as_tensor(dataset.test, device=device)
    n, m = test.shape[0], test.shape[1]
    out = {"unconditional": _stack(model.sample(n, sample_likelihood)), "conditional": {}}
    for k in range(m):
        parts = model.condition({k: test[:, k]}, num_samples=1, sample_likelihood=sample_likelihood)
        out["conditional"][k] = _stack([p[0] for p in parts])
    return out


def copula_noise_floor(dataset: CopulaDataset, population_n: int = 20000) -> dict:
    """Each metric between two independent true samples: what sampling noise alone gives."""
    floor = noise_floor(dataset.test, dataset.reference)
    big = sample_copula(population_n, seed=dataset.seed + 10_000, num_components=dataset.num_components,
                        num_coordinates=dataset.num_coordinates, rho=dataset.rho,
                        mean=dataset.mean, std=dataset.std)
    target = copula_spearman(dataset.num_components, dataset.num_coordinates, dataset.rho)
    floor["spearman_population_error"] = spearman_error(big.reshape(population_n, -1), target)
    floor["population_n"] = population_n
    return floor


@torch.no_grad()
def evaluate_copula(model, dataset: CopulaDataset, device="cpu", population_n: int = 20000,
                    sample_likelihood: bool = False) -> dict:
    """Every copula number for one trained model.

    ``unconditional``/``conditional``: W1 (and marginal W1, Spearman) against the held-out test
    tuples, with as many generated tuples as test tuples. ``spearman_population_error``: the
    largest error of the Spearman matrix of ``population_n`` generated tuples against the
    copula's population value, which sampling noise affects far less than the sample-to-sample
    comparison.
    """
    model.eval()
    gen = generate_copula(model, dataset, device, sample_likelihood)
    big = _stack(model.sample(population_n, sample_likelihood)).reshape(population_n, -1)
    target = copula_spearman(dataset.num_components, dataset.num_coordinates, dataset.rho)
    return {
        "unconditional": copula_metrics(gen["unconditional"], dataset.test),
        "conditional": conditional_copula_metrics(gen["conditional"], dataset.test),
        "spearman_population_error": spearman_error(big, target),
        "samples": gen,
    }


TAIL_LEVELS = (0.01, 0.99)


def heavy_tail_population(dataset, n: int, offset: int):
    """``n`` fresh true tuples of the dataset's law, from seed ``dataset.seed + offset``."""
    from .data import sample_skew_t

    return sample_skew_t(n, dataset.seed + offset, num_components=dataset.num_components,
                         num_coordinates=dataset.num_coordinates, rho=dataset.rho, df=dataset.df,
                         skew=dataset.skew)


def heavy_tail_noise_floor(dataset, reference: np.ndarray, population_n: int = 20000) -> dict:
    """The heavy-tail metrics between two independent true samples: W1 of test against
    reference tuples; quantile errors of ``population_n`` fresh true tuples against the large
    true ``reference`` sample (the comparison the models get)."""
    floor = noise_floor(dataset.test, dataset.reference)
    floor["quantile_errors"] = quantile_errors(heavy_tail_population(dataset, population_n, 10_000),
                                               reference, TAIL_LEVELS)
    floor["population_n"] = population_n
    return floor


@torch.no_grad()
def evaluate_heavy_tails(model, dataset, reference: np.ndarray, device="cpu", population_n: int = 20000,
                         sample_likelihood: bool = True) -> dict:
    """Joint W1 against the test tuples (unconditional and conditional on each single component,
    as for the copula) and the 1% / 99% quantile errors of ``population_n`` generated tuples
    against ``reference``, a large true sample (the test set's own extreme quantiles are too
    noisy for heavy tails)."""
    model.eval()
    gen = generate_copula(model, dataset, device, sample_likelihood)
    big = _stack(model.sample(population_n, sample_likelihood))
    return {
        "unconditional": copula_metrics(gen["unconditional"], dataset.test),
        "conditional": conditional_copula_metrics(gen["conditional"], dataset.test),
        "quantile_errors": quantile_errors(big, reference, TAIL_LEVELS),
        "samples": gen | {"population": big},
    }
