"""MVAE's sub-sampled objective: one ELBO summed over several subsets of components."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from pyro import poutine
from pyro.infer import ELBO

from ...models.base import EncoderGuide

__all__ = ["SubsetELBO", "SubsetTrained"]


SCORES = ("subset", "all")


@runtime_checkable
class SubsetTrained(Protocol):
    """A model trained on a sum over subsets of components: MVAE (``subset_scoring = "subset"``:
    each term is the ELBO of the subset alone) and the GMRF with subset-posterior terms
    (``"all"``: each term is the ELBO of the whole tuple under the posterior given the subset)."""

    subset_scoring: str

    def subset_terms(self) -> tuple[torch.Tensor, int, torch.Tensor | None] | None:
        """Fixed subsets ``(T, M)``, random terms per step, their candidates ``(P, M)``; or None."""

    def subset_per_example(self) -> bool:
        """Whether each datum of a random term draws its own subset (else one per batch)."""


class SubsetELBO(ELBO):
    """Sum of an objective over several subsets of components.

    Each row of ``subsets`` (bool ``(T, M)``) is one term, and ``num_random`` more terms are
    drawn at every call, uniformly with replacement from the rows of ``pool`` (torch's global
    generator, so seeded runs repeat), each shared by the batch, or with ``per_example=True``
    drawn for every datum of the batch separately (the same expectation; every component's
    encoder then gets a gradient from the random terms at every step, not one subset's
    encoders). What a term is depends on ``score``:

    - ``"subset"`` (Wu & Goodman's sub-sampled ELBO, MVAE): the model and the guide both run with
      only the term's components present, the ELBO of ``x_A``;
    - ``"all"``: the guide runs with only the term's components ``A`` present and the model
      scores every component, the ELBO of the whole tuple with the subset posterior as the
      variational law, ``E_{q(z | x_A)}[log p(x | z)] - KL(q(z | x_A) || p(z))``. For a block
      latent ``q(z | x_A) = q(z_A | x_A) p(z_B | z_A)`` (the prior completes the absent blocks),
      so the KL is ``KL(q(z_A | x_A) || p(z_A))`` and the likelihood of ``x_B`` is read at
      blocks drawn from the prior's conditional: the path conditional generation takes. Each
      term is a lower bound on ``log p(x)`` (a variational law that ignores ``x_B``).

    Any ``mask`` the caller passes is combined with each term's components (and, with
    ``"all"``, still decides what the model scores). All terms run as one stacked batch: the
    objective is a sum over data, so that is the sum of the terms. With ``"all"`` and a guide
    whose ``encodes_copies_once`` is set (the GMRF's), the guide runs its encoders and global
    network once per datum, not once per term (``encode_once=False`` turns this off: the same
    loss and gradients, at the cost of a network pass per term).
    """

    def __init__(self, elbo, subsets: torch.Tensor, num_random: int = 0, pool: torch.Tensor | None = None,
                 score: str = "subset", per_example: bool = False, encode_once: bool = True):
        for name, rows in (("subsets", subsets), ("pool", pool)):
            if rows is None:
                continue
            if rows.dtype != torch.bool or rows.dim() != 2 or not bool(rows.any(-1).all()):
                raise ValueError(f"{name} must be a bool (T, M) tensor with a component in every row")
        if num_random and (pool is None or pool.shape[0] == 0 or pool.shape[1] != subsets.shape[1]):
            raise ValueError("num_random > 0 needs a pool of candidate subsets (P, M) with the same M")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        super().__init__()
        self.elbo, self.subsets, self.num_random, self.pool = elbo, subsets, int(num_random), pool
        self.score, self.per_example, self.encode_once = score, bool(per_example), bool(encode_once)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its traces in its loss methods")

    def terms(self, device=None, batch: int | None = None) -> torch.Tensor:
        """The subsets of this call: the fixed ones, then the random ones, ``(T + num_random, M)``;
        with ``per_example`` and a ``batch`` size, ``(T + num_random, batch, M)`` (the fixed
        rows repeated over the batch, the random ones drawn per datum)."""
        rows = self.subsets
        if self.per_example and batch is not None:
            rows = rows.unsqueeze(1).expand(-1, batch, -1)
            if self.num_random:
                pick = torch.randint(self.pool.shape[0], (self.num_random, batch))
                rows = torch.cat([rows, self.pool[pick]])
        elif self.num_random:
            pick = torch.randint(self.pool.shape[0], (self.num_random,))
            rows = torch.cat([rows, self.pool[pick]])
        return rows.to(device)

    def _stacked(self, xs, mask):
        """The ``T`` terms as one batch: the data repeated ``T`` times, each copy with its mask;
        returns the data, the mask of the guide, the mask of the model, ``T``, and which stacked
        rows hold a term (None: all). With ``"all"`` a term whose components are all absent from
        its datum (every component alone given, on incomplete data) does not exist, and its row is
        left out of both programs (its guide then sees the datum's present components, any law
        that can be built; the completed posterior needs one). With ``"subset"`` such a row is the
        ELBO of no component, zero, as it stands."""
        stacked = isinstance(xs, torch.Tensor)
        parts = [xs] if stacked else list(xs)
        batch = parts[0].shape[0]
        terms = self.terms(parts[0].device, batch)
        t = terms.shape[0]
        rows = terms if terms.dim() == 3 else terms.unsqueeze(1).expand(t, batch, -1)  # (T, batch, M)
        held = None
        if mask is not None:
            rows = rows & mask.unsqueeze(0)
            valid = rows.any(-1) if self.score == "all" else None
            if valid is not None and not bool(valid.all()):
                rows = torch.where(valid.unsqueeze(-1), rows, mask.unsqueeze(0))
                held = valid.reshape(t * batch)
        parts = [p.repeat(t, *([1] * (p.dim() - 1))) for p in parts]
        guide_mask = rows.reshape(t * batch, -1)
        if self.score == "subset":
            model_mask = guide_mask
        else:
            model_mask = None if mask is None else mask.repeat(t, 1)
        return (parts[0] if stacked else parts), guide_mask, model_mask, t, held

    def _call(self, method, model, guide, xs, args, mask, kwargs):
        xs, guide_mask, model_mask, t, held = self._stacked(xs, mask)

        def without_void_rows(program):  # rows without a term count nothing in either program
            return program if held is None else poutine.mask(program, mask=held)

        if self.score == "subset":
            return getattr(self.elbo, method)(without_void_rows(model), without_void_rows(guide), xs, *args,
                                              mask=guide_mask, **kwargs)

        # The stacked rows are copies of one batch: a guide that can runs its networks once per
        # datum (the same law, EncoderGuide.forward's ``copies``).
        once = self.encode_once and t > 1 and isinstance(guide, EncoderGuide) and guide.encodes_copies_once
        copies = {"copies": t} if once else {}

        def guide_given_subset(*a, mask=None, **kw):  # the model's mask is not the guide's here
            return guide(*a, mask=guide_mask, **copies, **kw)

        return getattr(self.elbo, method)(without_void_rows(model), without_void_rows(guide_given_subset), xs, *args,
                                          mask=model_mask, **kwargs)

    def loss(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        return self._call("loss", model, guide, xs, args, mask, kwargs)

    def loss_and_grads(self, model, guide, xs, *args, mask=None, **kwargs) -> float:
        return self._call("loss_and_grads", model, guide, xs, args, mask, kwargs)

    def differentiable_loss(self, model, guide, xs, *args, mask=None, **kwargs) -> torch.Tensor:
        return self._call("differentiable_loss", model, guide, xs, args, mask, kwargs)
