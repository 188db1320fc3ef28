"""The multi-component VAE as a Pyro model, with generation in closed form."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
import pyro

from .._validation import check_component_indices, check_components, check_mask
from ..nets import VectorDecoder
from .guides import (
    ALMRFGuide,
    DiagonalGaussianGuide,
    GMRFGuide,
    MMVAEPlusGuide,
    MixtureOfExpertsGuide,
    ProductOfExpertsGuide,
    latent_scale,
)
from .likelihoods import ComponentLikelihood
from .energy import NeuralMRFPrior
from .priors import ALMRFPrior, DiagonalGaussianPrior, GMRFPrior, StandardPrior

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
        shared_latent: the latent ``z`` (size ``d``) is shared by all decoders (else one block per
            component, ``M*d``).
        private_prior: with a shared latent, an optional prior of the modality-specific latents
            (MMVAE+; e.g. :class:`StandardPrior` of size ``M*d_w``): decoder ``k`` then reads
            ``(z, w_k)`` and the latent vector is ``(z, w_1, ..., w_M)``. The guide must sample a
            site ``w`` (see :class:`MMVAEPlusGuide`).
    """

    def __init__(self, component_dims, latent_dim, prior, guide, decoder, likelihoods,
                 shared_latent: bool = False, private_prior=None):
        super().__init__()
        # Block layout (GMRF): z is (M*d,) and decoder k reads block k. Shared layout (MVAE,
        # MMVAE, MoPoE): z is (d,) and every decoder reads all of it. MMVAE+: (z, w_k).
        self.shared_latent = bool(shared_latent) or private_prior is not None
        self.private_prior = private_prior
        self.component_dims = [int(c) for c in component_dims]
        self.num_components = len(self.component_dims)
        self.latent_dim = int(latent_dim)
        if len(likelihoods) != self.num_components:
            raise ValueError(
                f"need one likelihood per component ({self.num_components}), got {len(likelihoods)}"
            )
        self.private_dim = 0
        if private_prior is not None:
            if private_prior.size % self.num_components:
                raise ValueError(f"private_prior size {private_prior.size} is not a multiple of "
                                 f"the {self.num_components} components")
            self.private_dim = private_prior.size // self.num_components
        self.prior = prior
        self.guide = guide
        if hasattr(guide, "bind_prior"):
            guide.bind_prior(prior)
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
        family: str = "normal",
        private_dim: int | None = None,
        mixture_density: str = "mixture",
        offdiag_keep: float = 1.0,
        mvae_random_subsets: int = 0,
    ) -> "MCVAE":
        """The GMRF MCVAE with MLP networks (``guide="diagonal"``, ``prior="diagonal"``: the
        independent-Gaussian ablation with the same networks; ``guide="mvae"``: MVAE, a latent of
        size ``latent_dim`` shared by all components with a product-of-experts posterior, a
        standard-normal prior and the sub-sampled ELBO; ``guide="mmvae"``: a mixture of the
        components' experts; ``guide="mopoe"``: a mixture of the products of every subset; for
        these three ``prior`` is ignored; ``guide="almrf"``: the ALMRF, asymmetric Laplace prior and posterior with the GMRF's block
        structure; ``guide="mmvaeplus"``: MMVAE+, a shared latent of size
        ``latent_dim`` plus ``private_dim`` (default ``latent_dim``) modality-specific coordinates
        per component).

        ``prior``: ``"precision"``, ``"covariance"``, ``"standard"`` (see :class:`GMRFPrior`),
        ``"diagonal"`` or ``"nnmrf"`` (experimental :class:`NeuralMRFPrior`: neural potentials,
        ``log Z`` gradient from persistent HMC chains; train with ``elbo="trace"``). ``family``: ``"normal"`` or ``"laplace"`` posteriors and priors of the
        baselines (the GMRF model is Gaussian by definition). ``mixture_density``: how the mixture
        guides score their draws (``"mixture"``, exact, or ``"stratum"``, the cheaper Jensen
        bound; see :class:`MixtureOfExpertsGuide`).

        ``hidden``: MLP hidden sizes, or a network factory for every encoder, decoder and the
        global network (:class:`~pyro_mcvae.nets.ResNetNets` for images). ``offdiag_keep``: the
        fraction of the GMRF/ALMRF posterior's off-diagonal entries its global network produces
        (a fixed random subset; the paper's PolyMNIST option keeps 25%). ``mvae_random_subsets``:
        MVAE's ``k`` random-subset terms per step beside the joint and single ones (default 0; see
        :class:`ProductOfExpertsGuide`).
        """
        dims = [int(c) for c in component_dims]
        m = len(dims)
        kinds = [likelihood] * m if isinstance(likelihood, str) else list(likelihood)
        if len(kinds) != m:
            raise ValueError(f"need one likelihood per component ({m}), got {len(kinds)}")
        liks = [ComponentLikelihood(k, dim, scale) for k, dim in zip(kinds, dims)]
        if guide == "mmvaeplus":
            w = latent_dim if private_dim is None else private_dim
            guide_mod = MMVAEPlusGuide(dims, latent_dim, w, hidden, family=family, density=mixture_density)
            return cls(dims, latent_dim, StandardPrior(latent_dim, family), guide_mod,
                       VectorDecoder(dims, latent_dim + w, hidden), liks,
                       private_prior=StandardPrior(m * w, family))
        shared = {
            "mvae": lambda: ProductOfExpertsGuide(dims, latent_dim, hidden, family=family,
                                                  random_subsets=mvae_random_subsets),
            "mmvae": lambda: MixtureOfExpertsGuide(dims, latent_dim, hidden, family=family,
                                                   density=mixture_density),
            "mopoe": lambda: MixtureOfExpertsGuide(dims, latent_dim, hidden, subsets=True, family=family,
                                                   density=mixture_density),
        }
        if guide in shared:
            # One latent of size latent_dim shared by all components, fixed unit-variance prior.
            return cls(dims, latent_dim, StandardPrior(latent_dim, family), shared[guide](),
                       VectorDecoder(dims, latent_dim, hidden), liks, shared_latent=True)
        if family != "normal":
            raise ValueError(f"family={family!r} is for the baselines; the {guide!r} guide is Gaussian")
        if guide == "almrf":
            if prior not in ("precision", "covariance"):
                raise ValueError(f"the ALMRF prior is built as 'precision' or 'covariance', got {prior!r}")
            return cls(dims, latent_dim,
                       ALMRFPrior(m, latent_dim, prior, eps=prior_eps, mode=mode, graph=graph),
                       ALMRFGuide(dims, latent_dim, hidden, hidden, eps=eps, mode=mode, graph=graph,
                                  offdiag_keep=offdiag_keep),
                       VectorDecoder(dims, latent_dim, hidden), liks)
        if prior == "diagonal":
            prior_mod = DiagonalGaussianPrior(m, latent_dim)
        elif prior == "nnmrf":
            prior_mod = NeuralMRFPrior(m, latent_dim, graph=graph)
        else:
            prior_mod = GMRFPrior(m, latent_dim, prior, eps=prior_eps, mode=mode, graph=graph)
        if guide == "gmrf":
            guide_mod = GMRFGuide(dims, latent_dim, hidden, hidden, eps=eps, mode=mode, graph=graph,
                                  offdiag_keep=offdiag_keep)
        elif guide == "diagonal":
            guide_mod = DiagonalGaussianGuide(dims, latent_dim, hidden)
        else:
            raise ValueError(
                f"guide must be 'gmrf', 'diagonal', 'mvae', 'mmvae', 'mopoe' or 'mmvaeplus', got {guide!r}"
            )
        decoder = VectorDecoder(dims, latent_dim, hidden)
        return cls(dims, latent_dim, prior_mod, guide_mod, decoder, liks)

    # -- Pyro program -----------------------------------------------------------------------
    def model(self, xs, beta: float = 1.0, mask=None, **kwargs):
        """Generative program: ``z ~ prior``, ``x_k ~ p(x_k | z_k)`` for every component.

        ``mask``: optional bool ``(batch, M)``, False where a component is absent; an absent
        component's likelihood is left out (its data are ignored but must be finite).
        """
        xs = check_components(xs, self.component_dims, check_values=False)
        mask = check_mask(mask, xs[0].shape[0], self.num_components)
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihoods", self.likelihoods)
        if self.private_prior is not None:
            pyro.module("private_prior", self.private_prior)
        batch = xs[0].shape[0]
        prior = self.prior()
        # The guide's plates (mixture guides: one weighted draw per stratum) hold the model too.
        plates, z_shape = self.guide.latent_plates(mask, batch, xs[0])
        with plates:
            with latent_scale(beta):
                z = pyro.sample("z", prior.expand(z_shape))
                if self.private_prior is not None:
                    # Scored only where the guide draws w_j from q(w_j | x_j) (see MMVAEPlusGuide).
                    scored = self.guide.scored_private(mask, batch, z.device)
                    law = self.private_prior.law(scored.shape + (self.private_dim,))
                    w = pyro.sample("w", law.to_event(1).mask(scored).to_event(1))
                    z = torch.cat([z, w.flatten(-2)], -1)
            params = self.decoder(self._decoder_input(z))
            for k, (lik, p) in enumerate(zip(self.likelihoods, params)):
                law = lik(p) if mask is None else lik(p).mask(mask[:, k])
                pyro.sample(f"x{k}", law, obs=xs[k])

    # -- generation ---------------------------------------------------------------------------
    def _decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(..., M*d)`` (blocks), ``(..., d)`` (shared) or ``(..., d + M*d_w)`` (shared
        and private) to decoder input ``(..., M, d)`` (``(..., M, d + d_w)``)."""
        if self.private_dim:
            m, d = self.num_components, self.latent_dim
            shared = z[..., :d].unsqueeze(-2).expand(*z.shape[:-1], m, d)
            return torch.cat([shared, z[..., d:].reshape(*z.shape[:-1], m, self.private_dim)], -1)
        if self.shared_latent:
            return z.unsqueeze(-2).expand(*z.shape[:-1], self.num_components, z.shape[-1])
        return z.reshape(*z.shape[:-1], self.num_components, self.latent_dim)

    def decode(self, z: torch.Tensor, sample: bool = False) -> list[torch.Tensor]:
        """Decode latents (``(..., M*d)`` blocks or ``(..., d)`` shared) to ``M`` tensors
        ``(..., D_k)``: the likelihood mean, or a draw from the likelihood when ``sample``."""
        params = self.decoder(self._decoder_input(z))
        if sample:
            return [lik(p).sample() for lik, p in zip(self.likelihoods, params)]
        return [lik.mean(p) for lik, p in zip(self.likelihoods, params)]

    @torch.no_grad()
    def sample(self, num_samples: int, sample_likelihood: bool = False) -> list[torch.Tensor]:
        """Unconditional generation: ``z ~ prior``; ``M`` tensors ``(num_samples, D_k)``."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        # A prior module with its own sampler (the NN-MRF's HMC chains) draws for itself.
        z = self.prior.sample(num_samples) if hasattr(self.prior, "sample") else self.prior().sample((num_samples,))
        if self.private_prior is not None:
            z = torch.cat([z, self.private_prior().sample((num_samples,))], -1)
        return self.decode(z, sample_likelihood)

    @torch.no_grad()
    def reconstruct(self, xs, use_mean: bool = True, sample_likelihood: bool = False):
        """Encode all components jointly and decode; ``M`` tensors ``(batch, D_k)``."""
        xs = check_components(xs, self.component_dims)
        return self.decode(self.guide.reconstruction_latent(xs, use_mean), sample_likelihood)

    @torch.no_grad()
    def condition(
        self,
        observed: Mapping[int, torch.Tensor],
        num_samples: int = 1,
        use_mean: bool = True,
        sample_likelihood: bool = False,
    ) -> list[torch.Tensor]:
        """Conditional generation from any subset of components, without retraining.

        The guide decides how the observed components give the latents
        (``guide.conditional_latent``). GMRF: each observed component is encoded by its own
        encoder (its posterior mean, or a draw when ``use_mean=False``), the prior is conditioned
        on those latents in closed form and the remaining latents are drawn from it. Product of
        experts: ``z`` is drawn from the product of the observed experts and the prior expert.

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
        z = self.guide.conditional_latent(self.prior(), data, comps, num_samples, use_mean)
        rest = [k for k in range(self.num_components) if k not in comps]
        params = self.decoder(self._decoder_input(z)[..., rest, :], rest)
        out = []
        for k in range(self.num_components):
            if k in comps:
                out.append(data[comps.index(k)].expand(num_samples, *data[comps.index(k)].shape))
            else:
                p = params[rest.index(k)]
                lik = self.likelihoods[k]
                out.append(lik(p).sample() if sample_likelihood else lik.mean(p))
        return out
