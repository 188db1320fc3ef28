"""Block SPD assembly: the GMRF MCVAE paper's Theorem 1 with its block scaling.

Pure tensor functions, batched over any leading dimensions. Shapes use ``M`` for the number of
components and ``d`` for the latent size of one component.

Construction (``mode="blockwise"``)::

    s_i  = sum_{j != i} ||T_ij||_2 + delta
    a_i  = min(1, eps * lambda_min(S_ii) / s_i)
    S_ij = sqrt(a_i a_j) T_ij              (i != j),  S_ii given

With ``D = diag(sqrt(a_i) I)``, ``S = D (D^-1 S_diag D^-1 + T) D`` and the middle matrix is strictly
block diagonally dominant (``lambda_min(S_ii) / a_i >= s_i / eps > sum_j ||T_ij||``), hence SPD;
congruence keeps SPD. ``mode="elementwise"`` does the same per scalar row with absolute values,
``O(M^2 d^2)`` instead of the ``O(M^2 d^3)`` of the spectral norms.

Coupled coordinates: ``offdiag`` may cover only the leading ``c <= d`` coordinates of each block
(shape ``(..., M, M, c, c)``); the other ``d - c`` coordinates of every block are coupled to no
other block (a sparse matrix at the coordinate level: "content" coordinates shared across
components, "style" coordinates private to one). With diagonal variances the matrix is then,
up to a permutation of coordinates, the construction applied to the ``c`` coupled coordinates
(their variances only: ``lambda_min`` over the coupled coordinates) beside a positive diagonal,
hence SPD by the same theorem; with full ``d x d`` diagonal blocks it is the construction itself
with ``T`` zero outside the leading ``c x c`` sub-blocks (``lambda_min`` of the whole block).

The same function serves any SPD block matrix: a covariance (the guide) or a precision (the
prior in its Markov-random-field parameterisation).

Computation: only the ``M (M - 1) / 2`` blocks ``i < j`` are normed and scaled; the matrix is one
gather from them, the diagonal blocks and a zero (:func:`assemble_packed`, :class:`PackedBlocks`),
and a ``2 x 2`` block's norm has a closed form (:func:`spectral_norm`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ._precision import full_precision

from .validation import check_finite

__all__ = [
    "PackedBlocks",
    "assemble_block_covariance",
    "assemble_packed",
    "block_scaling",
    "blocks_to_matrix",
    "matrix_to_blocks",
    "mirror_upper_blocks",
    "num_offdiag_pairs",
    "spectral_norm",
]

_MODES = ("blockwise", "elementwise")


def num_offdiag_pairs(num_components: int) -> int:
    """Number of blocks ``i < j``: ``M (M - 1) / 2``."""
    return num_components * (num_components - 1) // 2


def blocks_to_matrix(blocks: torch.Tensor) -> torch.Tensor:
    """``(..., M, M, d, d)`` blocks to the ``(..., M*d, M*d)`` matrix."""
    *batch, m, m2, d, d2 = blocks.shape
    return blocks.transpose(-3, -2).reshape(*batch, m * d, m2 * d2)


def matrix_to_blocks(matrix: torch.Tensor, component_dim: int) -> torch.Tensor:
    """``(..., M*d, M*d)`` matrix to its ``(..., M, M, d, d)`` blocks."""
    *batch, n, _ = matrix.shape
    m, d = n // component_dim, component_dim
    return matrix.reshape(*batch, m, d, m, d).transpose(-3, -2)


def mirror_upper_blocks(offdiag: torch.Tensor, graph: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric off-diagonal block matrix ``T`` from the blocks ``i < j`` of ``offdiag``.

    ``offdiag``: ``(..., M, M, d, d)``; blocks on and below the block diagonal are ignored.
    ``graph``: optional boolean ``(M, M)`` adjacency; non-edges get zero blocks.
    Returns ``(..., M, M, d, d)`` with ``T_ji = T_ij^T`` and zero diagonal blocks.
    """
    m = offdiag.shape[-3]
    upper = torch.ones(m, m, dtype=torch.bool, device=offdiag.device).triu(1)
    if graph is not None:
        upper = upper & graph.to(device=offdiag.device, dtype=torch.bool)
    # where, not a product: an unused block holding inf must not become NaN (inf * 0).
    upper_blocks = torch.where(upper[..., None, None], offdiag, torch.zeros((), dtype=offdiag.dtype,
                                                                          device=offdiag.device))
    return upper_blocks + upper_blocks.transpose(-4, -3).transpose(-2, -1)


def _lambda_min(diag: torch.Tensor, full_blocks: bool) -> torch.Tensor:
    """Smallest eigenvalue of each diagonal block, ``(..., M)``."""
    if full_blocks:
        return torch.linalg.eigvalsh(diag)[..., 0]
    return diag.min(dim=-1).values


def block_scaling(
    lambda_min: torch.Tensor, row_sums: torch.Tensor, eps: float
) -> torch.Tensor:
    """Scaling ``a = min(1, eps * lambda_min / row_sums)`` (shapes broadcast)."""
    return torch.clamp(eps * lambda_min / row_sums, max=1.0)


class _GramSpectralNorm(torch.autograd.Function):
    """``sqrt(lambda_max(T^T T) + tiny)`` of ``(..., d, d)`` blocks, the eigenvalues alone in the
    forward.

    ``eigvalsh`` under autograd computes every eigenvector (``eigh``, about twice the time), yet
    the gradient needs the top one alone: ``d sigma / d T = (T v) v^T / sigma`` for the unit
    eigenvector ``v`` of ``lambda_max``. The backward finds ``v`` by inverse iteration with the
    shift ``s = lambda (1 + 64 eps)`` (``eps`` the dtype's machine epsilon, above the error of
    ``eigvalsh``), the Gram matrix divided by ``s`` so that no size can overflow: each step
    shrinks the part of ``v`` along another eigenvalue ``lambda_k`` by
    ``(s - lambda) / (s - lambda_k)``, about ``64 eps lambda / (lambda - lambda_k)``, so three
    steps from the column of largest diagonal entry leave ``v`` exact to rounding unless the two
    top eigenvalues agree to about ``(64 eps)^(2/3)`` relative. There the gradient is ill
    conditioned in ``eigh`` as well (a repeated eigenvalue has no unique eigenvector; any unit
    vector of its eigenspace gives a valid subgradient).
    """

    @staticmethod
    def forward(ctx, blocks):
        gram = blocks.transpose(-1, -2) @ blocks
        top = torch.linalg.eigvalsh(gram)[..., -1]
        norm = (top.clamp_min(0.0) + torch.finfo(blocks.dtype).tiny).sqrt()
        ctx.save_for_backward(blocks, gram, top, norm)
        return norm

    @staticmethod
    @once_differentiable  # the inverse iteration is not the eigenvector's derivative
    def backward(ctx, grad):
        blocks, gram, top, norm = ctx.saved_tensors
        d = gram.shape[-1]
        info = torch.finfo(gram.dtype)
        shift = (top.abs() * (1 + 64 * info.eps)).clamp_min(info.tiny)[..., None, None]  # (..., 1, 1)
        eye = torch.eye(d, dtype=gram.dtype, device=gram.device)
        lu, pivots = torch.linalg.lu_factor(gram / shift - eye)
        # Start from the column of the largest diagonal entry (plus that unit vector, so that it
        # is never zero), scaled to unit length.
        first = gram.diagonal(dim1=-2, dim2=-1).argmax(-1, keepdim=True)  # (..., 1)
        v = torch.take_along_dim(gram, first[..., None, :], dim=-1) / shift + eye[first.squeeze(-1)][..., None]
        v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True)  # (..., d, 1)
        for _ in range(3):
            v = torch.linalg.lu_solve(lu, pivots, v)
            v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True)
        # (T v) v^T / sigma as a broadcast product (a batched outer product is slow as bmm).
        return (grad / norm)[..., None, None] * (blocks @ v) * v.transpose(-1, -2)


def _cached_constant(fn):
    """Memoise a constant tensor per argument tuple, made outside inference mode (a tensor made
    inside it could not be saved for a later backward)."""

    @functools.lru_cache(maxsize=64)
    def make(*args):
        with torch.inference_mode(False):
            return fn(*args)

    return functools.wraps(fn)(make)


@_cached_constant
def _signs(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(4, 4)``: columns ``a + d, c - b, a - d, b + c`` of the flattened ``2 x 2`` block
    ``(a, b, c, d)``."""
    signs = [[1.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0], [1.0, 0.0, -1.0, 0.0]]
    return torch.tensor(signs, dtype=dtype, device=device)


def spectral_norm(blocks: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each ``(..., d, d)`` block.

    - ``d = 1``: the absolute value.
    - ``d = 2``: the closed form ``(|(a + d, c - b)| + |(a - d, b + c)|) / 2`` of the block
      ``[[a, b], [c, d]]`` (no cancellation; each length is ``sqrt(x^2 + y^2 + tiny)``, so its
      gradient stays finite where the block is a multiple of the identity or zero). The four
      sums come from one product with a matrix of signs (exact: each is one addition).
    - otherwise ``sqrt(lambda_max(T^T T) + tiny)``: the top eigenvalue of the small Gram matrix
      (values only, :class:`_GramSpectralNorm`); its gradient stays finite for repeated singular
      values (``T = t I``, or ``T = 0`` at initialisation).

    ``tiny`` (the dtype's smallest normal number) keeps the square roots differentiable at zero
    and can only raise the value, by at most ``sqrt(tiny)``.
    """
    d = blocks.shape[-1]
    if d == 1:
        return blocks[..., 0, 0].abs()
    tiny = torch.finfo(blocks.dtype).tiny
    if d == 2:
        sums = blocks.flatten(-2) @ _signs(blocks.dtype, blocks.device)  # (..., 4): a + d, c - b, a - d, b + c
        lengths = (sums.square().unflatten(-1, (2, 2)).sum(-1) + tiny).sqrt()  # (..., 2)
        return 0.5 * lengths.sum(-1)
    return _GramSpectralNorm.apply(blocks)


def _validate(diag, offdiag, eps, delta, mode, graph) -> bool:
    if not isinstance(diag, torch.Tensor) or not isinstance(offdiag, torch.Tensor):
        raise ValueError("diag and offdiag must be torch tensors")
    if not diag.is_floating_point() or not offdiag.is_floating_point():
        raise ValueError(
            f"diag and offdiag must be floating point, got {diag.dtype} and {offdiag.dtype}"
        )
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1) for a strict dominance margin, got {eps}")
    if not delta > 0.0:
        raise ValueError(f"delta must be positive, got {delta}")
    if offdiag.dim() < 4 or offdiag.shape[-3] != offdiag.shape[-4] or (
        offdiag.shape[-1] != offdiag.shape[-2]
    ):
        raise ValueError(
            f"offdiag must have shape (..., M, M, c, c), got {tuple(offdiag.shape)}"
        )
    m, c = offdiag.shape[-4], offdiag.shape[-1]
    d = diag.shape[-1]
    if diag.dim() == offdiag.dim() - 1 and diag.shape[-3:] == (m, d, d) and c <= d:
        full_blocks = True
    elif diag.dim() == offdiag.dim() - 2 and diag.shape[-2] == m and c <= d:
        full_blocks = False
    else:
        raise ValueError(
            f"diag must have shape (..., M, d) (variances) or (..., M, d, d) (SPD blocks) with "
            f"M={m}, d >= c={c} (the coupled coordinates of offdiag) and as many batch dimensions as "
            f"offdiag {tuple(offdiag.shape)}; got {tuple(diag.shape)}"
        )
    if graph is not None:
        graph = torch.as_tensor(graph)
        if graph.shape != (m, m):
            raise ValueError(f"graph must be a boolean ({m}, {m}) matrix, got {tuple(graph.shape)}")
        if not torch.equal(graph.bool(), graph.bool().T):
            raise ValueError("graph must be symmetric: an edge i-j is an edge j-i")
    check_finite(diag, "diag")
    check_finite(offdiag, "offdiag")
    if full_blocks:
        if not torch.allclose(diag, diag.transpose(-1, -2), rtol=1e-5, atol=1e-6):
            raise ValueError("diagonal blocks must be symmetric")
    lam = _lambda_min(diag.detach(), full_blocks)
    if not bool((lam > 0).all()):
        what = "SPD (smallest eigenvalue > 0)" if full_blocks else "positive variances"
        raise ValueError(
            f"diagonal blocks must be {what}; smallest value found {lam.min().item():.3g}"
        )
    return full_blocks


@full_precision
def assemble_block_covariance(
    diag: torch.Tensor,
    offdiag: torch.Tensor,
    eps: float = 0.9,
    delta: float = 1e-6,
    mode: str = "blockwise",
    graph: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Assemble an SPD ``(..., M*d, M*d)`` matrix from diagonal and off-diagonal blocks.

    Args:
        diag: ``(..., M, d)`` positive variances (diagonal blocks) or ``(..., M, d, d)`` SPD
            blocks. It has as many batch dimensions as ``offdiag`` (sizes broadcast).
        offdiag: ``(..., M, M, c, c)`` with ``c <= d``; the blocks ``i < j`` are used,
            ``T_ji = T_ij^T``. With ``c < d`` they couple only the leading ``c`` coordinates of
            each block (the module docstring: coupled coordinates).
        eps: dominance margin in ``(0, 1)``; smaller is better conditioned, larger allows
            stronger coupling.
        delta: positive constant added to each row sum, so a row with no coupling gets
            ``a_i = 1``.
        mode: ``"blockwise"`` (spectral norms of the ``d x d`` blocks) or ``"elementwise"``
            (absolute values per scalar entry, one scaling per scalar row).
        graph: optional boolean symmetric ``(M, M)`` adjacency; off-diagonal blocks of non-edges
            are zero, so they are absent from the matrix and from the row sums.
        validate: check shapes, finiteness and positivity (raise ``ValueError``). Turn off only
            inside trusted hot loops.

    Returns:
        ``(..., M*d, M*d)`` symmetric positive definite matrix whose diagonal blocks equal
        ``diag`` exactly.
    """
    return assemble_packed(diag, offdiag, eps, delta, mode, graph, validate).dense()


class PackedBlocks(NamedTuple):
    """An assembled ``(..., n, n)`` matrix (``n = M d``) as its distinct entries.

    ``values (..., K)``: the scaled blocks ``S_ij`` for ``i < j`` (``(P, c, c)`` flattened,
    ``P = M (M - 1) / 2`` in the order of ``torch.triu_indices(M, M, 1)``), then the diagonal
    blocks as given (``(M, d)`` variances or ``(M, d, d)`` blocks), then one zero; ``index
    (n * n,)``: where each entry of the matrix is read (a block below the diagonal reads the
    transpose of its mirror). One ``index_select`` forms the matrix and its backward is one
    ``index_add``, where building it blockwise moves the ``(M, M, d, d)`` blocks through several
    full-size passes (mirror, scale, place the diagonal, reorder).
    """

    values: torch.Tensor
    index: torch.Tensor
    size: int

    def dense(self) -> torch.Tensor:
        """The matrix ``(..., n, n)``."""
        v = self.values
        return v.index_select(-1, self.index).reshape(*v.shape[:-1], self.size, self.size)

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """``w (..., K)`` with ``<values, w> = <dense(), matrix>`` (the sum of the elementwise
        product) for any ``matrix (..., n, n)``: each entry of ``matrix`` added to the value it
        reads."""
        flat = matrix.reshape(*matrix.shape[:-2], -1)
        return flat.new_zeros(*flat.shape[:-1], self.values.shape[-1]).index_add(-1, self.index, flat)


@_cached_constant
def _placement(m: int, d: int, c: int, full_blocks: bool, device: torch.device):
    """``(rows, cols, index)``: the blocks ``i < j`` (``torch.triu_indices(m, m, 1)``) and the
    ``index`` of :class:`PackedBlocks` for ``M = m`` blocks of size ``d`` coupled on their leading
    ``c`` coordinates, diagonal blocks as matrices (``full_blocks``) or variances; on ``device``."""
    n, pairs = m * d, num_offdiag_pairs(m)
    rows, cols = torch.triu_indices(m, m, 1)
    pair = torch.zeros(m, m, dtype=torch.long)
    pair[rows, cols] = pair[cols, rows] = torch.arange(pairs)
    comp, coord = torch.arange(n) // d, torch.arange(n) % d
    i, p, j, q = comp[:, None], coord[:, None], comp[None, :], coord[None, :]  # row (i, p), column (j, q)
    upper = i < j
    first, second = torch.where(upper, p, q), torch.where(upper, q, p)  # the entry of S_ij (i < j) read
    offdiag = pair[i, j] * c * c + first * c + second
    start = pairs * c * c
    diagonal = start + (i * d * d + p * d + q if full_blocks else i * d + p)
    zero = start + m * d * (d if full_blocks else 1)
    index = torch.where((i != j) & (p < c) & (q < c), offdiag, zero)
    index = torch.where((i == j) & ((p == q) | full_blocks), diagonal, index)
    return rows.to(device), cols.to(device), index.flatten().to(device)


@_cached_constant
def _incidence(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(P, M)``: 1 where component ``i`` belongs to the ``p``-th pair ``i < j``, else 0."""
    rows, cols = torch.triu_indices(m, m, 1)
    eye = torch.eye(m, dtype=dtype)
    return (eye[rows] + eye[cols]).to(device)


@full_precision
def assemble_packed(
    diag: torch.Tensor,
    offdiag: torch.Tensor,
    eps: float = 0.9,
    delta: float = 1e-6,
    mode: str = "blockwise",
    graph: torch.Tensor | None = None,
    validate: bool = True,
) -> PackedBlocks:
    """:func:`assemble_block_covariance` (same arguments) as :class:`PackedBlocks`: the same
    matrix, entry for entry, with only the upper off-diagonal blocks computed."""
    full_blocks = (
        _validate(diag, offdiag, eps, delta, mode, graph)
        if validate
        else diag.dim() == offdiag.dim() - 1
    )
    m, c, d = offdiag.shape[-4], offdiag.shape[-1], diag.shape[-1]
    rows, cols, index = _placement(m, d, c, full_blocks, offdiag.device)
    upper = offdiag[..., rows, cols, :, :]  # (..., P, c, c): T_ij for i < j
    if graph is not None:
        edge = torch.as_tensor(graph, device=offdiag.device).bool()[rows, cols]
        # where, not a product: an unused block holding inf must not become NaN (inf * 0).
        upper = torch.where(edge[:, None, None], upper, torch.zeros((), dtype=upper.dtype, device=upper.device))
    # The scaling needs lambda_min of what the couplings touch: with diagonal variances only the
    # coupled coordinates (the others form a separate diagonal part), else the whole block.
    lam = _lambda_min(diag if full_blocks else diag[..., :c], full_blocks)  # (..., M)
    if mode == "blockwise":
        norms = spectral_norm(upper)  # (..., P): each distinct block normed once
        # Row sums as one product with the (P, M) incidence of pairs and components (each sum
        # adds M - 1 norms).
        sums = norms @ _incidence(m, norms.dtype, norms.device)  # (..., M)
        root = block_scaling(lam, sums + delta, eps).sqrt()  # (..., M)
        scaled = (root[..., rows] * root[..., cols])[..., None, None] * upper
    else:
        # One scaling per scalar row r = (i, p): s_r sums |T_rc| over the other components.
        mags = upper.abs()
        sums = mags.new_zeros(*mags.shape[:-3], m, c)
        sums = sums.index_add(-2, rows, mags.sum(-1)).index_add(-2, cols, mags.sum(-2))  # (..., M, c)
        root = block_scaling(lam[..., None], sums + delta, eps).sqrt()  # (..., M, c)
        scaled = root[..., rows, :, None] * root[..., cols, None, :] * upper
    dtype = torch.result_type(scaled, diag)
    batch = torch.broadcast_shapes(scaled.shape[:-3], diag.shape[: diag.dim() - (3 if full_blocks else 2)])
    parts = [scaled.to(dtype).expand(*batch, *scaled.shape[-3:]).flatten(-3),
             diag.to(dtype).expand(*batch, *diag.shape[diag.dim() - (3 if full_blocks else 2):])
             .flatten(-3 if full_blocks else -2),
             diag.new_zeros(()).to(dtype).expand(*batch, 1)]
    return PackedBlocks(torch.cat(parts, -1), index, m * d)
