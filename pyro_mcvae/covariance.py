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
"""

from __future__ import annotations

import torch

from ._precision import full_precision

from .validation import check_finite

__all__ = [
    "assemble_block_covariance",
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


def _diag_blocks(diag: torch.Tensor, full_blocks: bool) -> torch.Tensor:
    """Diagonal blocks as matrices ``(..., M, d, d)``."""
    return diag if full_blocks else torch.diag_embed(diag)


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


def spectral_norm(blocks: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each ``(..., d, d)`` block, never below the true value.

    ``sqrt(lambda_max(T^T T) + tiny)``: an eigenvalue of the small Gram matrix is about three
    times cheaper than an SVD for ``d = 2``, its gradient stays finite for repeated singular
    values (``T = t I``, or ``T = 0`` at initialisation), and ``tiny`` (the dtype's smallest
    normal number) keeps the square root differentiable at zero and can only overestimate.
    """
    if blocks.shape[-1] == 1:
        return blocks[..., 0, 0].abs()
    gram = blocks.transpose(-1, -2) @ blocks
    tiny = torch.finfo(blocks.dtype).tiny
    return (torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0.0) + tiny).sqrt()


def _blockwise_row_sums(t: torch.Tensor) -> torch.Tensor:
    """``sum_{j != i} ||T_ij||_2`` for the symmetric block matrix ``t (..., M, M, d, d)``.

    Only the ``M (M - 1) / 2`` blocks above the diagonal are distinct, so only they are normed.
    """
    m = t.shape[-3]
    rows, cols = torch.triu_indices(m, m, 1, device=t.device)
    norms = spectral_norm(t[..., rows, cols, :, :])  # (..., P)
    sums = norms.new_zeros(*norms.shape[:-1], m)
    return sums.index_add(-1, rows, norms).index_add(-1, cols, norms)


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
    full_blocks = (
        _validate(diag, offdiag, eps, delta, mode, graph)
        if validate
        else diag.dim() == offdiag.dim() - 1
    )
    if graph is not None:
        graph = torch.as_tensor(graph)
    t = mirror_upper_blocks(offdiag, graph)
    c, d = t.shape[-1], diag.shape[-1]
    # The scaling needs lambda_min of what the couplings touch: with diagonal variances only the
    # coupled coordinates (the others form a separate diagonal part), else the whole block.
    lam = _lambda_min(diag if full_blocks else diag[..., :c], full_blocks)  # (..., M)
    if mode == "blockwise":
        a = block_scaling(lam, _blockwise_row_sums(t) + delta, eps)  # (..., M)
        root = a.sqrt()
        scale = (root[..., :, None] * root[..., None, :])[..., None, None]  # (..., M, M, 1, 1)
    else:
        # One scaling per scalar row r = (i, p): s_r sums |T_rc| over the other components.
        row_sums = t.abs().sum(dim=(-3, -1))  # (..., M, c)
        a = block_scaling(lam[..., None], row_sums + delta, eps)  # (..., M, c)
        root = a.sqrt()
        scale = root[..., :, None, :, None] * root[..., None, :, None, :]  # (..., M, M, c, c)
    blocks = scale * t
    if c < d:  # the uncoupled coordinates: zero rows and columns outside the diagonal blocks
        blocks = torch.nn.functional.pad(blocks, (0, d - c, 0, d - c))
    eye = torch.eye(t.shape[-3], dtype=torch.bool, device=t.device)[..., None, None]
    diag_blocks = _diag_blocks(diag, full_blocks)
    # Place S_ii on the block diagonal exactly (the scaled T is zero there).
    blocks = torch.where(eye, diag_blocks.unsqueeze(-3), blocks)
    return blocks_to_matrix(blocks)
