"""A posterior over some latent blocks, completed by the prior's exact conditional for the rest.

For a block law whose marginals and conditionals are known (the asymmetric Laplace law: its
conditional is a GIG mixture of Gaussians) this is the law ``q(z_A) p(z_B | z_A)`` that a block
guide uses when the components outside ``A`` are absent. The Gaussian case has a closed form as
one GMRF (:func:`~pyro_mcvae.distributions.gmrf.complete_from_prior`); this class is the general
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

__all__ = ["PriorCompletion"]


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
