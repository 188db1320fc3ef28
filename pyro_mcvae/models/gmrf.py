"""The GMRF MCVAE (the method of the paper): a GMRF prior and a GMRF posterior over one latent
block per component, each a ``MultivariateNormal`` over all ``M*d`` latents, SPD by the block
scaling construction (``pyro_mcvae.covariance``); trained with the analytic KL.

- :class:`GMRFPrior`: learnable, its precision (default) or covariance built by the construction.
- :class:`GMRFGuide`: encoders give each block's mean and diagonal covariance, a global network
  the off-diagonal blocks; a component's marginal posterior depends on its own data only, which
  closed-form conditional generation uses.
- The independent ablation (``"diagonal"``): the same encoders, no couplings.

``p(x, z) = GMRF(z; mu, Sigma) prod_k p(x_k | z_k)``; ``q(z | x) = GMRF(z; mu(x), S(x))``; the
ELBO is ``E_q log p(x | z) - beta KL(q || p)`` in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .._precision import full_precision
from ..covariance import assemble_block_covariance
from ..distributions import GMRF
from ..distributions.completed_gmrf import present_blocks
from ..nets import MLPNets, NetworkFactory, VectorDecoder
from .base import CommonConfig, has_absent
from .checks import (boolean, field_problems, fraction, graph_matrix, non_negative_int, one_of, optional,
                     positive_int, unit_open)
from .layouts import BlockGuide, BlockLatentVAE, subset_rows

__all__ = [
    "PRIOR_PARAMETERIZATIONS",
    "DiagonalGaussianGuide",
    "DiagonalGaussianPrior",
    "BlockPosteriorConfig",
    "GMRFConfig",
    "GMRFGuide",
    "GMRFPrior",
    "GMRFVAE",
    "IndependentConfig",
    "build_gmrf",
    "block_model",
    "build_independent",
    "gmrf_guide",
]

PRIOR_PARAMETERIZATIONS = ("precision", "covariance", "standard")


def coupled_problem(coupled, block_dim) -> str | None:
    """What is wrong with ``coupled`` coordinates per block (an integer in ``1..block_dim``), or None."""
    ok = positive_int(coupled) is None and (positive_int(block_dim) is not None or coupled <= block_dim)
    return None if ok else f"must be an integer in 1..block_dim ({block_dim}), got {coupled!r}"


def check_coupled(coupled: int | None, block_dim: int) -> int:
    """The number of coupled coordinates per block: ``coupled`` in ``1..block_dim``, or all."""
    if coupled is None:
        return int(block_dim)
    problem = coupled_problem(coupled, block_dim)
    if problem:
        raise ValueError(f"coupled_dims {problem.replace('must be', 'must be None or', 1)}")
    return coupled


def inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


def _upper_cholesky(a: torch.Tensor) -> torch.Tensor:
    """Upper-triangular ``R`` with ``a = R R^T`` (the Cholesky factor of ``a`` in reversed order)."""
    return torch.linalg.cholesky(a.flip(-2, -1)).flip(-2, -1)


def _inverse_cholesky(a: torch.Tensor) -> torch.Tensor:
    """Lower-triangular Cholesky factor of ``a^-1``: ``R^-T`` for ``a = R R^T``, ``R`` upper
    (one triangular solve; accurate for the well-conditioned matrices it is given here)."""
    r = _upper_cholesky(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return torch.linalg.solve_triangular(r.transpose(-1, -2), eye, upper=False)


class GMRFPrior(nn.Module):
    """Learnable GMRF prior, SPD for every parameter value in exact arithmetic. In floating point
    what counts is the condition number of the built matrix scaled to a unit diagonal: below
    ``(1 + eps) / (1 - eps)`` for the paper's construction, ``((1 + eps) / (1 - eps))^2`` for the
    standardised one, whose law is moreover built from triangular factors without refactorising
    (float32 against float64: ``tests/models/test_gmrf_prior_float32.py``).

    Args:
        num_components, component_dim: ``M`` and ``d``.
        parameterization: which matrix the block construction builds.
            ``"precision"`` (default): the precision ``Q``, as in a Markov random field; zero
            blocks are conditional independences (``graph``) and strong correlation among many
            components is reachable. ``"covariance"``: the covariance itself; block dominance then
            keeps the whitened covariance's spectrum in ``(1 - eps, 1 + eps)``: every canonical
            correlation is below ``eps``, and ``M`` components correlated alike cannot exceed
            ``eps / (M - 1)`` (proof and tests: ``docs/mathematics.md``).
            ``"standard"``: ``N(0, I)``, no parameters.
        eps, mode, graph, delta: passed to the block assembly.
        learn_loc: learn the mean (else zero).
        standardized: apply the construction to the standardised matrix (identity diagonal
            blocks, couplings in units of the diagonal) and scale it by block-diagonal factors,
            ``F A(I, T) F^T`` with ``F_i F_i^T = S_i W_i S_i``: ``S_i`` the square roots of
            ``diag``, ``W_i`` a learned within-block correlation matrix whose spectrum the same
            margin ``eps`` keeps in ``(1 - eps, 1 + eps)`` (:meth:`block_correlations`,
            :meth:`block_factors`). SPD by the same theorem (congruence), and the coupling a
            coordinate may carry no longer shrinks with the smallest diagonal entry of its
            block: with a precision, any partial-correlation pattern whose rows sum below
            ``eps`` is reachable, so correlations near 1 across all ``M`` components are
            (``docs/results/polymnist.md``, the diagnosis). Default off: the paper's
            construction.
        init_shared: start with this many coordinates per block coupled across all components
            (see :meth:`_init_shared`); 0: nearly independent blocks (small random couplings).
        coupled: couple only the leading ``coupled`` coordinates of each block across blocks
            (content); the other ``d - coupled`` are independent of every other block (style).
            ``None``: all ``d`` (the paper's construction). See
            :func:`~pyro_mcvae.covariance.assemble_block_covariance`.
    """

    def __init__(
        self,
        num_components: int,
        component_dim: int,
        parameterization: str = "precision",
        eps: float | None = None,
        mode: str = "blockwise",
        graph: torch.Tensor | None = None,
        delta: float = 1e-6,
        learn_loc: bool = True,
        init_offdiag: float = 0.01,
        standardized: bool = False,
        init_shared: int = 0,
        coupled: int | None = None,
    ):
        super().__init__()
        if parameterization not in PRIOR_PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PRIOR_PARAMETERIZATIONS}, got {parameterization!r}"
            )
        m, d = num_components, component_dim
        self.num_components, self.component_dim = m, d
        self.coupled = check_coupled(coupled, d)
        self.parameterization = parameterization
        # A precision needs a margin close to 1 to express strong correlation among many blocks.
        self.eps = eps if eps is not None else (0.99 if parameterization == "precision" else 0.9)
        self.mode, self.delta, self.standardized = mode, delta, bool(standardized)
        self.register_buffer("graph", None if graph is None else torch.as_tensor(graph, dtype=torch.bool))
        if parameterization == "standard":
            self.register_buffer("_zero", torch.zeros(m * d))
            self.register_buffer("_eye", torch.eye(m * d))
            return
        if learn_loc:
            self.loc = nn.Parameter(torch.zeros(m, d))
        else:
            self.register_buffer("loc", torch.zeros(m, d))
        self.raw_diag = nn.Parameter(torch.full((m, d), inverse_softplus(1.0)))
        c = self.coupled
        self.offdiag = nn.Parameter(init_offdiag * torch.randn(m, m, c, c))
        if self.standardized:  # within-block couplings (strict lower triangles), see block_correlations
            self.raw_tril = nn.Parameter(torch.zeros(m, d, d))
        if init_shared:
            self._init_shared(int(init_shared))

    @torch.no_grad()
    def _init_shared(self, k: int) -> None:
        """Start with the first ``k`` coordinates of every block coupled across all components
        as strongly as the margin allows (equal negative precision couplings, or positive
        covariance ones), the others independent, every marginal variance 1: a prior that
        rewards aligned encoders from the first step. The couplings stay learnable."""
        m, d = self.num_components, self.component_dim
        if not 0 < k <= self.coupled:
            raise ValueError(f"init_shared must lie in 1..{self.coupled} (the coupled coordinates per block), got {k}")
        if self.parameterization == "precision" and not self.standardized:
            raise ValueError("init_shared needs standardized=True with the precision parameterisation: the "
                             "paper's construction bounds the couplings by the smallest diagonal entry, so "
                             "rescaling the diagonal to unit variances would undo them")
        sign = -1.0 if self.parameterization == "precision" else 1.0
        self.offdiag.zero_()
        self.offdiag[:, :, range(k), range(k)] = sign
        var = self().covariance_matrix.diagonal().reshape(m, d)
        if self.parameterization == "precision":  # scale the precision's diagonal by the variances
            self.raw_diag.copy_(torch.log(torch.expm1((F.softplus(self.raw_diag) + 1e-4) * var - 1e-4)))
        else:
            self.raw_diag.copy_(torch.log(torch.expm1((F.softplus(self.raw_diag) + 1e-4) / var - 1e-4)))

    def block_correlations(self) -> torch.Tensor:
        """Within-block correlation matrices ``W_i (M, d, d)``: unit diagonal, the strict lower
        triangle of ``raw_tril`` mirrored and scaled down by the elementwise construction with
        this prior's margin ``eps`` (each coordinate a ``1 x 1`` block), so every eigenvalue of
        ``W_i`` lies in ``(1 - eps, 1 + eps)`` whatever ``raw_tril`` holds."""
        m, d = self.num_components, self.component_dim
        upper = self.raw_tril.transpose(-1, -2)[..., None, None]  # (M, d, d, 1, 1); entries r < c used
        return assemble_block_covariance(upper.new_ones(m, d, 1), upper, eps=self.eps, delta=self.delta,
                                         mode="elementwise", validate=False)

    def block_factors(self, diag: torch.Tensor) -> torch.Tensor:
        """Factors ``F_i (M, d, d)`` of the built matrix's diagonal blocks,
        ``F_i F_i^T = S_i W_i S_i`` with ``S_i = diag(sqrt(diag_i))`` and ``W_i`` from
        :meth:`block_correlations`: ``S_i`` times the lower Cholesky factor of ``W_i`` for a
        covariance, times the upper one (``W_i = R_i R_i^T``) for a precision, so that the law's
        covariance factor is a product of lower-triangular matrices (:meth:`forward`)."""
        w = self.block_correlations()
        factor = _upper_cholesky(w) if self.parameterization == "precision" else torch.linalg.cholesky(w)
        return diag.sqrt().unsqueeze(-1) * factor

    @full_precision  # under autocast too: the factor products and solves need float32
    def forward(self) -> GMRF:
        """The prior GMRF, batch shape ``()``, event shape ``(M*d,)``."""
        m, d = self.num_components, self.component_dim
        if self.parameterization == "standard":
            return GMRF(self._zero, scale_tril=self._eye, num_components=m, component_dim=d)
        if not self.standardized:
            return GMRF.from_blocks(self.loc, *self._blocks(), parameterization=self.parameterization,
                                    **self._assembly())
        diag, offdiag = self._blocks()
        unit = assemble_block_covariance(torch.ones_like(diag), offdiag, **self._assembly())
        # The built matrix is F U F^T (F = blockdiag(F_i), block_factors). The law gets the
        # covariance's Cholesky factor as a product of lower-triangular factors of well-conditioned
        # matrices, never the matrix to refactorise: a covariance F U F^T has the factor
        # F chol(U); for a precision F_i = S_i R_i is upper, so the covariance F^-T U^-1 F^-1 has
        # the factor F^-T chol(U^-1), with F_i^-T = S_i^-1 chol(W_i^-1).
        if self.parameterization == "covariance":
            inner, outer = self.block_factors(diag), torch.linalg.cholesky(unit)
        else:
            inner = diag.rsqrt().unsqueeze(-1) * _inverse_cholesky(self.block_correlations())
            outer = _inverse_cholesky(unit)
        n = m * d
        scale_tril = (inner @ outer.reshape(m, d, n)).reshape(n, n)  # block-diagonal times lower: lower
        return GMRF(self.loc, scale_tril=scale_tril, num_components=m, component_dim=d, validate_args=False)

    def _blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal variances ``(M, d)`` and off-diagonal blocks ``(M, M, d, d)`` before assembly."""
        return F.softplus(self.raw_diag) + 1e-4, self.offdiag

    def _assembly(self) -> dict:
        return dict(eps=self.eps, delta=self.delta, mode=self.mode, graph=self.graph, validate=False)


class DiagonalGaussianPrior(nn.Module):
    """Independent Gaussian prior with learnable mean and variances (the no-MRF ablation). The
    baselines' fixed ``N(0, I)`` is :class:`StandardPrior`."""

    def __init__(self, num_components: int, component_dim: int):
        super().__init__()
        m, d = num_components, component_dim
        self.num_components, self.component_dim = m, d
        self.loc = nn.Parameter(torch.zeros(m * d))
        self.raw_scale = nn.Parameter(torch.full((m * d,), inverse_softplus(1.0)))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale) + 1e-4).to_event(1)


class GMRFGuide(BlockGuide):
    """GMRF posterior: encoders give ``mu_k`` and the diagonal blocks, a global network gives the
    off-diagonal blocks, and the block construction makes the covariance SPD for every input.

    The diagonal blocks are not rescaled by the construction, so the marginal of ``z_k`` is
    ``N(mu_k, diag(var_k))`` computed from ``x_k`` alone, which conditional generation uses.
    """

    def __init__(
        self,
        component_dims: Sequence[int],
        latent_dim: int,
        hidden=(64, 64),
        global_hidden=(64, 64),
        eps: float = 0.9,
        mode: str = "blockwise",
        graph: torch.Tensor | None = None,
        delta: float = 1e-6,
        min_var: float = 1e-4,
        offdiag_keep: float = 1.0,
        mask_seed: int = 0,
        prior: nn.Module | None = None,
        coupled: int | None = None,
    ):
        super().__init__(component_dims, latent_dim, hidden, min_var, prior)
        self.coupled = check_coupled(coupled, latent_dim)
        # A network factory in ``hidden`` builds the global network too; MLP sizes in
        # ``global_hidden`` otherwise. ``offdiag_keep < 1`` keeps a fixed random fraction of the
        # off-diagonal entries (the paper's PolyMNIST option masks 75%).
        if isinstance(global_hidden, NetworkFactory):
            factory = global_hidden
        elif isinstance(hidden, NetworkFactory):
            factory = hidden
        else:
            factory = MLPNets(global_hidden)
        # The global network gives only the coupled coordinates' blocks (coupled x coupled).
        self.global_net = factory.offdiag_net(self.component_dims, self.coupled, offdiag_keep, mask_seed)
        self.eps, self.mode, self.delta = eps, mode, delta
        self.register_buffer("graph", None if graph is None else torch.as_tensor(graph, dtype=torch.bool))

    encodes_copies_once = True

    def _sample_copies(self, xs: list[torch.Tensor], mask, copies: int):
        return pyro.sample("z", self._posterior(xs, mask, copies))

    def _copied_blocks(self, xs: list[torch.Tensor], copies: int):
        """``loc``, ``var`` ``(rows, M, d)`` and the off-diagonal blocks of the first
        ``rows = batch / copies`` rows: the networks run once per distinct datum."""
        base = [x[: xs[0].shape[0] // copies] for x in xs]
        loc, var = self.encoder(base)
        return loc, var, self.global_net(base)

    def _copied_posterior(self, xs: list[torch.Tensor], mask, copies: int) -> GMRF:
        """The posterior of ``copies`` stacked copies of the first ``batch / copies`` rows, each
        row with its own ``mask``, computing each piece once: the encoders read one component
        each and the global network the whole tuple, so a row with every component present has
        the assembly (and its Cholesky factor) of its first copy, a row with one component
        present has no off-diagonal block (its covariance is the encoder's diagonal, its factor
        the square roots), and only the rows with two or more but not all components present
        need the global network and the assembly again, on their present components. The law
        is completed from these present blocks alone (no dense matrix per row); it is the law
        of :meth:`_posterior` row by row (``tests/infer/test_subset_posterior_terms.py``)."""
        loc_b, var_b, off_b = self._copied_blocks(xs, copies)
        rows, m, d = loc_b.shape
        if not has_absent(mask):
            loc, var, off = (t.repeat(copies, *([1] * (t.dim() - 1))) for t in (loc_b, var_b, off_b))
            return self._assembled(loc, var, off)
        loc, var = self._present_only(loc_b.repeat(copies, 1, 1), var_b.repeat(copies, 1, 1), mask)
        count = mask.sum(-1)
        groups = []
        lone = (count == 1).nonzero().flatten()
        if lone.numel():
            k = mask[lone].to(torch.int8).argmax(-1)
            v = var[lone, k]  # (R, d)
            groups.append({"rows": lone, "idx": k[:, None] * d + torch.arange(d, device=k.device),
                           "cov": torch.diag_embed(v), "tril": torch.diag_embed(v.sqrt())})
        full = (count == m).nonzero().flatten()
        if full.numel():
            first = present_blocks(self._assembled(loc_b, var_b, off_b)._covariance_unbroadcast(),
                                   torch.ones_like(mask[:rows]), d)[0]
            pick = full % rows
            groups.append({"rows": full, "idx": first["idx"][pick], "cov": first["cov"][pick],
                           "tril": first["tril"][pick]})
        partial = ((count >= 2) & (count < m)).nonzero().flatten()
        if partial.numel():
            present = mask[partial]
            sub = [torch.where(present[:, k, None], x[partial], torch.zeros_like(x[partial]))
                   for k, x in enumerate(xs)]
            pair = present[:, :, None] & present[:, None, :]
            off = torch.where(pair[..., None, None], self.global_net(sub), 0.0)
            cov = self._assembled(loc[partial], var[partial], off)._covariance_unbroadcast()
            groups += present_blocks(cov, present, d, rows=partial)
        return self._complete(loc.flatten(-2), None, mask, groups=groups)

    def _assembled(self, loc, var, offdiag) -> GMRF:
        return GMRF.from_blocks(loc, var, offdiag, eps=self.eps, delta=self.delta, mode=self.mode,
                                graph=self.graph, validate=False)

    def _posterior(self, xs: list[torch.Tensor], mask=None, copies: int = 1) -> GMRF:
        if copies > 1:
            return self._copied_posterior(xs, mask, copies)
        if not has_absent(mask):
            loc, var = self.encoder(xs)
            return self._assembled(loc, var, self.global_net(xs))
        # Absent components feed zeros to the global network and get no off-diagonal blocks,
        # so q factorises into present and absent parts; the absent part is then replaced.
        xs = [torch.where(mask[:, k, None], x, torch.zeros_like(x)) for k, x in enumerate(xs)]
        loc, var = self._present_only(*self.encoder(xs), mask)
        pair = mask[:, :, None] & mask[:, None, :]
        q = self._assembled(loc, var, torch.where(pair[..., None, None], self.global_net(xs), 0.0))
        return self._complete(q.loc, q._covariance_unbroadcast(), mask)


class DiagonalGaussianGuide(BlockGuide):
    """Independent Gaussian posterior from the same encoders (no global network)."""

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64), min_var=1e-4,
                 prior: nn.Module | None = None):
        super().__init__(component_dims, latent_dim, hidden, min_var, prior)

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> dist.Distribution:
        loc, var = self.encoder(xs)
        if not has_absent(mask):
            return dist.Normal(loc.flatten(-2), var.sqrt().flatten(-2)).to_event(1)
        loc, var = self._present_only(loc, var, mask)
        return self._complete(loc.flatten(-2), torch.diag_embed(var.flatten(-2)), mask)


@dataclass
class BlockPosteriorConfig(CommonConfig):
    """What every method with the GMRF posterior sets. ``block_dim``: latent size ``d`` per
    component (``M*d`` in all). ``eps``, ``mode``, ``graph``: the posterior's block construction
    (``graph``: optional bool ``(M, M)`` adjacency, shared with the prior). ``offdiag_keep``: the
    fraction of the posterior's off-diagonal entries the global network produces (a fixed random
    subset; the paper's PolyMNIST option keeps 25%). ``coupled_dims``: only the leading
    ``coupled_dims`` coordinates of each block are coupled across blocks (content), the others
    are independent of every other block, in the posterior and, for the GMRF, in the prior
    (style; conditional generation then draws a generated component's style from its prior
    marginal); ``None``: all ``block_dim`` (the paper)."""

    block_dim: int = 2
    eps: float = 0.9
    mode: str = "blockwise"
    graph: object = None
    offdiag_keep: float = 1.0
    coupled_dims: int | None = None

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, block_dim=positive_int, eps=unit_open,
                                                   mode=one_of("blockwise", "elementwise"), graph=graph_matrix,
                                                   offdiag_keep=fraction,
                                                   coupled_dims=optional(lambda v: coupled_problem(v, self.block_dim)))


@dataclass
class GMRFConfig(BlockPosteriorConfig):
    """The GMRF MCVAE: :class:`BlockPosteriorConfig` and the prior, ``"precision"`` (default),
    ``"covariance"`` or ``"standard"`` (see :class:`GMRFPrior`), with margin ``prior_eps``;
    ``subset_posteriors``: subset-posterior ELBO terms per training step (:class:`GMRFVAE`), their
    subsets drawn among those of at most ``subset_max_size`` components (default ``M - 1``), one per
    batch or, with ``subset_per_example``, one per datum; ``subset_singles``: ``M`` more terms per
    step, each with one component alone given, every component in turn (the stratified form of one
    given component, as MMVAE+ decodes every modality from each modality's encoding)."""

    prior: str = "precision"
    prior_eps: float | None = None
    prior_standardized: bool = False
    prior_init_shared: int = 0
    subset_posteriors: int = 0
    subset_max_size: int | None = None
    subset_per_example: bool = False
    subset_singles: bool = False

    def problems(self) -> list[str]:
        return super().problems() + field_problems(
            self, prior=one_of(*PRIOR_PARAMETERIZATIONS), prior_eps=optional(unit_open), prior_standardized=boolean,
            prior_init_shared=non_negative_int, subset_posteriors=non_negative_int,
            subset_max_size=optional(positive_int), subset_per_example=boolean, subset_singles=boolean)


class GMRFVAE(BlockLatentVAE):
    """The GMRF MCVAE's model: the block-latent program. With ``config.subset_posteriors = k > 0``
    training adds ``k`` terms per step to the ELBO of the whole tuple: in each the guide sees a
    random proper subset ``A`` of the components (shared by the batch, or drawn for each datum
    with ``config.subset_per_example``; uniform over the ``2^M - 2`` subsets, or over those of at
    most ``config.subset_max_size`` components: 1 draws one given component, the hardest
    conditional) and the model scores every component, the
    ELBO of ``x`` under the subset posterior ``q(z_A | x_A) p(z_B | z_A)``
    (:class:`~pyro_mcvae.infer.objectives.SubsetELBO` with ``score="all"``). Each term is a lower
    bound on ``log p(x)`` of the same model; it trains the encoders of ``A``, the prior's
    couplings and the decoders of ``B`` along the path conditional generation takes. A departure
    from the paper's training objective (its effect is measured in docs/results/polymnist.md).
    With ``config.subset_singles`` the step also has one such term per component given alone,
    every component at every step (``M`` fixed terms beside the random ones)."""

    subset_scoring = "all"

    def subset_terms(self) -> tuple[torch.Tensor, int, torch.Tensor | None] | None:
        if not isinstance(self.config, GMRFConfig):
            return None
        k, singles = self.config.subset_posteriors, self.config.subset_singles
        if not (k or singles):
            return None
        m = self.num_components
        fixed = torch.ones(1, m, dtype=torch.bool)
        if singles:  # the whole tuple, then each component alone given
            fixed = torch.cat([fixed, torch.eye(m, dtype=torch.bool)])
        return fixed, k, subset_rows(m, max_size=self.config.subset_max_size) if k else None

    def subset_per_example(self) -> bool:
        return isinstance(self.config, GMRFConfig) and bool(self.config.subset_per_example)


def block_model(component_dims: Sequence[int], config: CommonConfig, prior: nn.Module, guide: nn.Module,
                cls=BlockLatentVAE) -> BlockLatentVAE:
    """The block-latent model (``cls``) over ``prior`` and ``guide`` with MLP decoders of
    ``config.hidden``."""
    dims, d = [int(x) for x in component_dims], config.block_dim
    return cls(dims, d, prior, guide, VectorDecoder(dims, d, config.hidden), config.likelihoods(dims), config)


def gmrf_guide(component_dims: Sequence[int], config: BlockPosteriorConfig, prior: nn.Module, cls=None, **extra):
    """The GMRF posterior (or a subclass ``cls``) set up from ``config``, completing absent
    components from ``prior``."""
    c = config
    return (cls or GMRFGuide)([int(x) for x in component_dims], c.block_dim, c.hidden, c.hidden, eps=c.eps,
                              mode=c.mode, graph=c.graph, offdiag_keep=c.offdiag_keep, prior=prior,
                              coupled=c.coupled_dims, **extra)


def build_gmrf(component_dims: Sequence[int], config: GMRFConfig) -> BlockLatentVAE:
    c = config
    top = c.subset_max_size  # its type is checked by GMRFConfig, its bound needs M
    if top is not None and not top < len(component_dims):
        raise ValueError(f"subset_max_size must be None or an integer in [1, M - 1] = [1, {len(component_dims) - 1}], "
                         f"got {top!r}")
    prior = GMRFPrior(len(component_dims), c.block_dim, c.prior, eps=c.prior_eps, mode=c.mode, graph=c.graph,
                      standardized=c.prior_standardized, init_shared=c.prior_init_shared, coupled=c.coupled_dims)
    return block_model(component_dims, c, prior, gmrf_guide(component_dims, c, prior), cls=GMRFVAE)


@dataclass
class IndependentConfig(CommonConfig):
    """The no-MRF ablation: independent Gaussian prior and posterior, ``block_dim`` per component."""

    block_dim: int = 2

    def problems(self) -> list[str]:
        return super().problems() + field_problems(self, block_dim=positive_int)


def build_independent(component_dims: Sequence[int], config: IndependentConfig) -> BlockLatentVAE:
    prior = DiagonalGaussianPrior(len(component_dims), config.block_dim)
    guide = DiagonalGaussianGuide([int(x) for x in component_dims], config.block_dim, config.hidden, prior=prior)
    return block_model(component_dims, config, prior, guide)
