"""MLP encoders and decoders for vector-valued components.

When every component has the same size, the ``M`` per-component networks run as one batched
computation (weights ``(M, in, out)``), so there is no Python loop over components in the hot path.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..covariance import num_offdiag_pairs

__all__ = [
    "MLP",
    "StackedLinear",
    "StackedMLP",
    "ComponentNets",
    "VectorEncoder",
    "VectorDecoder",
    "GlobalOffdiagNet",
]


def MLP(in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.SiLU) -> nn.Sequential:
    """Plain MLP ``in_dim -> hidden... -> out_dim``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), activation()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class StackedLinear(nn.Module):
    """``M`` independent linear maps applied at once: ``(..., M, in) -> (..., M, out)``."""

    def __init__(self, num_components: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # the initialisation nn.Linear uses
        self.weight = nn.Parameter(torch.empty(num_components, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_components, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if components is not None:
            w, b = w[list(components)], b[list(components)]
        return torch.einsum("...mi,mio->...mo", x, w) + b


class StackedMLP(nn.Module):
    """``M`` MLPs of the same shape, evaluated together on ``(..., M, in)``."""

    def __init__(self, num_components: int, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            StackedLinear(num_components, a, b) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, components)
            if i < len(self.layers) - 1:
                x = F.silu(x)
        return x


class ComponentNets(nn.Module):
    """One network per component: stacked when the sizes agree, a ``ModuleList`` otherwise.

    ``forward(inputs, components)`` takes a list of ``(..., in_k)`` tensors, one per requested
    component (all components when ``components`` is None), and returns a list of
    ``(..., out_k)`` tensors.
    """

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], out_dims: Sequence[int]):
        super().__init__()
        self.num_components = len(in_dims)
        self.stacked = len(set(in_dims)) == 1 and len(set(out_dims)) == 1
        if self.stacked:
            self.net = StackedMLP(len(in_dims), in_dims[0], hidden, out_dims[0])
        else:
            self.nets = nn.ModuleList(MLP(i, hidden, o) for i, o in zip(in_dims, out_dims))

    def forward(self, inputs: Sequence[torch.Tensor], components: Sequence[int] | None = None):
        comps = list(range(self.num_components)) if components is None else list(components)
        if self.stacked:
            full = components is None or comps == list(range(self.num_components))
            out = self.net(torch.stack(list(inputs), dim=-2), None if full else comps)
            return list(out.unbind(-2))
        return [self.nets[k](x) for k, x in zip(comps, inputs)]


class VectorEncoder(nn.Module):
    """Per-component encoders ``x_k -> (mu_k, var_k)``.

    Returns ``loc (..., K, d)`` and positive diagonal variances ``(..., K, d)`` for the ``K``
    requested components: each marginal depends on its own component's data only.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64), min_var=1e-4):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var
        self.nets = ComponentNets(component_dims, hidden, [2 * latent_dim] * len(component_dims))

    def forward(self, xs: Sequence[torch.Tensor], components: Sequence[int] | None = None):
        out = torch.stack(self.nets(xs, components), dim=-2)
        loc, raw = out.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_var


class VectorDecoder(nn.Module):
    """Per-component decoders ``z_k -> likelihood parameters of x_k``.

    ``z``: ``(..., M, d)``; returns a list of ``M`` tensors ``(..., D_k)``.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64)):
        super().__init__()
        self.nets = ComponentNets([latent_dim] * len(component_dims), hidden, list(component_dims))

    def forward(self, z: torch.Tensor, components: Sequence[int] | None = None):
        return self.nets(list(z.unbind(-2)), components)


class GlobalOffdiagNet(nn.Module):
    """The paper's global encoder: all components' data to the off-diagonal blocks.

    Takes the list of ``M`` inputs ``(batch, D_k)`` and returns ``(batch, M, M, d, d)`` whose
    blocks ``i < j`` are filled (the rest zero; the assembly mirrors them). The last layer starts
    at zero, so training starts from independent components.
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64)):
        super().__init__()
        m, d = len(component_dims), latent_dim
        self.num_components, self.latent_dim = m, d
        self.net = MLP(sum(component_dims), hidden, num_offdiag_pairs(m) * d * d)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        rows, cols = torch.triu_indices(m, m, 1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        m, d = self.num_components, self.latent_dim
        flat = self.net(torch.cat(list(xs), dim=-1))
        batch = flat.shape[:-1]
        out = flat.new_zeros(*batch, m, m, d, d)
        out[..., self._rows, self._cols, :, :] = flat.reshape(*batch, -1, d, d)
        return out
