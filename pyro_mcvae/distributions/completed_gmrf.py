"""The completed posterior ``q(z_A | x_A) p(z_B | z_A)`` of a batch whose rows miss components,
kept in its factored form.

For a row with present blocks ``A`` and absent ones ``B`` the law is Gaussian with mean
``(mu_q,A, mu_p,B + G (mu_q,A - mu_p,A))`` and covariance ``H S_q,AA H^T + C``, where, from the
prior alone, ``G = S_p,BA S_p,AA^-1`` and ``C = S_p,BB - G S_p,AB`` (``H``: the identity on ``A``
stacked on ``G``). Nothing the objectives need asks for that dense ``(M*d x M*d)`` matrix:

- a draw is ``z_A = mu_q,A + L_q e_A``, ``z_B = mu_p,B + G (z_A - mu_p,A) + L_C e_B``
  (``L_q L_q^T = S_q,AA``, ``L_C L_C^T = C``);
- ``log q(z) = log q_A(z_A) + log p(z_B | z_A)``;
- the entropy is ``H(q_A) + 0.5 log|2 pi e C|``;
- against the prior it was completed with, ``KL(q || p) = KL(q_A || p_A)`` exactly (the
  conditional parts cancel).

``G``, ``L_C`` (and ``p_A``'s precision and log-determinant) depend on ``A`` only: they are
computed once per distinct row of the mask, and a row applies its own through one matrix product
over the ``U`` distinct rows (``U * rows * (M d)^2`` multiply-adds, no per-row copy of a matrix).
``L_q`` is factorised on the present coordinates only, the rows grouped by how many components
they have (a row with one component present factorises a ``d x d`` matrix). The dense covariance,
its Cholesky factor and the precision are formed on demand (conditioning, marginals, metrics).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints, register_kl
from torch.distributions.utils import _standard_normal

from .._precision import full_precision
from .gmrf import GMRF, _kl_gmrf_diagonal, _kl_gmrf_gmrf, _prior_moments

__all__ = ["CompletedGMRF", "complete_from_prior", "present_blocks"]


def _per_pattern(mats: torch.Tensor, which: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``mats[which[b]] @ v[..., b, :]`` for every row ``b``: ``mats`` ``(U, n, n)``, ``which``
    ``(B,)``, ``v`` ``(..., B, n)``. One product against every distinct matrix and a selection,
    cheaper than copying a matrix per row when ``U`` is small (it is at most ``2^M - 1``)."""
    out = torch.einsum("uij,...bj->...bui", mats, v)  # (..., B, U, n)
    index = which.view(-1, 1, 1).expand(*out.shape[:-2], 1, out.shape[-1])
    return out.gather(-2, index).squeeze(-2)


def _prior_terms(mu_p: torch.Tensor, cov_p: torch.Tensor, rows: torch.Tensor, component_dim: int) -> dict:
    """What each distinct present pattern ``rows`` ``(U, M)`` needs from the prior, on the flat
    ``n = M d`` coordinates: ``gain`` ``G`` (absent rows, present columns), ``shift``
    ``absent * (mu_p - G mu_p,A)``, the conditional covariance ``cond`` ``C`` (absent block),
    its factor ``cond_tril`` and inverse factor ``cond_tril_inv`` (identity on the present
    coordinates), ``cond_logdet`` ``log|C|``, the present block's precision ``prec_a``
    ``S_p,AA^-1`` (zero elsewhere) and ``logdet_a`` ``log|S_p,AA|``."""
    a = rows.repeat_interleave(component_dim, -1).to(cov_p.dtype)  # (U, n)
    absent = 1.0 - a
    outer = a.unsqueeze(-1) * a.unsqueeze(-2)
    # S_p,AA padded with the identity on the absent coordinates keeps the factor well defined.
    tril_a = torch.linalg.cholesky(cov_p * outer + torch.diag_embed(absent))
    prec_a = torch.cholesky_inverse(tril_a) * outer
    gain = absent.unsqueeze(-1) * (cov_p @ prec_a)
    cond = cov_p - gain @ cov_p  # S_p,BB - G S_p,AB on the absent block
    cond = 0.5 * (cond + cond.transpose(-1, -2)) * (absent.unsqueeze(-1) * absent.unsqueeze(-2))
    cond_tril = torch.linalg.cholesky(cond + torch.diag_embed(a))
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return {
        "gain": gain,
        "shift": absent * (mu_p - (gain @ (mu_p * a).unsqueeze(-1)).squeeze(-1)),
        "cond": cond,
        "cond_tril": cond_tril,
        "cond_tril_inv": torch.linalg.solve_triangular(cond_tril, eye, upper=False),
        "cond_logdet": 2 * cond_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1),
        "prec_a": prec_a,
        "logdet_a": 2 * tril_a.diagonal(dim1=-2, dim2=-1).log().sum(-1),
    }


def present_blocks(cov: torch.Tensor, present: torch.Tensor, component_dim: int, rows=None) -> list[dict]:
    """The present blocks of a posterior's covariance, rows grouped by their number ``s`` of
    present components: ``cov`` ``(R, n, n)`` and ``present`` ``(R, M)`` for the rows ``rows``
    ``(R,)`` of a flat batch (default ``0..R-1``). Each group: ``rows``, their present
    coordinates ``idx`` ``(R_s, s d)`` (increasing), the block ``cov`` ``S_q,AA`` and its Cholesky
    factor ``tril``: what :class:`CompletedGMRF` reads of ``q``."""
    d = component_dim
    rows = torch.arange(present.shape[0], device=present.device) if rows is None else rows
    count = present.sum(-1)
    order = torch.argsort((~present).to(torch.int8), dim=-1, stable=True)  # present components first
    offsets = torch.arange(d, device=present.device)
    groups = []
    for size in torch.unique(count).tolist():
        sel = (count == size).nonzero().squeeze(-1)
        idx = (order[sel, :size, None] * d + offsets).reshape(len(sel), size * d)
        block = cov[sel[:, None, None], idx[:, :, None], idx[:, None, :]]
        groups.append({"rows": rows[sel], "idx": idx, "cov": block, "tril": torch.linalg.cholesky(block)})
    return groups


class CompletedGMRF(GMRF):
    """``q(z_A | x_A) p(z_B | z_A)`` row by row, in factored form (see the module docstring).

    Built by :func:`complete_from_prior`; batch shape ``present.shape[:-1]``, event shape
    ``(M*d,)``. A :class:`GMRF` (and a ``MultivariateNormal``): ``covariance_matrix``,
    ``scale_tril``, ``precision_matrix``, ``condition`` and ``marginal`` work and form the dense
    matrices when asked; ``rsample``, ``log_prob``, ``entropy`` and the KL to the prior it was
    completed with do not.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc_q, covariance, present, prior_loc, prior_cov, terms: dict, which, *, groups=None,
                 validate_args=None):
        m, n = present.shape[-1], loc_q.shape[-1]
        self.num_components, self.component_dim = m, n // m
        self._rows = {"present": present, "which": which, "a": present.repeat_interleave(n // m, -1).to(loc_q.dtype)}
        # q's mean (zero off A) and covariance (read on A only), or only its present blocks
        # (``groups``, see present_blocks; the dense covariance is then formed when asked).
        self._q = {"loc": loc_q, "cov": covariance}
        if groups is not None:
            self._q["groups"] = groups
        self._prior = {"loc": prior_loc, "cov": prior_cov}
        self._terms = terms
        self._given = {"covariance": None, "precision": None}
        a = self._rows["a"]
        flat = (loc_q * a).reshape(-1, n)
        mean = flat + _per_pattern(terms["gain"], which.reshape(-1), flat) + terms["shift"][which.reshape(-1)]
        self.loc = mean.reshape(loc_q.shape)
        torch.distributions.Distribution.__init__(self, present.shape[:-1], torch.Size([n]),
                                                  validate_args=validate_args)

    # -- row-wise pieces ---------------------------------------------------------------------
    def _flat(self, name: str) -> torch.Tensor:
        t = self._rows[name] if name in self._rows else self._q[name]
        lead = t.dim() - (0 if name == "which" else 2 if name == "cov" else 1)
        return t.reshape(-1, *t.shape[lead:])

    @property
    @full_precision
    def _groups(self) -> list[dict]:
        """The rows grouped by their number ``s`` of present components (at most ``M`` groups):
        ``rows`` ``(R,)``, their present coordinates ``idx`` ``(R, s d)`` (increasing), q's
        present block ``cov`` ``S_q,AA`` and its Cholesky factor ``tril`` ``(R, s d, s d)``. A row
        with one component present factorises a ``d x d`` matrix, not an ``M d`` one."""
        if "groups" not in self._q:
            with torch.enable_grad():  # a cache first filled inside sample() must still carry gradients
                self._q["groups"] = self._make_groups()
        return self._q["groups"]

    def _make_groups(self) -> list[dict]:
        return present_blocks(self._flat("cov"), self._flat("present"), self.component_dim)

    def _q_covariance(self) -> torch.Tensor:
        """q's covariance ``(*batch, n, n)``, zero off the present blocks when built from them."""
        if self._q["cov"] is None:
            n = self.event_shape[0]
            flat = self._flat("loc")
            cov = flat.new_zeros(flat.shape[0], n, n)
            for g in self._q["groups"]:
                cov = cov.index_put((g["rows"][:, None, None], g["idx"][:, :, None], g["idx"][:, None, :]), g["cov"])
            self._q["cov"] = cov.reshape(*self._q["loc"].shape[:-1], n, n)
        return self._q["cov"]

    def _half_logdet_q(self) -> torch.Tensor:
        """``log|L_q|`` per row ``(B,)``."""
        out = self._flat("loc").new_zeros(self._flat("which").shape)
        for g in self._groups:
            out = out.index_put((g["rows"],), g["tril"].diagonal(dim1=-2, dim2=-1).log().sum(-1))
        return out

    def _rowwise(self, value: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """``value`` ``(..., *batch, n)`` as ``(..., B, n)`` and the shape to restore."""
        shape = torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape)
        value = value.expand(shape)
        lead = shape[: len(shape) - len(self.batch_shape) - 1]
        return value.reshape(*lead, -1, shape[-1]), shape

    @full_precision
    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        e = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self._draw(e)

    def _draw(self, e: torch.Tensor) -> torch.Tensor:
        """The draw from standard normal noise ``e`` ``(..., *batch, n)`` (the reparameterisation)."""
        e, shape = self._rowwise(e)
        a, which, t = self._flat("a"), self._flat("which"), self._terms
        cols = e.reshape(-1, *e.shape[-2:]).permute(1, 2, 0)  # (B, n, S): the draws as columns
        z_a = torch.zeros_like(cols)
        for g in self._groups:  # L_q e_A on the present coordinates
            at = (g["rows"][:, None], g["idx"])
            z_a = z_a.index_put(at, g["tril"] @ cols[at])
        z_a = z_a.permute(2, 0, 1).reshape(e.shape) + self._flat("loc") * a
        z = z_a + _per_pattern(t["gain"], which, z_a) + t["shift"][which]
        return (z + _per_pattern(t["cond_tril"], which, e * (1 - a))).reshape(shape)

    @full_precision
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log q_A(z_A) + log p(z_B | z_A)``."""
        value, shape = self._rowwise(value)
        a, which, t = self._flat("a"), self._flat("which"), self._terms
        n = shape[-1]
        diff = (value - self._flat("loc")).reshape(-1, *value.shape[-2:]).permute(1, 2, 0)  # (B, n, S)
        maha = diff.new_zeros(diff.shape[0], diff.shape[-1])  # (B, S)
        for g in self._groups:
            white = torch.linalg.solve_triangular(g["tril"], diff[g["rows"][:, None], g["idx"]], upper=False)
            maha = maha.index_put((g["rows"],), white.pow(2).sum(-2))
        maha = maha.transpose(0, 1).reshape(value.shape[:-1])
        rest = (value - _per_pattern(t["gain"], which, value * a) - t["shift"][which]) * (1 - a)
        white_b = _per_pattern(t["cond_tril_inv"], which, rest)
        half_logdet = self._half_logdet_q() + 0.5 * t["cond_logdet"][which]
        lp = -0.5 * (maha + white_b.pow(2).sum(-1)) - half_logdet - 0.5 * n * math.log(2 * math.pi)
        return lp.reshape(shape[:-1])

    @full_precision
    def entropy(self) -> torch.Tensor:
        n = self.event_shape[0]
        half_logdet = self._half_logdet_q() + 0.5 * self._terms["cond_logdet"][self._flat("which")]
        return (0.5 * n * (1.0 + math.log(2 * math.pi)) + half_logdet).reshape(self.batch_shape)

    @full_precision
    def kl_to_completing_prior(self) -> torch.Tensor:
        """``KL(q || p) = KL(q_A || p_A)`` for the prior ``p`` this law was completed with,
        batch shape as the law's."""
        a, which, t = self._flat("a"), self._flat("which"), self._terms
        diff = (self._flat("loc") - self._prior["loc"]) * a
        trace = diff.new_zeros(which.shape)
        for g in self._groups:  # tr(S_p,AA^-1 S_q,AA) on each row's present block
            idx = g["idx"]
            prec = t["prec_a"][which[g["rows"]][:, None, None], idx[:, :, None], idx[:, None, :]]
            trace = trace.index_put((g["rows"],), (prec * g["cov"]).sum((-2, -1)))
        maha = (diff * _per_pattern(t["prec_a"], which, diff)).sum(-1)
        kl = 0.5 * (trace + maha - a.sum(-1) + t["logdet_a"][which] - 2 * self._half_logdet_q())
        return kl.reshape(self.batch_shape)

    def completed_with(self, p) -> bool:
        """Whether ``p`` is (in value) the prior this law was completed with."""
        try:
            loc, cov = _prior_moments(p)
        except ValueError:
            return False
        mine = self._prior
        same_loc = loc is mine["loc"] or (loc.shape[-1:] == mine["loc"].shape and bool((loc == mine["loc"]).all()))
        return same_loc and (cov is mine["cov"] or (cov.shape == mine["cov"].shape and torch.equal(cov, mine["cov"])))

    # -- the dense law, on demand ---------------------------------------------------------------
    @full_precision
    def _covariance_unbroadcast(self) -> torch.Tensor:
        """``H S_q,pad H^T + C`` for the law's own batch shape."""
        if self._given["covariance"] is None:
            self._given["covariance"] = self._dense_covariance()
        return self._given["covariance"]

    @torch.enable_grad()  # a cache: first use may be inside sample()
    def _dense_covariance(self) -> torch.Tensor:
        a, which, t = self._flat("a"), self._flat("which"), self._terms
        lift = torch.diag_embed(a) + t["gain"][which]
        n = self.event_shape[0]
        cov_pad = self._q_covariance().reshape(-1, n, n) * (a.unsqueeze(-1) * a.unsqueeze(-2))
        cov = lift @ cov_pad @ lift.transpose(-1, -2) + t["cond"][which]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        return cov.reshape(*self._q["loc"].shape[:-1], *cov.shape[-2:])

    @property
    @full_precision
    def _unbroadcasted_scale_tril(self) -> torch.Tensor:
        if "dense_tril" not in self._q:
            with torch.enable_grad():
                self._q["dense_tril"] = torch.linalg.cholesky(self._covariance_unbroadcast())
        return self._q["dense_tril"]

    @property
    def covariance_matrix(self) -> torch.Tensor:
        n = self.event_shape[0]
        return self._covariance_unbroadcast().expand(*self.batch_shape, n, n)

    @property
    def variance(self) -> torch.Tensor:
        return self._covariance_unbroadcast().diagonal(dim1=-2, dim2=-1).expand(self.batch_shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(CompletedGMRF, _instance)
        batch_shape = torch.Size(batch_shape)
        n = self.event_shape[0]
        new.num_components, new.component_dim = self.num_components, self.component_dim
        new._prior, new._terms = self._prior, self._terms
        new._rows = {"present": self._rows["present"].expand(*batch_shape, self.num_components),
                     "which": self._rows["which"].expand(batch_shape),
                     "a": self._rows["a"].expand(*batch_shape, n)}
        if batch_shape == self.batch_shape:  # Pyro's plates expand to the same shape: keep q's blocks
            new._q = dict(self._q)
        else:
            new._q = {"loc": self._q["loc"].expand(*batch_shape, n),
                      "cov": self._q_covariance().expand(*batch_shape, n, n)}
        new._given = {"covariance": None, "precision": None}
        new.loc = self.loc.expand(*batch_shape, n)
        torch.distributions.Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


@register_kl(CompletedGMRF, GMRF)
def _kl_completed_gmrf(q: CompletedGMRF, p: GMRF) -> torch.Tensor:
    """``KL(q_A || p_A)`` row by row against the completing prior; the dense rule otherwise."""
    if q.event_shape != p.event_shape or not q.completed_with(p):
        return _kl_gmrf_gmrf(q, p)
    return q.kl_to_completing_prior().expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@register_kl(CompletedGMRF, torch.distributions.Independent)
def _kl_completed_diagonal(q: CompletedGMRF, p) -> torch.Tensor:
    if q.event_shape != p.event_shape or not q.completed_with(p):
        return _kl_gmrf_diagonal(q, p)
    return q.kl_to_completing_prior().expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@full_precision
def complete_from_prior(
    loc: torch.Tensor,
    covariance: torch.Tensor,
    present: torch.Tensor,
    prior,
    component_dim: int,
    groups: list[dict] | None = None,
) -> CompletedGMRF:
    """The law ``q(z_A) p(z_B | z_A)`` for the present components ``A`` of each batch element.

    When components are absent from a sample the posterior of the present ones, ``q(z_A)``, is
    completed by the prior's conditional law of the absent blocks given the present ones. Then
    ``log q(z) - log p(z) = log q(z_A) - log p(z_A)`` for every ``z``: the ELBO is the one of the
    observed components alone, its KL is ``KL(q_A || p_A)`` (exact with ``TraceMeanField_ELBO``,
    without extra variance with ``Trace_ELBO``), and the result is still one Gaussian per sample,
    so different samples may miss different components in one batch.

    Args:
        loc: ``(..., M*d)`` mean of ``q``; entries of absent blocks are ignored.
        covariance: ``(..., M*d, M*d)`` covariance of ``q``; its rows and columns of absent
            blocks are ignored.
        present: bool ``(..., M)``, at least one True per row.
        prior: Gaussian over ``(M*d,)`` with batch shape ``()``: a :class:`GMRF`, a
            ``MultivariateNormal`` or ``Normal(...).to_event(1)``.
        component_dim: ``d``.
        groups: instead of ``covariance`` (then None), only its present blocks, as
            :func:`present_blocks` gives them, for a flat batch ``(B,)``: a caller that knows
            them (a lone component's diagonal block, a block shared by copies of a row) skips
            the dense ``(B, M*d, M*d)`` matrix, which is formed only if asked for.

    Returns:
        a :class:`CompletedGMRF`: mean ``H (a * mu_q) + c`` and covariance
        ``H S_q,pad H^T + C``, where ``S_q,pad`` is ``S_q`` with the absent rows and columns
        zeroed, ``a`` flags the present coordinates, and, from the prior alone, ``H`` is the
        identity on the present rows and the prior's regression ``G = S_p,BA S_p,AA^-1`` on the
        absent ones, ``C`` the conditional covariance ``S_p,BB - G S_p,AB`` on the absent block
        and ``c = mu_p - H (a * mu_p)`` (zero on the present rows). The prior's quantities are
        computed once per distinct row of ``present``. Where every component is present the law
        is ``q`` itself, exactly.
    """
    if present.dtype != torch.bool or not bool(present.any(-1).all()):
        raise ValueError("present must be a bool (..., M) tensor with a True in every row")
    m, d = present.shape[-1], component_dim
    n = m * d
    if (covariance is None) == (groups is None):
        raise ValueError("give exactly one of covariance and groups")
    if groups is not None and (loc.dim() != 2 or present.shape != (loc.shape[0], m)):
        raise ValueError(f"with groups, loc must be (B, M*d) and present (B, M); got {tuple(loc.shape)} and "
                         f"{tuple(present.shape)}")
    if loc.shape[-1] != n or (covariance is not None and covariance.shape[-2:] != (n, n)):
        raise ValueError(f"loc and covariance must have M*d = {n} coordinates, got "
                         f"{tuple(loc.shape)} and {None if covariance is None else tuple(covariance.shape)}")
    mu_p, cov_p = _prior_moments(prior)
    shape = torch.broadcast_shapes(loc.shape[:-1], present.shape[:-1],
                                   *([] if covariance is None else [covariance.shape[:-2]]))
    present = present.expand(*shape, m)
    rows, which = torch.unique(present.reshape(-1, m), dim=0, return_inverse=True)  # (U, M), (B,)
    terms = _prior_terms(mu_p, cov_p, rows, d)
    a = present.repeat_interleave(d, -1).to(loc.dtype)
    cov = None if covariance is None else covariance.expand(*shape, n, n)
    return CompletedGMRF(loc.expand(*shape, n) * a, cov, present, mu_p, cov_p, terms, which.reshape(shape),
                         groups=groups, validate_args=False)
