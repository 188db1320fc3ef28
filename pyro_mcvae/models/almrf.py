"""The ALMRF MCVAE: the GMRF's block structure under a multivariate asymmetric Laplace law
(heavy tails, skew), for prior and posterior alike.

``p(z) = AL(z; mu, m, Sigma)`` with ``Sigma`` (or its inverse) from the block construction and a
learnable skew ``m``; ``q(z | x) = AL(z; mu(x), m(x), S(x))`` with the GMRF guide's covariance
and a bounded skew head. The law is a Gaussian scale mixture, ``z = mu + W m + sqrt(W) L u`` with
``W ~ Exp(1)`` (:class:`~pyro_mcvae.distributions.MultivariateAsymmetricLaplace`), so conditioning
stays exact (a GIG mixing law, then a Gaussian). The KL has no closed form: the default objective
is the Monte Carlo ELBO (``"trace"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..distributions import MultivariateAsymmetricLaplace, PriorCompletion, RowGroups, mask_groups
from ..nets import as_nets
from ..validation import check_components
from .base import has_absent
from .checks import field_problems, positive_number
from .gmrf import GMRFConfig, GMRFGuide, GMRFPrior, block_model, gmrf_guide
from .layouts import BlockLatentVAE

__all__ = ["ALMRFConfig", "ALMRFGuide", "ALMRFPrior", "build_almrf"]


class ALMRFPrior(GMRFPrior):
    """Learnable multivariate asymmetric Laplace prior with the GMRF's block structure (ALMRF).

    ``Sigma`` (``parameterization="covariance"``) or ``Sigma^-1`` (``"precision"``, default, for the
    same reason as :class:`GMRFPrior`, whose arguments it takes) comes from the block
    construction; the location and the skew ``m`` are learnable (the skew starts at zero, the
    symmetric multivariate Laplace).
    """

    def __init__(self, num_components: int, component_dim: int, parameterization: str = "precision",
                 **kwargs):
        if parameterization not in ("precision", "covariance"):
            raise ValueError(f"parameterization must be 'precision' or 'covariance', got {parameterization!r}")
        super().__init__(num_components, component_dim, parameterization, **kwargs)
        self.skew = nn.Parameter(torch.zeros(num_components, component_dim))

    def forward(self) -> MultivariateAsymmetricLaplace:
        return MultivariateAsymmetricLaplace.from_blocks(
            self.loc, self.skew, *self._blocks(), parameterization=self.parameterization,
            **self._assembly())
class ALMRFGuide(GMRFGuide):
    """ALMRF posterior: a multivariate asymmetric Laplace law with the GMRF guide's block
    covariance (encoders: ``mu_k`` and the diagonal blocks; the global network: the off-diagonal
    blocks) and a skew ``m_k`` per component from a second head of each component's network.

    As in the GMRF guide the diagonal blocks are not rescaled, so the marginal of ``z_k``,
    ``AL(mu_k, m_k, diag(var_k))``, depends on ``x_k`` alone. Its KL to the prior has no closed
    form: train with ``Trace_ELBO`` (``TraceMeanField_ELBO`` falls back to the same estimate).

    The skew is bounded relative to the scale, ``|m_k| < max_skew * sqrt(var_k)``
    (``m = max_skew sqrt(var) tanh(raw / max_skew)``): on heavy-tailed inputs an unbounded skew
    head extrapolates to posteriors millions of units away and the ELBO diverges.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 global_hidden=(64, 64), eps: float = 0.9, mode: str = "blockwise",
                 graph: torch.Tensor | None = None, delta: float = 1e-6, min_var: float = 1e-4,
                 max_skew: float = 3.0, offdiag_keep: float = 1.0, mask_seed: int = 0,
                 prior: nn.Module | None = None, coupled: int | None = None):
        super().__init__(component_dims, latent_dim, hidden, global_hidden, eps, mode, graph, delta, min_var,
                         offdiag_keep, mask_seed, prior, coupled)
        self.skew_net = as_nets(hidden).component_nets(self.component_dims, [latent_dim] * self.num_components,
                                                       "encoder")
        self.max_skew = float(max_skew)

    encodes_copies_once = False  # its skew network and mixture completion run on every stacked row

    def _skew(self, xs, var, components=None) -> torch.Tensor:
        raw = torch.stack(self.skew_net(xs, components), dim=-2)
        return self.max_skew * var.sqrt() * torch.tanh(raw / self.max_skew)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> MultivariateAsymmetricLaplace | PriorCompletion:
        if not has_absent(mask):
            loc, var = self.encoder(xs)
            return MultivariateAsymmetricLaplace.from_blocks(
                loc, self._skew(xs, var), var, self.global_net(xs), eps=self.eps, delta=self.delta,
                mode=self.mode, graph=self.graph, validate=False)
        # Absent components: as the GMRF guide, q(z_A) from the present components (zeros feed the
        # global network, no couplings to absent blocks), the rest from the prior's exact
        # conditional, a GIG mixture whose parameter depends on |A|: one law per pattern of
        # present components in the batch (at most 2^M - 1), joined row by row.
        if self.prior_ref is None:
            raise ValueError("ALMRFGuide needs the model's prior for samples with absent components: build it "
                             "with prior=<the model's prior module>")
        xs = [torch.where(mask[:, k, None], x, torch.zeros_like(x)) for k, x in enumerate(xs)]
        loc, var = self.encoder(xs)
        pair = mask[:, :, None] & mask[:, None, :]
        offdiag = torch.where(pair[..., None, None], self.global_net(xs), 0.0)
        skew, prior = self._skew(xs, var), self.prior_ref()
        laws, groups = [], mask_groups(mask)
        for present, rows in groups:
            q = MultivariateAsymmetricLaplace.from_blocks(
                loc[rows], skew[rows], var[rows], offdiag[rows], eps=self.eps, delta=self.delta, mode=self.mode,
                graph=self.graph, validate=False)
            comps = present.nonzero().flatten().tolist()
            laws.append(q if len(comps) == self.num_components else
                        PriorCompletion(q.marginal(comps), prior, comps, self.num_components, self.latent_dim))
        return laws[0] if len(laws) == 1 else RowGroups(laws, [rows for _, rows in groups])

    def _observed_latent(self, data, components, use_mean: bool) -> torch.Tensor:
        loc, var = self.encode(data, components)
        xs = check_components(data, [self.component_dims[k] for k in components])
        skew = self._skew(xs, var, components)
        if use_mean:
            return loc + skew
        w = torch.empty_like(loc[..., :1]).exponential_()
        return loc + w * skew + w.sqrt() * var.sqrt() * torch.randn_like(loc)


@dataclass
class ALMRFConfig(GMRFConfig):
    """The ALMRF MCVAE: the fields of :class:`~pyro_mcvae.models.gmrf.GMRFConfig` (the prior
    built as ``"precision"`` or ``"covariance"``) and ``max_skew``, the bound of the posterior's
    skew relative to its scale."""

    max_skew: float = 3.0

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, prior=_almrf_prior, max_skew=positive_number)


def _almrf_prior(value) -> str | None:
    ok = value in ("precision", "covariance")
    return None if ok else f"must be 'precision' or 'covariance' (how the ALMRF prior is built), got {value!r}"


def build_almrf(component_dims: Sequence[int], config: ALMRFConfig) -> BlockLatentVAE:
    c = config
    prior = ALMRFPrior(len(component_dims), c.block_dim, c.prior, eps=c.prior_eps, mode=c.mode, graph=c.graph,
                       coupled=c.coupled_dims)
    guide = gmrf_guide(component_dims, c, prior, ALMRFGuide, max_skew=c.max_skew)
    return block_model(component_dims, c, prior, guide)
