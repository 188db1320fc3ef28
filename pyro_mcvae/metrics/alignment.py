"""How much of one component's latent block is linearly carried by another's: the measurements
behind the PolyMNIST diagnosis (``docs/results/polymnist.md``).

- :func:`canonical_correlations`: canonical correlations between two blocks of a covariance,
  the singular values of ``L_i^-1 S_ij L_j^-T`` (``S_ii = L_i L_i^T``), by Cholesky solves.
- :func:`sample_canonical_correlations`: the same for two sets of paired samples (e.g. the
  posterior means of blocks ``i`` and ``j`` over a data set: the aggregate posterior's link).
- :func:`linear_probe`: a multinomial logistic regression from features to labels (L-BFGS,
  standardised features), and its accuracy on held-out features; ``predict`` on other
  features, e.g. the prior's conditional means, asks whether the label passes through the link.

Pure tensor functions (float64 inside); no model, file or device knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LinearProbe", "canonical_correlations", "linear_probe", "sample_canonical_correlations"]


def _check_square(cov: torch.Tensor) -> torch.Tensor:
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"covariance must be (..., D, D), got shape {tuple(cov.shape)}")
    return cov.double()


def canonical_correlations(cov: torch.Tensor, block_i, block_j) -> torch.Tensor:
    """Canonical correlations between two groups of coordinates of a Gaussian, largest first.

    Args:
        cov: covariance ``(..., D, D)``, SPD.
        block_i, block_j: index sequences (or slices) of the two groups, disjoint.

    Returns:
        ``(..., min(|i|, |j|))`` values in [0, 1]: the singular values of
        ``L_i^-1 S_ij L_j^-T`` with ``S_ii = L_i L_i^T`` (Cholesky), i.e. the correlations of
        the best-aligned pairs of linear combinations.
    """
    cov = _check_square(cov)
    s_ii = cov[..., block_i, :][..., :, block_i]
    s_jj = cov[..., block_j, :][..., :, block_j]
    s_ij = cov[..., block_i, :][..., :, block_j]
    l_i = torch.linalg.cholesky(s_ii)
    l_j = torch.linalg.cholesky(s_jj)
    white = torch.linalg.solve_triangular(l_i, s_ij, upper=False)  # L_i^-1 S_ij
    white = torch.linalg.solve_triangular(l_j, white.transpose(-1, -2), upper=False).transpose(-1, -2)
    return torch.linalg.svdvals(white).clamp(0.0, 1.0)


def sample_canonical_correlations(a: torch.Tensor, b: torch.Tensor, ridge: float = 1e-9) -> torch.Tensor:
    """Canonical correlations of paired samples ``a (N, p)`` and ``b (N, q)``, largest first; a
    relative ``ridge`` on the diagonal keeps constant coordinates from breaking the Cholesky."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need paired samples (N, p) and (N, q), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < a.shape[1] + b.shape[1] + 2:
        raise ValueError(f"need more samples ({a.shape[0]}) than coordinates ({a.shape[1] + b.shape[1]})")
    x = torch.cat([a, b], 1).double()
    x = x - x.mean(0)
    cov = x.T @ x / (x.shape[0] - 1)
    cov = cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    p = a.shape[1]
    return canonical_correlations(cov, slice(0, p), slice(p, None))


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression on standardised features."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (p, C)
    bias: torch.Tensor  # (C,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted labels ``(N,)`` int64."""
        return self.logits(features).argmax(-1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels.to(torch.long)).double().mean())


def linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                 l2: float = 1e-3, max_iter: int = 200) -> LinearProbe:
    """Fit a multinomial logistic regression ``features (N, p) -> labels (N,)`` by L-BFGS.

    The features are standardised with their own mean and spread; ``l2`` penalises the squared
    weights (per datum). Deterministic for given inputs.
    """
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"need features (N, p) and labels (N,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    x = features.detach().double().cpu()
    y = labels.detach().to(torch.long).cpu()
    c = int(num_classes if num_classes is not None else int(y.max()) + 1)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], c, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.square().sum()
            loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach())
