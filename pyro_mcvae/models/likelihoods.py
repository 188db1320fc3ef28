"""Per-component observation models ``p(x_k | z_k)``."""

from __future__ import annotations

import math

import torch
from torch import nn
import pyro.distributions as dist

from ..distributions.factorized import CoordinateLaplace, CoordinateNormal

__all__ = ["ComponentLikelihood", "LIKELIHOODS"]

LIKELIHOODS = ("normal", "laplace", "bernoulli")


class ComponentLikelihood(nn.Module):
    """Likelihood of one component given its decoder output.

    Args:
        kind: ``"normal"``, ``"laplace"`` or ``"bernoulli"`` (decoder output = logits).
        dim: the component's size ``D_k``.
        scale: ``"learned"`` (one positive scale per coordinate, trained) or a positive float
            (fixed). Ignored for Bernoulli.
        init_scale: starting value of a learned scale.
    """

    def __init__(self, kind: str, dim: int, scale="learned", init_scale: float = 0.1):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {kind!r}")
        self.kind = kind
        self.learned = scale == "learned"
        if kind != "bernoulli":
            if self.learned:
                self.log_scale = nn.Parameter(torch.full((dim,), math.log(init_scale)))
            else:
                try:
                    value = float(scale)
                except (TypeError, ValueError):
                    raise ValueError(f"scale must be 'learned' or a positive number, got {scale!r}") from None
                if not value > 0:
                    raise ValueError(f"a fixed scale must be positive, got {value}")
                self.register_buffer("log_scale", torch.full((dim,), math.log(value)))

    @property
    def domain(self) -> tuple[str, float, float] | None:
        """``(kind, low, high)``: the values the data may take (Bernoulli: ``[0, 1]``, the
        probabilities its log density extends to), or ``None`` for any real number."""
        return ("bernoulli", 0.0, 1.0) if self.kind == "bernoulli" else None

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        """Distribution with event shape ``(D_k,)`` and batch shape ``params.shape[:-1]``
        (Normal and Laplace: the laws of ``distributions/factorized.py``, the torch laws' values
        with the scale kept per coordinate)."""
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=params, validate_args=False).to_event(1)
        law = CoordinateNormal if self.kind == "normal" else CoordinateLaplace
        return law(params, self.log_scale.exp())

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Expected value of ``x_k``: the location, or the probability for Bernoulli."""
        return torch.sigmoid(params) if self.kind == "bernoulli" else params
