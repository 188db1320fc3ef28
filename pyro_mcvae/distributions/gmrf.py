"""Gaussian Markov random field over ``M`` latent blocks of size ``d``.

A :class:`pyro.distributions.MultivariateNormal` over the flat ``M*d`` vector that knows its block
structure, so it can take marginals and condition on any subset of components in closed form.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

import torch

from .._precision import full_precision
import pyro.distributions as dist
from torch.distributions import register_kl
from torch.distributions.utils import _standard_normal

from ..validation import check_component_indices, check_finite
from ..covariance import PackedBlocks, assemble_packed

__all__ = ["GMRF", "as_gmrf", "component_indices"]


def component_indices(components: Sequence[int], component_dim: int, device=None) -> torch.Tensor:
    """Flat coordinate indices of the given components, ``(len(components) * d,)``."""
    comps = torch.as_tensor(list(components), dtype=torch.long, device=device)
    return (comps[:, None] * component_dim + torch.arange(component_dim, device=device)).reshape(-1)


def _observed_tensor(observed: Mapping[int, torch.Tensor], comps: list[int], component_dim: int,
                     like: torch.Tensor) -> torch.Tensor:
    """The observed blocks ``{k: (..., d)}`` of ``comps``, checked and concatenated to
    ``(..., len(comps) * d)`` (dtype and device of ``like``)."""
    values = []
    for k in comps:
        v = torch.as_tensor(observed[k], dtype=like.dtype, device=like.device)
        if v.dim() == 0 or v.shape[-1] != component_dim:
            raise ValueError(
                f"observed value of component {k} must have shape (..., {component_dim}), "
                f"got {tuple(v.shape)}"
            )
        check_finite(v, f"observed value of component {k}")
        values.append(v)
    return torch.cat(torch.broadcast_tensors(*values), dim=-1)


def split_observed(observed: Mapping[int, torch.Tensor], num_components: int, component_dim: int,
                   like: torch.Tensor):
    """Checks ``observed`` (``{component: value (..., d)}``) for conditioning a law over ``M``
    blocks and splits the coordinates. Returns ``(comps_a, comps_b, ia, ib, z_a)``: observed and
    remaining components in increasing order, their flat coordinate indices, and the observed
    values concatenated to ``(..., |A| d)`` (dtype and device of ``like``)."""
    if not isinstance(observed, Mapping) or not observed:
        raise ValueError("observed must be a non-empty dict {component index: value}")
    comps_a = check_component_indices(observed.keys(), num_components, "observed component")
    observed = {int(k): v for k, v in observed.items()}
    comps_b = [k for k in range(num_components) if k not in comps_a]
    if not comps_b:
        raise ValueError("every component is observed; nothing is left to condition")
    z_a = _observed_tensor(observed, comps_a, component_dim, like)
    ia = component_indices(comps_a, component_dim, like.device)
    ib = component_indices(comps_b, component_dim, like.device)
    return comps_a, comps_b, ia, ib, z_a


class GMRF(dist.MultivariateNormal):
    """Multivariate normal over ``M`` components of ``d`` coordinates each.

    Args:
        loc: ``(..., M*d)`` or ``(..., M, d)`` mean.
        covariance_matrix, precision_matrix, scale_tril: exactly one, ``(..., M*d, M*d)``.
        num_components: ``M``.
        component_dim: ``d``; inferred from the event size when omitted.

    A GMRF built from a precision matrix conditions through the precision (``Q_BB``), one built
    otherwise through the covariance; both use Cholesky solves and never form an inverse.
    """

    # The given matrix's distinct entries where from_blocks assembled it ({"covariance" or
    # "precision": PackedBlocks}); replaced per instance, never mutated.
    _packed: Mapping[str, PackedBlocks] = MappingProxyType({})

    @full_precision
    def __init__(
        self,
        loc: torch.Tensor,
        covariance_matrix: torch.Tensor | None = None,
        precision_matrix: torch.Tensor | None = None,
        scale_tril: torch.Tensor | None = None,
        *,
        num_components: int,
        component_dim: int | None = None,
        validate_args=None,
    ):
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be a positive integer, got {num_components!r}")
        matrix = next(
            (m for m in (covariance_matrix, precision_matrix, scale_tril) if m is not None), None
        )
        if matrix is None:
            raise ValueError("give exactly one of covariance_matrix, precision_matrix, scale_tril")
        n = matrix.shape[-1]
        if component_dim is None:
            component_dim = n // num_components
        if num_components * component_dim != n:
            raise ValueError(
                f"a {n}x{n} matrix does not split into num_components={num_components} blocks of "
                f"component_dim={component_dim}"
            )
        if loc.dim() >= 2 and loc.shape[-1] != n and loc.shape[-2:] == (num_components, component_dim):
            loc = loc.reshape(*loc.shape[:-2], n)
        if loc.shape[-1] != n:
            raise ValueError(
                f"loc must have shape (..., {n}) or (..., {num_components}, {component_dim}), "
                f"got {tuple(loc.shape)}"
            )
        if loc.dtype != matrix.dtype:
            raise ValueError(f"loc ({loc.dtype}) and the matrix ({matrix.dtype}) must share a dtype")
        self.num_components = num_components
        self.component_dim = component_dim
        # The matrix as given, before torch expands it to the batch shape.
        self._given = {"covariance": covariance_matrix, "precision": precision_matrix}
        if covariance_matrix is None and precision_matrix is None:
            super().__init__(loc, scale_tril=scale_tril, validate_args=validate_args)
            return
        # Given a covariance or a precision, the Cholesky factor is computed when first needed
        # (torch computes it here): a posterior that is only completed (complete_from_prior) never
        # needs the factor of the whole matrix, and the analytic KL to a prior given by its
        # precision needs the precision's own factor only (its log-determinant), not the
        # covariance's (a triangular inverse).
        name = "covariance_matrix" if covariance_matrix is not None else "precision_matrix"
        batch_shape = torch.broadcast_shapes(matrix.shape[:-2], loc.shape[:-1])
        setattr(self, name, matrix.expand(batch_shape + (n, n)))
        self.loc = loc.expand(batch_shape + (n,))
        torch.distributions.Distribution.__init__(self, batch_shape, torch.Size([n]), validate_args=validate_args)

    @property
    @full_precision
    def _unbroadcasted_scale_tril(self) -> torch.Tensor:
        """The covariance's Cholesky factor for the law's own batch shape (formed on first use
        from a given covariance, or from a given precision ``Q = R R^T`` as ``R^-T``, as torch's
        ``MultivariateNormal`` forms it)."""
        if "_tril" not in self.__dict__:
            with torch.enable_grad():  # first use may be inside sample(): the cache keeps its graph
                if self._given["covariance"] is not None:
                    self._tril = torch.linalg.cholesky(self._given["covariance"])
                else:
                    r = self._precision_factor()
                    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
                    self._tril = torch.linalg.solve_triangular(r.transpose(-1, -2), eye, upper=False)
        return self._tril

    @full_precision
    def _precision_factor(self) -> torch.Tensor:
        """Upper-triangular ``R`` with ``Q = R R^T`` for a given precision ``Q`` (own batch shape),
        formed on first use."""
        if "_rtriu" not in self.__dict__:
            with torch.enable_grad():
                self._rtriu = torch.linalg.cholesky(self._given["precision"].flip(-2, -1)).flip(-2, -1)
        return self._rtriu

    def _log_det_covariance(self) -> torch.Tensor:
        """``log |Sigma|`` for the law's own batch shape, from the factor at hand: ``-log |Q|``
        where a precision was given (no triangular inverse), else ``2 sum log diag L``."""
        if self._given["precision"] is not None:
            return -2 * self._precision_factor().diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return 2 * self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @_unbroadcasted_scale_tril.setter
    def _unbroadcasted_scale_tril(self, value: torch.Tensor) -> None:
        self._tril = value

    @classmethod
    def from_blocks(
        cls,
        loc: torch.Tensor,
        diag: torch.Tensor,
        offdiag: torch.Tensor,
        parameterization: str = "covariance",
        **assembly,
    ) -> "GMRF":
        """GMRF whose covariance (or precision) is assembled by :func:`assemble_block_covariance`.

        ``loc``: ``(..., M, d)``; ``diag``: ``(..., M, d)`` or ``(..., M, d, d)``;
        ``offdiag``: ``(..., M, M, c, c)``, ``c <= d`` coupled coordinates per block (see
        :func:`assemble_block_covariance`); ``parameterization``: ``"covariance"`` or
        ``"precision"`` (which matrix the construction builds).
        """
        if parameterization not in ("covariance", "precision"):
            raise ValueError(
                f"parameterization must be 'covariance' or 'precision', got {parameterization!r}"
            )
        packed = assemble_packed(diag, offdiag, **assembly)
        m, d = offdiag.shape[-4], diag.shape[-1]
        # SPD by construction: re-checking it would cost one Cholesky per batch element.
        law = cls(loc, **{f"{parameterization}_matrix": packed.dense()}, num_components=m, component_dim=d,
                  validate_args=False)
        law._packed = {parameterization: packed}
        return law

    @property
    def loc_blocks(self) -> torch.Tensor:
        """Mean as ``(..., M, d)``."""
        return self.loc.reshape(*self.loc.shape[:-1], self.num_components, self.component_dim)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GMRF, _instance)
        new.num_components = self.num_components
        new.component_dim = self.component_dim
        new._given, new._packed = self._given, self._packed
        batch_shape = torch.Size(batch_shape)
        n = self.event_shape[0]
        for cached in ("_tril", "_rtriu"):  # factors formed so far (the others stay lazy)
            if cached in self.__dict__:
                setattr(new, cached, self.__dict__[cached])
        new.loc = self.loc.expand(batch_shape + (n,))
        for name in ("covariance_matrix", "scale_tril", "precision_matrix"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(batch_shape + (n, n)))
        torch.distributions.Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @full_precision
    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``z = mu + L u``; a factor shared by the whole batch is applied in one matrix product
        (torch's generic rule runs one small product per batch element)."""
        l = self._unbroadcasted_scale_tril
        if l.dim() > 2:
            return super().rsample(sample_shape)
        shape = self._extended_shape(sample_shape)
        u = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + u @ l.transpose(-1, -2)

    def _indices(self, components: Sequence[int]) -> torch.Tensor:
        return component_indices(components, self.component_dim, device=self.loc.device)

    def marginal(self, components: Sequence[int]) -> "GMRF":
        """The GMRF of the given components (in increasing order)."""
        comps = check_component_indices(components, self.num_components)
        if not comps:
            raise ValueError("marginal needs at least one component")
        idx = self._indices(comps)
        cov = self.covariance_matrix.index_select(-2, idx).index_select(-1, idx)
        return GMRF(
            self.loc.index_select(-1, idx),
            covariance_matrix=cov,
            num_components=len(comps),
            component_dim=self.component_dim,
            validate_args=False,  # a principal submatrix of an SPD matrix is SPD
        )

    @full_precision
    def condition(self, observed: Mapping[int, torch.Tensor]) -> "GMRF":
        """Law of the remaining components given observed ones.

        ``observed`` maps component index to its value ``(..., d)``; leading dimensions (samples,
        batch) broadcast against this distribution's batch shape. Returns the GMRF of the other
        components in increasing order:
        ``mu_B|A = mu_B + S_BA S_AA^-1 (z_A - mu_A)``, ``S_B|A = S_BB - S_BA S_AA^-1 S_AB``
        (equivalently ``Q_B|A = Q_BB``, ``mu_B|A = mu_B - Q_BB^-1 Q_BA (z_A - mu_A)``).
        """
        comps_a, comps_b, ia, ib, z_a = split_observed(observed, self.num_components,
                                                       self.component_dim, self.loc)
        # The gain and the conditional matrix depend on the law only, not on the observed values:
        # they are computed once for the law's own (unbroadcast) batch shape and applied to all
        # values with one matrix product.
        diff = (z_a - self.loc.index_select(-1, ia)).unsqueeze(-2)  # (..., 1, |A|)
        loc_b = self.loc.index_select(-1, ib)
        if self._given["precision"] is not None:
            q = self._given["precision"]
            q_bb = q.index_select(-2, ib).index_select(-1, ib)
            q_ab = q.index_select(-2, ia).index_select(-1, ib)
            # -Q_BB^-1 Q_BA, transposed to (..., |A|, |B|)
            gain = -torch.cholesky_solve(q_ab.transpose(-1, -2), torch.linalg.cholesky(q_bb))
            gain = gain.transpose(-1, -2)
            matrix = {"precision_matrix": q_bb}
        else:
            cov = self._covariance_unbroadcast()
            s_aa = cov.index_select(-2, ia).index_select(-1, ia)
            s_ab = cov.index_select(-2, ia).index_select(-1, ib)
            s_bb = cov.index_select(-2, ib).index_select(-1, ib)
            gain = torch.cholesky_solve(s_ab, torch.linalg.cholesky(s_aa))  # S_AA^-1 S_AB
            cond_cov = s_bb - s_ab.transpose(-1, -2) @ gain
            matrix = {"covariance_matrix": 0.5 * (cond_cov + cond_cov.transpose(-1, -2))}
        loc = loc_b + (diff @ gain).squeeze(-2)  # gain: (..., |A|, |B|)
        return GMRF(
            loc,
            **matrix,
            num_components=len(comps_b),
            component_dim=self.component_dim,
            validate_args=False,  # a Schur complement of an SPD matrix is SPD
        )

    @full_precision
    def _covariance_unbroadcast(self) -> torch.Tensor:
        """The covariance for the law's own batch shape (not expanded to the data's)."""
        if self._given["covariance"] is not None:
            return self._given["covariance"]
        l = self._unbroadcasted_scale_tril
        return l @ l.transpose(-1, -2)

    def _precision_unbroadcast(self) -> torch.Tensor:
        """The precision for the law's own batch shape (not expanded to the data's)."""
        if self._given["precision"] is not None:
            return self._given["precision"]
        return torch.cholesky_inverse(self._unbroadcasted_scale_tril)


@register_kl(GMRF, GMRF)
@full_precision
def _kl_gmrf_gmrf(q: GMRF, p: GMRF) -> torch.Tensor:
    """``KL(q || p)`` with ``p``'s precision formed once for its own batch shape.

    ``0.5 (tr(Q_p S_q) + (mu_p - mu_q)^T Q_p (mu_p - mu_q) - k + log|S_p| - log|S_q|)`` with
    ``tr(Q_p S_q)`` as an elementwise sum (both symmetric): ``O(k^2)`` per batch element where
    torch's generic rule solves a ``k x k`` triangular system against ``p``'s factor broadcast to
    the whole batch. Where ``q`` was assembled by :meth:`GMRF.from_blocks` the sum runs over its
    distinct entries, ``<values, w>`` with ``w`` the prior's precision summed per entry
    (:meth:`~pyro_mcvae.covariance.PackedBlocks.weights`, once per prior).
    """
    if q.event_shape != p.event_shape:
        raise ValueError(f"KL between GMRFs of event shapes {q.event_shape} and {p.event_shape}")
    k = q.event_shape[0]
    prec_p = p._precision_unbroadcast()
    diff = q.loc - p.loc
    packed = q._packed.get("covariance")
    if packed is not None:
        # From S_q's distinct entries: the batch of q never forms Q_p * S_q at (M d)^2 per datum.
        trace = (packed.values * packed.weights(prec_p)).sum(-1)
    else:
        trace = (prec_p * q._covariance_unbroadcast()).sum((-2, -1))
    maha = ((diff.unsqueeze(-2) @ prec_p).squeeze(-2) * diff).sum(-1)
    kl = 0.5 * (trace + maha - k + p._log_det_covariance() - q._log_det_covariance())
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


def _prior_moments(prior) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a Gaussian prior over a flat vector."""
    if isinstance(prior, GMRF):
        return prior.loc, prior._covariance_unbroadcast()
    if isinstance(prior, torch.distributions.MultivariateNormal):
        return prior.loc, prior.covariance_matrix
    base = getattr(prior, "base_dist", None)
    if (isinstance(prior, torch.distributions.Independent) and isinstance(base, torch.distributions.Normal)
            and prior.reinterpreted_batch_ndims == 1):
        return base.loc, torch.diag_embed(base.scale.pow(2))
    raise ValueError(f"the prior must be Gaussian over a flat vector, got {type(prior).__name__}")


def as_gmrf(prior, num_components: int, component_dim: int) -> GMRF:
    """A Gaussian prior over the flat ``M*d`` vector as a :class:`GMRF` (itself when it is one):
    a ``MultivariateNormal`` or an independent ``Normal(...).to_event(1)``."""
    if isinstance(prior, GMRF):
        return prior
    loc, cov = _prior_moments(prior)
    return GMRF(loc, covariance_matrix=cov, num_components=num_components,
                component_dim=component_dim, validate_args=False)


@register_kl(GMRF, torch.distributions.Independent)
@full_precision
def _kl_gmrf_diagonal(q: GMRF, p) -> torch.Tensor:
    """``KL(q || p)`` against an independent Gaussian ``Normal(loc, scale).to_event(1)`` (e.g. the
    diagonal prior when a diagonal guide completed absent blocks from it)."""
    base = p.base_dist
    if not isinstance(base, torch.distributions.Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    if q.event_shape != p.event_shape:
        raise ValueError(f"KL between event shapes {q.event_shape} and {p.event_shape}")
    var_p = base.scale.pow(2)
    cov_q = q._covariance_unbroadcast()
    diff = q.loc - base.loc
    trace = (cov_q.diagonal(dim1=-2, dim2=-1) / var_p).sum(-1)
    maha = (diff.pow(2) / var_p).sum(-1)
    kl = 0.5 * (trace + maha - q.event_shape[0] + var_p.log().sum(-1) - q._log_det_covariance())
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
