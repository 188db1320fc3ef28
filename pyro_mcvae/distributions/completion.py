"""A posterior over some latent blocks, completed by the prior's exact conditional for the rest.

For a block law whose marginals and conditionals are known (the asymmetric Laplace law: its
conditional is a GIG mixture of Gaussians) this is the law ``q(z_A) p(z_B | z_A)`` that a block
guide uses when the components outside ``A`` are absent. The Gaussian case has a closed form as
one GMRF (:func:`~pyro_mcvae.distributions.completed_gmrf.complete_from_prior`); this class is the general
one, by its density::

    log q(z) = log q_A(z_A) + log p(z) - log p_A(z_A),

so that ``log q(z) - log p(z) = log q_A(z_A) - log p_A(z_A)`` for every ``z``: the ELBO and the
importance weights are those of the present components alone.
"""

from __future__ import annotations

from typing import Sequence

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..validation import check_component_indices
from .gmrf import component_indices

__all__ = ["PriorCompletion", "RowGroups", "SampledCompletion", "mask_groups"]


class PriorCompletion(dist.TorchDistribution):
    """``q(z_A) p(z_B | z_A)`` over ``M`` blocks of ``d`` coordinates.

    Args:
        observed_law: ``q_A``, a law over the blocks of ``components`` concatenated in increasing
            order, event shape ``(|A| d,)``, with ``rsample`` and ``log_prob``.
        prior: the prior over all ``M d`` coordinates, batch shape ``()``, with
            ``condition({component: value (..., d)})`` (a law with ``sample``; its batch shape
            follows the values'), ``marginal(components)`` and ``log_prob``.
        components: ``A``, the blocks ``q_A`` covers (at least one, not all).
        num_components, component_dim: ``M`` and ``d``.

    ``rsample`` reparameterises ``z_A`` only; the other blocks are drawn from the conditional
    without a gradient of their own (their density cancels in ``log q - log p``).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, observed_law, prior, components: Sequence[int], num_components: int,
                 component_dim: int, validate_args=None):
        comps = check_component_indices(components, num_components, "observed component")
        if not comps or len(comps) == num_components:
            raise ValueError(f"components must be a non-empty proper subset of the {num_components} blocks, "
                             f"got {list(components)}")
        m, d = num_components, component_dim
        if observed_law.event_shape != (len(comps) * d,):
            raise ValueError(f"observed_law must have event shape ({len(comps) * d},) for {len(comps)} blocks "
                             f"of size {d}, got {tuple(observed_law.event_shape)}")
        if prior.event_shape != (m * d,) or prior.batch_shape != ():
            raise ValueError(f"prior must have batch shape () and event shape ({m * d},), got "
                             f"{tuple(prior.batch_shape)} and {tuple(prior.event_shape)}")
        self.observed_law, self.prior, self.components = observed_law, prior, comps
        self.num_components, self.component_dim = m, d
        device = prior.mean.device
        self._ia = component_indices(comps, d, device)
        rest = [k for k in range(m) if k not in comps]
        order = torch.cat([self._ia, component_indices(rest, d, device)])
        self._unshuffle = torch.argsort(order)  # (z_A, z_B) -> z
        super().__init__(observed_law.batch_shape, (m * d,), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PriorCompletion, _instance)
        new.observed_law = self.observed_law.expand(batch_shape)
        new.prior, new.components = self.prior, self.components
        new.num_components, new.component_dim = self.num_components, self.component_dim
        new._ia, new._unshuffle = self._ia, self._unshuffle
        super(PriorCompletion, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        z_a = self.observed_law.rsample(sample_shape)
        d = self.component_dim
        given = {k: z_a[..., i * d:(i + 1) * d] for i, k in enumerate(self.components)}
        z_b = self.prior.condition(given).sample()
        return torch.cat([z_a, z_b.to(z_a.dtype)], -1).index_select(-1, self._unshuffle)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z_a = value.index_select(-1, self._ia)
        return (self.observed_law.log_prob(z_a) + self.prior.log_prob(value)
                - self.prior.marginal(self.components).log_prob(z_a))


def mask_groups(present: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The rows of a presence mask ``(batch, M)`` grouped by pattern: ``(pattern (M,), rows (n_g,))``
    for each distinct row, in sorted pattern order (at most ``2^M - 1`` groups)."""
    patterns, which = torch.unique(present, dim=0, return_inverse=True)
    return [(p, (which == u).nonzero().flatten()) for u, p in enumerate(patterns)]


class RowGroups(dist.TorchDistribution):
    """One law over ``batch`` rows (the last batch dimension) assembled from laws over disjoint
    groups of rows: the law of a block guide whose rows miss different components, when the
    completion's form depends on the pattern (the asymmetric Laplace conditional's GIG parameter
    depends on ``|A|``).

    Args:
        laws: one law per group, batch shape ``(*lead, n_g)``, the same event shape.
        rows: the rows of each group, ``(n_g,)`` long tensors partitioning ``0..batch-1``.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, laws: Sequence, rows: Sequence[torch.Tensor], validate_args=None):
        if len(laws) != len(rows) or not laws:
            raise ValueError("need one group of rows per law, and at least one law")
        order = torch.cat(list(rows))
        if not torch.equal(torch.sort(order).values, torch.arange(len(order), device=order.device)):
            raise ValueError("rows must partition 0..batch-1")
        lead = laws[0].batch_shape[:-1]
        for law, r in zip(laws, rows):
            if law.batch_shape != lead + (len(r),) or law.event_shape != laws[0].event_shape:
                raise ValueError(f"each law must have batch shape (*lead, n_g) and one event shape, got "
                                 f"{tuple(law.batch_shape)} for {len(r)} rows")
        self.laws, self.rows = list(laws), list(rows)
        self._unshuffle = torch.argsort(order)  # concatenated groups -> rows in order
        self.has_rsample = all(law.has_rsample for law in self.laws)
        super().__init__(lead + (len(order),), laws[0].event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        laws = [law.expand(batch_shape[:-1] + (len(r),)) for law, r in zip(self.laws, self.rows)]
        return RowGroups(laws, self.rows, validate_args=False)

    def _join(self, parts, dim: int) -> torch.Tensor:
        return torch.cat(parts, dim).index_select(dim, self._unshuffle)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._join([law.rsample(sample_shape) for law in self.laws], -1 - len(self.event_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._join([law.sample(sample_shape) for law in self.laws], -1 - len(self.event_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        dim = -1 - len(self.event_shape)
        value = value.expand(*value.shape[:dim], self.batch_shape[-1], *self.event_shape)
        return self._join([law.log_prob(value.index_select(dim, r)) for law, r in zip(self.laws, self.rows)], -1)


class SampledCompletion(dist.TorchDistribution):
    """``q(z_A) p(z_B | z_A)`` for a prior whose conditional law can be sampled but not evaluated
    (the NN-MRF: its conditional's normaliser depends on ``z_A``), each row with its own present
    blocks ``A``.

    Args:
        padded_law: a law over all ``M d`` coordinates (batch shape ``(..., batch)``, with
            ``rsample`` and ``log_prob``) whose absent blocks are ``N(0, I)`` and independent of the
            present ones: ``q_A`` padded (what a block guide's encoders give with absent
            components' outputs made inert and no couplings to them).
        present: bool ``(..., batch, M)``, at least one True per row.
        complete: ``complete(z (C, M d), present (C, M)) -> (C, M d)``: the present blocks of ``z``
            kept, the absent ones drawn from the prior's conditional (e.g. by HMC), detached.
        component_dim: ``d``.

    ``log_prob`` is ``log q_A(z_A)`` alone: the conditional's density, which cannot be evaluated,
    is left out. Under ``E_q[log p(z) - log q(z)]`` with ``log p(z) = -E(z) - log Z`` that leaves
    the value short by ``E[log p(z_B | z_A)]`` but keeps the gradient unbiased: with ``z_B`` drawn
    from the conditional and held fixed, ``-grad E(z_A, z_B)`` estimates ``grad log p(z_A)`` both
    in the prior's parameters and (through the reparameterised ``z_A``) in the encoders' (Fisher's
    identity). Importance weights ``p(x, z) / q(z)`` need the left-out density: only the ELBO's
    gradient is available (``pyro_mcvae.infer.objectives`` refuses the importance-weighted ones).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, padded_law, present: torch.Tensor, complete, component_dim: int, validate_args=None):
        if present.dtype != torch.bool or present.shape[-1] * component_dim != padded_law.event_shape[-1]:
            raise ValueError(f"present must be bool (..., M) with M * d = {padded_law.event_shape[-1]}, got "
                             f"{present.dtype} {tuple(present.shape)} with d = {component_dim}")
        if not bool(present.any(-1).all()):
            raise ValueError("present must have a True in every row")
        self.padded_law, self.complete, self.component_dim = padded_law, complete, int(component_dim)
        self.present = present.expand(*padded_law.batch_shape, present.shape[-1])
        super().__init__(padded_law.batch_shape, padded_law.event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return SampledCompletion(self.padded_law.expand(batch_shape), self.present.expand(*batch_shape, -1),
                                 self.complete, self.component_dim, validate_args=False)

    def _absent_coordinates(self) -> torch.Tensor:
        return ~self.present.repeat_interleave(self.component_dim, -1)  # (..., M d)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        z = self.padded_law.rsample(sample_shape)
        n, m = z.shape[-1], self.present.shape[-1]
        present = self.present.expand(*z.shape[:-1], m).reshape(-1, m)
        drawn = self.complete(z.detach().reshape(-1, n), present).reshape(z.shape).to(z.dtype)
        return torch.where(self._absent_coordinates(), drawn.detach(), z)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # The padded law is q_A(z_A) N(z_B; 0, I): evaluated with z_B = 0 it is q_A(z_A) times
        # (2 pi)^(-|B| d / 2), which is taken out again.
        absent = self._absent_coordinates()
        log_2pi = torch.log(torch.tensor(2 * torch.pi, dtype=value.dtype, device=value.device))
        return (self.padded_law.log_prob(torch.where(absent, torch.zeros_like(value), value))
                + 0.5 * log_2pi * absent.sum(-1).to(value.dtype))
