"""MLP encoders and decoders for vector-valued components.

When every component has the same size, the ``M`` per-component networks run as one batched
computation (weights ``(M, in, out)``), so there is no Python loop over components in the hot path.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

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
    "MLPNets",
    "as_nets",
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
        return self.major(x.movedim(-2, 0), components).movedim(0, -2)

    def major(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        """The same map with the components first: ``(M, ..., in) -> (M, ..., out)``, one batched
        product with the bias added in it (``baddbmm``), no transposed copies."""
        w, b = self.weight, self.bias
        if components is not None:
            w, b = w[list(components)], b[list(components)]
        out = torch.baddbmm(b.unsqueeze(1), x.reshape(x.shape[0], -1, x.shape[-1]), w)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class StackedMLP(nn.Module):
    """``M`` MLPs of the same shape, evaluated together on ``(..., M, in)``."""

    def __init__(self, num_components: int, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            StackedLinear(num_components, a, b) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        return self.major(x.movedim(-2, 0), components).movedim(0, -2)

    def major(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        """The MLPs with the components first, ``(M, ..., in) -> (M, ..., out)``."""
        for i, layer in enumerate(self.layers):
            x = layer.major(x, components)
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
            # Components first throughout: the stacked inputs are already (K, ..., in).
            return list(self.net.major(torch.stack(list(inputs)), None if full else comps).unbind(0))
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
        self.nets = as_nets(hidden).component_nets(component_dims, [2 * latent_dim] * len(component_dims),
                                                   "encoder")

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
        self.nets = as_nets(hidden).component_nets([latent_dim] * len(component_dims), list(component_dims),
                                                   "decoder")

    def forward(self, z: torch.Tensor, components: Sequence[int] | None = None):
        return self.nets(list(z.unbind(-2)), components)


class GlobalOffdiagNet(nn.Module):
    """The paper's global encoder: all components' data to the off-diagonal blocks.

    Takes the list of ``M`` inputs ``(..., D_k)`` and returns ``(..., M, M, d, d)`` whose
    blocks ``i < j`` are filled (the rest zero; the assembly mirrors them). The last layer starts
    at zero, so training starts from independent components.

    Masked off-diagonal parameters (the GMRF MCVAE paper's PolyMNIST option of masking 75% of
    them): with ``keep_fraction < 1`` a fixed random subset of ``round(keep_fraction * count)``
    of the ``count = M (M - 1) / 2 * d * d`` off-diagonal entries is kept, drawn from
    ``torch.Generator().manual_seed(mask_seed)``. The masked entries are exactly zero for every
    input: the last layer has one output per *kept* entry only, so the weights of masked entries
    do not exist (the parameter count drops by ``count - kept`` times the last layer's input
    width plus one) and no optimiser can move them. The mask is the persistent boolean buffer
    ``offdiag_mask`` ``(M (M - 1) / 2, d, d)`` (pair ``p`` is the ``p``-th block of
    ``torch.triu_indices(M, M, 1)``), so it is saved in checkpoints; loading a checkpoint also
    restores its mask. With
    ``keep_fraction = 1`` nothing is masked and ``offdiag_mask`` is None.
    """

    def __init__(
        self,
        component_dims: Sequence[int],
        latent_dim: int,
        hidden=(64, 64),
        keep_fraction: float = 1.0,
        mask_seed: int = 0,
    ):
        super().__init__()
        m, d = len(component_dims), latent_dim
        self.num_components, self.latent_dim = m, d
        if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) or not (
            0.0 < keep_fraction <= 1.0
        ):
            raise ValueError(f"keep_fraction must be a number in (0, 1], got {keep_fraction!r}")
        count = num_offdiag_pairs(m) * d * d
        kept = round(keep_fraction * count)
        if count > 0 and kept == 0:
            raise ValueError(
                f"keep_fraction={keep_fraction} keeps round({keep_fraction} * {count}) = 0 of the "
                f"{count} off-diagonal entries (M={m}, d={d}); use a larger keep_fraction"
            )
        self.keep_fraction, self.mask_seed = float(keep_fraction), int(mask_seed)
        self.net = MLP(sum(component_dims), hidden, kept)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        if kept < count:
            generator = torch.Generator().manual_seed(self.mask_seed)
            mask = torch.zeros(count, dtype=torch.bool)
            mask[torch.randperm(count, generator=generator)[:kept]] = True
            self.register_buffer("offdiag_mask", mask.reshape(-1, d, d))
        else:
            self.register_buffer("offdiag_mask", None)
        self.register_buffer("_place_index", self._placement(), persistent=False)
        # A loaded checkpoint brings its own mask: recompute where the outputs go.
        self.register_load_state_dict_post_hook(GlobalOffdiagNet._after_load)

    def _placement(self) -> torch.Tensor:
        """Flat positions in ``(M, M, d, d)`` of the last layer's outputs (kept entries, in order)."""
        m, d = self.num_components, self.latent_dim
        rows, cols = torch.triu_indices(m, m, 1)
        inner = torch.arange(d * d)
        place = ((rows * m + cols)[:, None] * (d * d) + inner).flatten()  # (P * d * d,)
        if self.offdiag_mask is not None:
            place = place[self.offdiag_mask.flatten().cpu()]
        return place.to(self.net[-1].weight.device)

    @staticmethod
    def _after_load(module: "GlobalOffdiagNet", incompatible_keys) -> None:
        if module.offdiag_mask is not None:
            kept = int(module.offdiag_mask.sum())
            if kept != module.net[-1].out_features:
                raise ValueError(
                    f"the loaded offdiag_mask keeps {kept} entries but the last layer has "
                    f"{module.net[-1].out_features} outputs"
                )
        module._place_index = module._placement()

    def entry_mask(self) -> torch.Tensor:
        """Boolean ``(M, M, d, d)``: True where the output may be nonzero (kept entries, i < j)."""
        m, d = self.num_components, self.latent_dim
        out = torch.zeros(m * m * d * d, dtype=torch.bool, device=self._place_index.device)
        out[self._place_index] = True
        return out.reshape(m, m, d, d)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        m, d = self.num_components, self.latent_dim
        flat = self.net(torch.cat(list(xs), dim=-1))  # (..., kept)
        batch = flat.shape[:-1]
        out = flat.new_zeros(*batch, m * m * d * d).index_copy(-1, self._place_index, flat)
        return out.reshape(*batch, m, m, d, d)


class MLPNets:
    """Factory of the vector networks: per-component MLPs and the global off-diagonal MLP.

    ``hidden``: hidden sizes of every per-component network; ``global_hidden``: those of the
    global off-diagonal network (None: the same as ``hidden``). The image counterpart is
    :class:`pyro_mcvae.nets.resnet.ResNetNets`, with the same two methods.
    """

    ROLES = ("encoder", "decoder")

    def __init__(self, hidden: Sequence[int] = (64, 64), global_hidden: Sequence[int] | None = None):
        self.hidden = tuple(hidden)
        self.global_hidden = self.hidden if global_hidden is None else tuple(global_hidden)

    def __repr__(self) -> str:
        return f"MLPNets(hidden={self.hidden}, global_hidden={self.global_hidden})"

    def component_nets(self, in_dims: Sequence[int], out_dims: Sequence[int], role: str) -> ComponentNets:
        """``M`` networks ``(..., in_k) -> (..., out_k)``; ``role`` is ``"encoder"`` or ``"decoder"``
        (the MLPs are the same for both)."""
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}, got {role!r}")
        if len(in_dims) != len(out_dims):
            raise ValueError(f"in_dims and out_dims must have one entry per component, got "
                             f"{len(in_dims)} and {len(out_dims)}")
        return ComponentNets(list(in_dims), self.hidden, list(out_dims))

    def offdiag_net(self, component_dims: Sequence[int], latent_dim: int, keep_fraction: float = 1.0,
                    mask_seed: int = 0) -> GlobalOffdiagNet:
        """The global off-diagonal network over all components' data (see :class:`GlobalOffdiagNet`)."""
        return GlobalOffdiagNet(list(component_dims), latent_dim, self.global_hidden, keep_fraction,
                                mask_seed)


@runtime_checkable
class NetworkFactory(Protocol):
    """What the models ask of a network factory (:class:`MLPNets`,
    :class:`~pyro_mcvae.nets.resnet.ResNetNets`, or your own)."""

    def component_nets(self, in_dims: Sequence[int], out_dims: Sequence[int], role: str) -> nn.Module:
        """``M`` networks ``(..., in_k) -> (..., out_k)`` called as ``net(inputs, components)``."""

    def offdiag_net(self, component_dims: Sequence[int], latent_dim: int, keep_fraction: float = 1.0,
                    mask_seed: int = 0) -> nn.Module:
        """The global network giving the off-diagonal blocks ``(batch, M, M, d, d)``."""


def as_nets(nets_or_hidden) -> NetworkFactory:
    """A :class:`NetworkFactory` from itself or from MLP hidden sizes. Lets every ``hidden=``
    argument take either."""
    if isinstance(nets_or_hidden, NetworkFactory):
        return nets_or_hidden
    try:
        hidden = tuple(int(h) for h in nets_or_hidden)
    except TypeError:
        raise ValueError(f"expected MLP hidden sizes or a network factory (MLPNets, ResNetNets), "
                         f"got {nets_or_hidden!r}") from None
    return MLPNets(hidden)
