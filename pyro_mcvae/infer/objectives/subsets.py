"""MVAE's sub-sampled objective: one ELBO summed over several subsets of components."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from pyro.infer import ELBO

__all__ = ["SubsetELBO", "SubsetTrained"]


@runtime_checkable
class SubsetTrained(Protocol):
    """A model trained on a sum over subsets of components (MVAE)."""

    def subset_terms(self) -> tuple[torch.Tensor, int, torch.Tensor | None] | None:
        """Fixed subsets ``(T, M)``, random terms per step, their candidates ``(P, M)``; or None."""


class SubsetELBO(ELBO):
    """Sum of an objective over several subsets of components (Wu & Goodman's sub-sampled ELBO).

    Each row of ``subsets`` (bool ``(T, M)``) is one term: the model and guide run with only those
    components present (combined with any ``mask`` the caller passes). ``num_random`` more terms
    are drawn at every call, uniformly with replacement from the rows of ``pool`` (torch's
    global generator, so seeded runs repeat), each shared by the batch. All terms run as one
    stacked batch: the objective is a sum over data, so that is the sum of the terms.
    """

    def __init__(self, elbo, subsets: torch.Tensor, num_random: int = 0, pool: torch.Tensor | None = None):
        for name, rows in (("subsets", subsets), ("pool", pool)):
            if rows is None:
                continue
            if rows.dtype != torch.bool or rows.dim() != 2 or not bool(rows.any(-1).all()):
                raise ValueError(f"{name} must be a bool (T, M) tensor with a component in every row")
        if num_random and (pool is None or pool.shape[0] == 0 or pool.shape[1] != subsets.shape[1]):
            raise ValueError("num_random > 0 needs a pool of candidate subsets (P, M) with the same M")
        super().__init__()
        self.elbo, self.subsets, self.num_random, self.pool = elbo, subsets, int(num_random), pool

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its traces in its loss methods")

    def terms(self, device=None) -> torch.Tensor:
        """The subsets of this call ``(T + num_random, M)``: the fixed ones, then the random ones."""
        rows = self.subsets
        if self.num_random:
            pick = torch.randint(self.pool.shape[0], (self.num_random,))
            rows = torch.cat([rows, self.pool[pick]])
        return rows.to(device)

    def _stacked(self, xs, mask):
        """The ``T`` terms as one batch: the data repeated ``T`` times, each copy with its mask."""
        stacked = isinstance(xs, torch.Tensor)
        parts = [xs] if stacked else list(xs)
        terms = self.terms(parts[0].device)
        batch, t = parts[0].shape[0], terms.shape[0]
        rows = terms.unsqueeze(1).expand(t, batch, -1)  # (T, batch, M)
        if mask is not None:
            rows = rows & mask.unsqueeze(0)
        parts = [p.repeat(t, *([1] * (p.dim() - 1))) for p in parts]
        return (parts[0] if stacked else parts), rows.reshape(t * batch, -1)

    def loss(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        xs, mask = self._stacked(xs, mask)
        return self.elbo.loss(model, guide, xs, *args, mask=mask, **kwargs)

    def loss_and_grads(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        xs, mask = self._stacked(xs, mask)
        return self.elbo.loss_and_grads(model, guide, xs, *args, mask=mask, **kwargs)

    def differentiable_loss(self, model, guide, xs, *args, mask=None, **kwargs) -> torch.Tensor:
        xs, mask = self._stacked(xs, mask)
        return self.elbo.differentiable_loss(model, guide, xs, *args, mask=mask, **kwargs)
