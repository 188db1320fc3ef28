"""The two latent layouts and their generative programs.

- **Blocks** (GMRF, ALMRF, NN-MRF, the independent ablation): one latent block ``z_k`` of size
  ``d`` per component, ``z = (z_1..z_M)`` drawn jointly from an MRF prior; decoder ``k`` reads
  ``z_k`` alone. ``p(x, z) = p(z) prod_k p(x_k | z_k)``.
- **Shared** (MVAE, MMVAE, MoPoE-VAE): one latent ``z`` of size ``d`` read by every decoder, with
  the fixed prior ``N(0, I)`` (or its Laplace version). ``p(x, z) = p(z) prod_k p(x_k | z)``.

MMVAE+ adds private latents to the shared layout and has its own program (``mmvaeplus.py``).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..distributions import GMRF, as_gmrf, complete_from_prior, latent_law
from .base import MCVAE, ConditionablePrior, EncoderGuide

__all__ = ["BlockGuide", "BlockLatentVAE", "SharedLatentVAE", "StandardPrior", "subset_rows"]


def subset_rows(num_components: int, min_size: int = 1, max_size: int | None = None) -> torch.Tensor:
    """Every subset of ``min_size`` to ``max_size`` (default ``M - 1``) components as a bool
    ``(P, M)`` tensor, in binary order (the candidates of random subset terms)."""
    m = num_components
    top = m - 1 if max_size is None else max_size
    rows = [[bool(k >> j & 1) for j in range(m)] for k in range(1, 2**m)]
    return torch.tensor([r for r in rows if min_size <= sum(r) <= top], dtype=torch.bool).reshape(-1, m)


class BlockLatentVAE(MCVAE):
    """``z ~ p(z)`` over all ``M*d`` latents, ``x_k ~ p(x_k | z_k)`` (the program is
    :meth:`MCVAE.model`)."""

    def _decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(*z.shape[:-1], self.num_components, self.latent_dim)


class SharedLatentVAE(MCVAE):
    """``z ~ p(z)`` of size ``d`` shared by all components, ``x_k ~ p(x_k | z)`` (the program
    is :meth:`MCVAE.model`)."""

    def _decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z.unsqueeze(-2).expand(*z.shape[:-1], self.num_components, z.shape[-1])


class BlockGuide(EncoderGuide):
    """Guides of the block layout: conditional generation encodes the observed components and
    conditions the prior on their blocks; absent components are completed from the prior
    conditioned on the present ones, ``q(z_A) p(z_B | z_A)``."""

    def _complete(self, loc, covariance, mask, groups=None) -> GMRF:
        if self.prior_ref is None:
            raise ValueError(f"{type(self).__name__} needs the model's prior for samples with absent "
                             "components: build it with prior=<the model's prior module>")
        return complete_from_prior(loc, covariance, mask, self.prior_ref(), self.latent_dim, groups=groups)

    def _observed_latent(self, data, components, use_mean: bool) -> torch.Tensor:
        """Latents ``(batch, |A|, d)`` of observed components from their own encoders: the
        marginal posterior's mean, or one draw."""
        loc, var = self.encode(data, components)
        return loc if use_mean else loc + var.sqrt() * torch.randn_like(loc)

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """Latents ``(num_samples, batch, M*d)`` given the observed ``components``: their blocks
        from the encoders (means, or one draw each when ``use_mean=False``), the other blocks
        drawn from the prior conditioned on them."""
        if not isinstance(prior, ConditionablePrior):
            prior = as_gmrf(prior, self.num_components, self.latent_dim)  # ValueError if not Gaussian
        z_a = self._observed_latent(data, components, use_mean)  # (batch, |A|, d)
        z_b = prior.condition({k: z_a[:, i] for i, k in enumerate(components)}).sample((num_samples,))
        rest = [k for k in range(self.num_components) if k not in components]
        z = z_b.new_empty(*z_b.shape[:-1], self.num_components, self.latent_dim)
        z_a = z_a.to(z.dtype)
        z[..., components, :] = z_a.expand(num_samples, *z_a.shape)
        z[..., rest, :] = z_b.reshape(*z_b.shape[:-1], len(rest), self.latent_dim)
        return z.flatten(-2)


class StandardPrior(nn.Module):
    """Fixed prior of unit variance, ``N(0, I)`` or ``Laplace(0, 1/sqrt(2))`` per coordinate (the
    baselines' prior: MVAE's prior expert assumes exactly this law).

    ``forward()`` has event shape ``(size,)``; :meth:`law` gives the same law over any shape.
    """

    def __init__(self, size: int, family: str = "normal"):
        super().__init__()
        latent_law(family, torch.zeros(()), torch.ones(()))  # validates the family
        self.size, self.family = int(size), family
        self.register_buffer("_zero", torch.zeros(()))

    def law(self, shape) -> dist.Distribution:
        """The elementwise law, batch shape ``shape`` (no event dimensions)."""
        return latent_law(self.family, self._zero.expand(shape), torch.ones_like(self._zero).expand(shape))

    def forward(self) -> dist.Distribution:
        return self.law((self.size,)).to_event(1)
