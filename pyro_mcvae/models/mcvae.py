"""The multi-component VAE as a Pyro model, with generation in closed form."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
import pyro

from .._validation import check_component_indices, check_components
from ..nets import VectorDecoder
from .guides import DiagonalGaussianGuide, GMRFGuide, latent_scale
from .likelihoods import ComponentLikelihood
from .priors import DiagonalGaussianPrior, GMRFPrior

__all__ = ["MCVAE"]


class MCVAE(nn.Module):
    """Multi-component VAE: prior over all latents, one decoder and likelihood per component.

    ``model(xs, beta)`` is the generative Pyro program and ``guide`` (a module) the inference
    program; train them with ``SVI(mcvae.model, mcvae.guide, ...)`` or :func:`pyro_mcvae.infer.fit`.

    Args:
        component_dims: sizes ``D_k`` of the ``M`` components.
        latent_dim: ``d``, the latent size per component.
        prior: module returning a distribution with event shape ``(M*d,)`` (e.g. :class:`GMRFPrior`).
        guide: guide module with ``forward(xs, beta)`` and ``encode(xs, components)``.
        decoder: module mapping ``z (..., M, d)`` to a list of ``M`` likelihood parameters.
        likelihoods: one :class:`ComponentLikelihood` per component.
    """

    def __init__(self, component_dims, latent_dim, prior, guide, decoder, likelihoods):
        super().__init__()
        self.component_dims = [int(c) for c in component_dims]
        self.num_components = len(self.component_dims)
        self.latent_dim = int(latent_dim)
        if len(likelihoods) != self.num_components:
            raise ValueError(
                f"need one likelihood per component ({self.num_components}), got {len(likelihoods)}"
            )
        self.prior = prior
        self.guide = guide
        self.decoder = decoder
        self.likelihoods = nn.ModuleList(likelihoods)

    @classmethod
    def build(
        cls,
        component_dims: Sequence[int],
        latent_dim: int = 2,
        hidden=(64, 64),
        likelihood: str | Sequence[str] = "normal",
        scale="learned",
        prior: str = "precision",
        guide: str = "gmrf",
        eps: float = 0.9,
        mode: str = "blockwise",
        graph=None,
        prior_eps: float | None = None,
    ) -> "MCVAE":
        """The GMRF MCVAE with MLP networks (``guide="diagonal"``, ``prior="diagonal"``: the
        independent-Gaussian ablation with the same networks).

        ``prior``: ``"precision"``, ``"covariance"``, ``"standard"`` (see :class:`GMRFPrior`) or
        ``"diagonal"``.
        """
        dims = [int(c) for c in component_dims]
        m = len(dims)
        kinds = [likelihood] * m if isinstance(likelihood, str) else list(likelihood)
        if len(kinds) != m:
            raise ValueError(f"need one likelihood per component ({m}), got {len(kinds)}")
        if prior == "diagonal":
            prior_mod = DiagonalGaussianPrior(m, latent_dim)
        else:
            prior_mod = GMRFPrior(m, latent_dim, prior, eps=prior_eps, mode=mode, graph=graph)
        if guide == "gmrf":
            guide_mod = GMRFGuide(dims, latent_dim, hidden, hidden, eps=eps, mode=mode, graph=graph)
        elif guide == "diagonal":
            guide_mod = DiagonalGaussianGuide(dims, latent_dim, hidden)
        else:
            raise ValueError(f"guide must be 'gmrf' or 'diagonal', got {guide!r}")
        decoder = VectorDecoder(dims, latent_dim, hidden)
        liks = [ComponentLikelihood(k, dim, scale) for k, dim in zip(kinds, dims)]
        return cls(dims, latent_dim, prior_mod, guide_mod, decoder, liks)

    # -- Pyro program -----------------------------------------------------------------------
    def model(self, xs, beta: float = 1.0, **kwargs):
        """Generative program: ``z ~ prior``, ``x_k ~ p(x_k | z_k)`` for every component."""
        xs = check_components(xs, self.component_dims, check_values=False)
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihoods", self.likelihoods)
        batch = xs[0].shape[0]
        prior = self.prior()
        with pyro.plate("data", batch):
            with latent_scale(beta):
                z = pyro.sample("z", prior.expand([batch]))
            params = self.decoder(self._blocks(z))
            for k, (lik, p) in enumerate(zip(self.likelihoods, params)):
                pyro.sample(f"x{k}", lik(p), obs=xs[k])

    # -- generation ---------------------------------------------------------------------------
    def _blocks(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(*z.shape[:-1], self.num_components, self.latent_dim)

    def decode(self, z: torch.Tensor, sample: bool = False) -> list[torch.Tensor]:
        """Decode latents ``(..., M*d)`` to ``M`` tensors ``(..., D_k)``: the likelihood mean, or
        a draw from the likelihood when ``sample``."""
        params = self.decoder(self._blocks(z))
        if sample:
            return [lik(p).sample() for lik, p in zip(self.likelihoods, params)]
        return [lik.mean(p) for lik, p in zip(self.likelihoods, params)]

    @torch.no_grad()
    def sample(self, num_samples: int, sample_likelihood: bool = False) -> list[torch.Tensor]:
        """Unconditional generation: ``z ~ prior``; ``M`` tensors ``(num_samples, D_k)``."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        z = self.prior().sample((num_samples,))
        return self.decode(z, sample_likelihood)

    @torch.no_grad()
    def reconstruct(self, xs, use_mean: bool = True, sample_likelihood: bool = False):
        """Encode all components jointly and decode; ``M`` tensors ``(batch, D_k)``."""
        xs = check_components(xs, self.component_dims)
        q = self.guide.posterior(xs)
        z = q.mean if use_mean else q.sample()
        return self.decode(z, sample_likelihood)

    @torch.no_grad()
    def condition(
        self,
        observed: Mapping[int, torch.Tensor],
        num_samples: int = 1,
        use_mean: bool = True,
        sample_likelihood: bool = False,
    ) -> list[torch.Tensor]:
        """Conditional generation from any subset of components, without retraining.

        Each observed component is encoded by its own encoder (its posterior mean, or a draw when
        ``use_mean=False``); the prior is conditioned on those latents in closed form and the
        remaining latents are drawn from it and decoded.

        Args:
            observed: ``{component index: data (batch, D_k)}``.
            num_samples: draws per observed tuple.

        Returns:
            ``M`` tensors ``(num_samples, batch, D_k)``; observed components hold the given data.
        """
        if not isinstance(observed, Mapping) or not observed:
            raise ValueError("observed must be a non-empty dict {component index: data}")
        comps = check_component_indices(observed.keys(), self.num_components, "observed component")
        observed = {int(k): v for k, v in observed.items()}
        data = check_components(
            [observed[k] for k in comps], [self.component_dims[k] for k in comps], "observed"
        )
        if len(comps) == self.num_components:
            raise ValueError("every component is observed; use reconstruct() instead")
        prior = self.prior()
        if not hasattr(prior, "condition"):
            raise ValueError(f"the prior {type(self.prior).__name__} does not support conditioning")
        loc, var = self.guide.encode(data, comps)  # (batch, |A|, d)
        z_a = loc if use_mean else loc + var.sqrt() * torch.randn_like(loc)
        cond = prior.condition({k: z_a[:, i] for i, k in enumerate(comps)})
        z_b = cond.sample((num_samples,))  # (S, batch, |B| d)
        rest = [k for k in range(self.num_components) if k not in comps]
        params = self.decoder(z_b.reshape(*z_b.shape[:-1], len(rest), self.latent_dim), rest)
        out = []
        for k in range(self.num_components):
            if k in comps:
                out.append(data[comps.index(k)].expand(num_samples, *data[comps.index(k)].shape))
            else:
                p = params[rest.index(k)]
                lik = self.likelihoods[k]
                out.append(lik(p).sample() if sample_likelihood else lik.mean(p))
        return out
