"""ResNet encoders and decoders for image components (PolyMNIST: ``3 x 28 x 28`` RGB).

Where the architecture comes from
---------------------------------
The GMRF MCVAE paper (Oubari et al., arXiv 2507.12165) gives its ResNet block and PolyMNIST
encoder/decoder tables in an appendix. The stored copies searched while writing this module
(arXiv HTML v1 and v2, the PMLR PDF, and the predecessor MRF MMVAE paper, arXiv 2408.09576) came
back only as their opening pages, so those tables were **not** found, and neither was the paper's
code. The networks below therefore follow the PolyMNIST ResNets of MMVAE+ (Palumbo et al., ICLR
2023; public repository ``srl-ethz/mmvaeplus``, ``resnet_polyMNIST.py``), the common ResNet
baseline on PolyMNIST (this package has MMVAE+ as a guide). Numbers taken from there:

- residual block: two 3x3 convolutions (stride 1, padding 1), LeakyReLU(0.2) *before* each
  (pre-activation), hidden width ``min(c_in, c_out)``, a bias-free 1x1 convolution as shortcut
  when ``c_in != c_out`` (identity otherwise), residual branch scaled by 0.1;
- encoder (each of MMVAE+'s two identical branches, shared and private latents): 3x3 conv
  ``3 -> 64``; block ``64 -> 64``; then twice ``AvgPool(3, stride 2, pad 1)``
  and a block: ``64 -> 128`` (14x14), ``128 -> 256`` (7x7); flatten ``256 * 7 * 7 = 12544`` and
  linear maps to the location and the raw scale;
- decoder: linear ``latent -> 256 * 7 * 7``; block ``256 -> 128``, upsample x2; block
  ``128 -> 64``, upsample x2; block ``64 -> 64``; LeakyReLU; 3x3 conv ``64 -> 3``.

What is chosen here
-------------------
- Defaults reproduce those widths: ``width=64`` and ``levels=2`` give channels
  ``(64, 128, 256)`` at resolutions ``28, 14, 7``. ``width`` (base channels, doubled at each
  level) and ``levels`` (number of halvings) are configurable; the decoder needs the image sides
  divisible by ``2 ** levels``.
- The encoder applies one more LeakyReLU before its final linear map (MMVAE+ flattens the block
  output directly); its final linear map has ``out_dim`` outputs (the guides ask for ``2 d``:
  location and raw variance) rather than two heads. The decoder has no final activation: the
  likelihood decides (logits or means).
- ``ImageOffdiagNet`` (the global network of the off-diagonal blocks, not in MMVAE+): late
  fusion. A narrow per-component ResNet (default ``width=16``) turns each image into
  ``feature_dim=64`` features; the ``M`` feature vectors are concatenated and a
  :class:`~pyro_mcvae.nets.mlp.GlobalOffdiagNet` (MLP, hidden ``(128, 128)``, last layer zero,
  optional masking) maps them to the blocks ``i < j``. Late rather than early fusion (stacking the
  ``3 M`` channels at the input) because PolyMNIST components share the digit, not pixel
  positions, so there is nothing for a first convolution to align across components.

Vectorisation over components
-----------------------------
All ``M`` networks of a role run as one network: parameters are stacked on a leading component
axis (convolutions ``(M, c_out, c_in, k, k)``, linear maps ``(M, in, out)`` as in
:class:`~pyro_mcvae.nets.mlp.StackedLinear`), activations carry the ``K`` requested components
side by side on the channel axis ``(N, K * C, H, W)``, and each convolution is one grouped
convolution (``groups=K``); pooling, upsampling and activations act per channel, so they need no
change. A subset of components selects the matching slices of the parameters. On CPU the
convolutions run in channels-last layout, in which oneDNN's grouped convolutions were several
times faster than in the default layout (``benchmarks/image_nets.py --layouts``).
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .mlp import GlobalOffdiagNet, StackedLinear

__all__ = [
    "StackedConv2d",
    "StackedResBlock",
    "StackedImageEncoder",
    "StackedImageDecoder",
    "ImageComponentNets",
    "ImageOffdiagNet",
    "ResNetNets",
]

POLYMNIST_SHAPE = (3, 28, 28)
LEAKY_SLOPE = 0.2  # MMVAE+'s LeakyReLU slope
RESIDUAL_SCALE = 0.1  # MMVAE+'s scaling of the residual branch
_ROLES = ("encoder", "decoder")


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


# Convolutions on CPU run on channels-last tensors: oneDNN's grouped convolutions were faster
# so (``benchmarks/image_nets.py --layouts`` times both); GPU tensors keep their layout.
CHANNELS_LAST_ON_CPU = True


def _conv_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the convolutions run in (the values are unchanged)."""
    if CHANNELS_LAST_ON_CPU and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_image_shape(image_shape: Sequence[int], levels: int) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(
            f"image_shape must be three positive ints (channels, height, width), got {image_shape!r}"
        )
    shape = tuple(int(s) for s in shape)
    if not _is_int(levels) or levels < 0:
        raise ValueError(f"levels must be a non-negative int, got {levels!r}")
    c, h, w = shape
    if h % 2**levels or w % 2**levels:
        raise ValueError(
            f"image sides must be divisible by 2 ** levels = {2**levels} (the decoder doubles the "
            f"resolution {levels} times), got image_shape {shape}"
        )
    return shape


def _channels(width: int, levels: int) -> list[int]:
    if not _is_int(width) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return [int(width) * 2**i for i in range(int(levels) + 1)]


def _component_list(components, num_components: int) -> list[int]:
    comps = list(range(num_components)) if components is None else [int(k) for k in components]
    bad = [k for k in comps if not 0 <= k < num_components]
    if bad:
        raise ValueError(f"components must lie in [0, {num_components}), got {comps}")
    return comps


def _select_components(module: nn.Module, components: Sequence[int]) -> nn.Module:
    """Copy of a stacked module keeping only ``components`` (every parameter is stacked on dim 0)."""
    idx = torch.as_tensor(list(components), dtype=torch.long)
    new = copy.deepcopy(module)
    for sub in new.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = nn.Parameter(p.detach()[idx.to(p.device)].clone(),
                                                     requires_grad=p.requires_grad)
        if hasattr(sub, "num_components"):
            sub.num_components = len(idx)
    return new


class StackedConv2d(nn.Module):
    """``M`` independent 2-d convolutions run as one grouped convolution.

    ``forward(x, components)``: ``x`` is ``(N, K * c_in, H, W)``, the ``K`` requested components'
    channels side by side (all ``M`` in order when ``components`` is None); returns
    ``(N, K * c_out, H', W')``. Weights ``(M, c_out, c_in, k, k)`` start as ``nn.Conv2d``'s do.
    """

    def __init__(self, num_components: int, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.num_components = num_components
        self.padding = padding
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)  # nn.Conv2d's default
        self.weight = nn.Parameter(torch.empty(num_components, out_channels, in_channels, kernel_size,
                                               kernel_size).uniform_(-bound, bound))
        self.bias = (nn.Parameter(torch.empty(num_components, out_channels).uniform_(-bound, bound))
                     if bias else None)

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if components is not None:
            w = w[list(components)]
            b = None if b is None else b[list(components)]
        k = w.shape[0]
        return F.conv2d(x, w.flatten(0, 1), None if b is None else b.flatten(), padding=self.padding,
                         groups=k)


class StackedResBlock(nn.Module):
    """``M`` pre-activation residual blocks on ``(N, K * c_in, H, W)`` -> ``(N, K * c_out, H, W)``:
    ``shortcut(x) + 0.1 * conv_1(act(conv_0(act(x))))`` (3x3 convolutions, hidden width
    ``min(c_in, c_out)``; the shortcut is a bias-free 1x1 convolution when ``c_in != c_out``)."""

    def __init__(self, num_components: int, in_channels: int, out_channels: int):
        super().__init__()
        hidden = min(in_channels, out_channels)
        self.conv_0 = StackedConv2d(num_components, in_channels, hidden, 3, padding=1)
        self.conv_1 = StackedConv2d(num_components, hidden, out_channels, 3, padding=1)
        self.shortcut = (StackedConv2d(num_components, in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x, components)
        h = self.conv_0(_act(x), components)
        h = self.conv_1(_act(h), components)
        return skip + RESIDUAL_SCALE * h


class StackedImageEncoder(nn.Module):
    """``M`` ResNet image encoders evaluated together: ``(N, K, C, H, W) -> (N, K, out_dim)``.

    3x3 conv ``C -> width``, a block at full resolution, then ``levels`` times
    ``AvgPool(3, 2, 1)`` and a block doubling the channels; LeakyReLU, flatten, linear map.
    """

    def __init__(self, num_components: int, image_shape: Sequence[int], out_dim: int,
                 width: int = 64, levels: int = 2):
        super().__init__()
        self.num_components = num_components
        self.image_shape = c, h, w = tuple(image_shape)
        ch = _channels(width, levels)
        self.stem = StackedConv2d(num_components, c, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            [StackedResBlock(num_components, ch[0], ch[0])]
            + [StackedResBlock(num_components, a, b) for a, b in zip(ch[:-1], ch[1:])]
        )
        for _ in range(levels):  # AvgPool(3, 2, 1) maps a side s to ceil(s / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.head = StackedLinear(num_components, ch[-1] * h * w, out_dim)

    def forward(self, x: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        n, k = x.shape[:2]
        h = self.stem(_conv_layout(x.reshape(n, k * x.shape[2], *x.shape[3:])), components)
        h = self.blocks[0](h, components)
        for block in self.blocks[1:]:
            h = block(F.avg_pool2d(h, 3, stride=2, padding=1), components)
        # channels are component-major, so (N, K * C, s, s) -> (N, K, C * s * s) keeps each
        # component's features together
        return self.head(_act(h).reshape(n, k, -1), components)

    def select(self, components: Sequence[int]) -> "StackedImageEncoder":
        """A copy holding only ``components``' networks (``[k]``: component ``k`` alone)."""
        return _select_components(self, components)


class StackedImageDecoder(nn.Module):
    """``M`` ResNet image decoders evaluated together: ``(N, K, in_dim) -> (N, K, C, H, W)``.

    Linear map to ``width * 2**levels`` channels at ``H / 2**levels``; ``levels`` times a block
    halving the channels and a nearest x2 upsampling; a block at full resolution; LeakyReLU and
    a 3x3 conv to ``C`` channels, with no final activation.
    """

    def __init__(self, num_components: int, in_dim: int, image_shape: Sequence[int],
                 width: int = 64, levels: int = 2):
        super().__init__()
        self.num_components = num_components
        self.image_shape = c, h, w = _check_image_shape(image_shape, levels)
        ch = _channels(width, levels)
        self._start = (ch[-1], h // 2**levels, w // 2**levels)
        self.head = StackedLinear(num_components, in_dim, math.prod(self._start))
        self.blocks = nn.ModuleList(
            [StackedResBlock(num_components, b, a) for a, b in reversed(list(zip(ch[:-1], ch[1:])))]
            + [StackedResBlock(num_components, ch[0], ch[0])]
        )
        self.out = StackedConv2d(num_components, ch[0], c, 3, padding=1)

    def forward(self, z: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        n, k = z.shape[:2]
        c0, h0, w0 = self._start
        h = _conv_layout(self.head(z, components).reshape(n, k * c0, h0, w0))
        for block in self.blocks[:-1]:
            h = F.interpolate(block(h, components), scale_factor=2, mode="nearest")
        h = self.out(_act(self.blocks[-1](h, components)), components)
        return h.reshape(n, k, *self.image_shape)

    def select(self, components: Sequence[int]) -> "StackedImageDecoder":
        """A copy holding only ``components``' networks (``[k]``: component ``k`` alone)."""
        return _select_components(self, components)


def _flat_batch(x: torch.Tensor, size: int, what: str) -> tuple[torch.Tensor, torch.Size]:
    """``(..., size)`` -> ``(N, size)`` and the leading shape, with a clear error on a wrong size."""
    if x.dim() < 1 or x.shape[-1] != size:
        raise ValueError(f"{what}: expected a tensor (..., {size}), got shape {tuple(x.shape)}")
    return x.reshape(-1, size), x.shape[:-1]


def _image_size_error(dims: Sequence[int], image_shape, what: str) -> ValueError | None:
    size = math.prod(image_shape)
    bad = {k: dk for k, dk in enumerate(dims) if dk != size}
    if not bad:
        return None
    c, h, w = image_shape
    return ValueError(
        f"{what} must be flat images of size {c}*{h}*{w} = {size} (image_shape {tuple(image_shape)}); "
        f"got sizes {bad} (component: size)"
    )


class ImageComponentNets(nn.Module):
    """One ResNet per image component, with :class:`~pyro_mcvae.nets.mlp.ComponentNets`' contract.

    ``role="encoder"``: flat images ``(..., C*H*W)`` -> ``(..., out_k)``; ``role="decoder"``:
    ``(..., in_k)`` -> flat images ``(..., C*H*W)`` (no final activation). ``forward(inputs,
    components)`` takes one tensor per requested component (all ``M`` when ``components`` is None;
    every leading shape ``...`` is flattened and restored) and returns a list.

    When every component has the same non-image size (the common case), the ``M`` networks are one
    :class:`StackedImageEncoder` / :class:`StackedImageDecoder` evaluated with grouped
    convolutions; otherwise each component gets its own single-component stack. ``grouped=False``
    keeps the same parameters but evaluates the requested components one after another (a Python
    loop); see ``benchmarks/image_nets.py`` for which is faster on a given device.
    """

    def __init__(self, in_dims: Sequence[int], out_dims: Sequence[int], role: str,
                 image_shape: Sequence[int] = POLYMNIST_SHAPE, width: int = 64, levels: int = 2,
                 grouped: bool = True):
        super().__init__()
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
        if len(in_dims) != len(out_dims) or len(in_dims) == 0:
            raise ValueError(f"in_dims and out_dims must have one entry per component (at least one), "
                             f"got {len(in_dims)} and {len(out_dims)}")
        self.image_shape = _check_image_shape(image_shape, levels)
        self.role, self.num_components, self.grouped = role, len(in_dims), bool(grouped)
        self.in_dims, self.out_dims = [int(v) for v in in_dims], [int(v) for v in out_dims]
        images, sizes = (self.in_dims, self.out_dims) if role == "encoder" else (self.out_dims, self.in_dims)
        error = _image_size_error(images, self.image_shape,
                                  "encoder inputs" if role == "encoder" else "decoder outputs")
        if error is not None:
            raise error

        def build(m: int, size: int) -> nn.Module:
            if role == "encoder":
                return StackedImageEncoder(m, self.image_shape, size, width, levels)
            return StackedImageDecoder(m, size, self.image_shape, width, levels)

        self.stacked = len(set(sizes)) == 1
        if self.stacked:
            self.net = build(self.num_components, sizes[0])
        else:
            self.nets = nn.ModuleList(build(1, s) for s in sizes)

    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K, D_in)`` -> what the stacks take."""
        return x.reshape(*x.shape[:2], *self.image_shape) if self.role == "encoder" else x

    def _one(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Component ``k``'s network alone on ``x`` ``(N, 1, ...)``."""
        return self.net(x, [k]) if self.stacked else self.nets[k](x)

    def forward(self, inputs: Sequence[torch.Tensor], components: Sequence[int] | None = None):
        comps = _component_list(components, self.num_components)
        if len(inputs) != len(comps):
            raise ValueError(f"got {len(inputs)} inputs for components {comps}")
        flats = [_flat_batch(x, self.in_dims[k], f"{self.role} input of component {k}")
                 for k, x in zip(comps, inputs)]
        if not (self.stacked and self.grouped):  # one component at a time
            outs = [self._one(k, self._to_net(x[:, None]))[:, 0] for k, (x, _) in zip(comps, flats)]
            return [o.reshape(*lead, -1) for o, (_, lead) in zip(outs, flats)]
        lead = flats[0][1]
        if any(shape != lead for _, shape in flats):
            raise ValueError(f"all inputs must have the same leading shape, got "
                             f"{[tuple(s) for _, s in flats]}")
        full = comps == list(range(self.num_components))
        out = self.net(self._to_net(torch.stack([x for x, _ in flats], dim=1)), None if full else comps)
        return [o.reshape(*lead, -1) for o in out.unbind(1)]

    def per_component(self) -> list[nn.Module]:
        """The ``M`` networks as separate single-component stacks (copies of the weights): call
        ``nets[k](x)`` with ``x`` ``(N, 1, C, H, W)`` (encoder) or ``(N, 1, in_dim)`` (decoder).
        For checks and for timing a Python loop over components against the grouped evaluation."""
        if self.stacked:
            return [self.net.select([k]) for k in range(self.num_components)]
        return [copy.deepcopy(net) for net in self.nets]


class ImageOffdiagNet(nn.Module):
    """Image counterpart of :class:`~pyro_mcvae.nets.mlp.GlobalOffdiagNet`: the ``M`` images to
    the off-diagonal blocks.

    Takes the list of ``M`` flat images ``(..., C*H*W)`` and returns ``(..., M, M, d, d)`` whose
    blocks ``i < j`` are filled (the rest zero). A per-component ResNet (grouped, own weights per
    component) gives ``feature_dim`` features per image; a ``GlobalOffdiagNet`` on the
    concatenated features (``self.head``) gives the blocks. Its last layer starts at zero, so the
    output starts at zero; ``keep_fraction < 1`` masks off-diagonal entries as described there
    (buffer ``head.offdiag_mask``, also reachable as ``self.offdiag_mask``).
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int,
                 image_shape: Sequence[int] = POLYMNIST_SHAPE, width: int = 16, levels: int = 2,
                 feature_dim: int = 64, hidden: Sequence[int] = (128, 128), keep_fraction: float = 1.0,
                 mask_seed: int = 0):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape, levels)
        error = _image_size_error(list(component_dims), self.image_shape, "ImageOffdiagNet inputs")
        if error is not None:
            raise error
        m = len(component_dims)
        self.num_components, self.latent_dim = m, latent_dim
        self.features = StackedImageEncoder(m, self.image_shape, feature_dim, width, levels)
        self.head = GlobalOffdiagNet([feature_dim] * m, latent_dim, tuple(hidden), keep_fraction, mask_seed)

    @property
    def offdiag_mask(self) -> torch.Tensor | None:
        return self.head.offdiag_mask

    @property
    def keep_fraction(self) -> float:
        return self.head.keep_fraction

    def entry_mask(self) -> torch.Tensor:
        """Boolean ``(M, M, d, d)``: True where the output may be nonzero."""
        return self.head.entry_mask()

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        size = math.prod(self.image_shape)
        if len(xs) != self.num_components:
            raise ValueError(f"expected {self.num_components} images, one per component, got {len(xs)}")
        flats = [_flat_batch(x, size, f"ImageOffdiagNet input {k}") for k, x in enumerate(xs)]
        lead = flats[0][1]
        if any(shape != lead for _, shape in flats):
            raise ValueError(f"all inputs must have the same leading shape, got "
                             f"{[tuple(s) for _, s in flats]}")
        x = torch.stack([f for f, _ in flats], dim=1)
        feats = _act(self.features(x.reshape(*x.shape[:2], *self.image_shape)))  # (N, M, F)
        out = self.head([feats.flatten(-2)])
        return out.reshape(*lead, *out.shape[1:])


class ResNetNets:
    """Factory of the image networks, with :class:`~pyro_mcvae.nets.mlp.MLPNets`' two methods.

    ``image_shape``: ``(C, H, W)`` of every component (PolyMNIST: ``(3, 28, 28)``); ``width`` and
    ``levels``: base channels and number of halvings of the component encoders and decoders
    (defaults: channels ``64, 128, 256`` at ``28, 14, 7``); ``offdiag_*``: the global network's
    per-component ResNet width, feature size and MLP hidden sizes; ``grouped``: see
    :class:`ImageComponentNets`.
    """

    ROLES = _ROLES

    def __init__(self, image_shape: Sequence[int] = POLYMNIST_SHAPE, width: int = 64, levels: int = 2,
                 offdiag_width: int = 16, offdiag_features: int = 64,
                 offdiag_hidden: Sequence[int] = (128, 128), grouped: bool = True):
        self.image_shape = _check_image_shape(image_shape, levels)
        _channels(width, levels)
        _channels(offdiag_width, levels)
        self.width, self.levels = int(width), int(levels)
        self.offdiag_width, self.offdiag_features = offdiag_width, offdiag_features
        self.offdiag_hidden = tuple(offdiag_hidden)
        self.grouped = bool(grouped)

    def __repr__(self) -> str:
        return (f"ResNetNets(image_shape={self.image_shape}, width={self.width}, levels={self.levels}, "
                f"offdiag_width={self.offdiag_width}, offdiag_features={self.offdiag_features}, "
                f"offdiag_hidden={self.offdiag_hidden}, grouped={self.grouped})")

    def component_nets(self, in_dims: Sequence[int], out_dims: Sequence[int],
                       role: str) -> ImageComponentNets:
        """``M`` ResNets: encoders (flat images in) or decoders (flat images out)."""
        return ImageComponentNets(in_dims, out_dims, role, self.image_shape, self.width, self.levels,
                                  self.grouped)

    def offdiag_net(self, component_dims: Sequence[int], latent_dim: int, keep_fraction: float = 1.0,
                    mask_seed: int = 0) -> ImageOffdiagNet:
        """The global off-diagonal network over all components' images."""
        return ImageOffdiagNet(component_dims, latent_dim, self.image_shape, self.offdiag_width, self.levels,
                               self.offdiag_features, self.offdiag_hidden, keep_fraction, mask_seed)
