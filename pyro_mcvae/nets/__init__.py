"""Encoders and decoders: MLPs for vector components, ResNets for images, digit classifiers.

Every ``hidden=`` argument of the guides and decoders takes MLP hidden sizes or a network
factory (:class:`MLPNets`, :class:`ResNetNets`), see :func:`as_nets`.
"""

from .mlp import (
    MLP,
    ComponentNets,
    GlobalOffdiagNet,
    MLPNets,
    StackedLinear,
    StackedMLP,
    VectorDecoder,
    VectorEncoder,
    as_nets,
)
from .resnet import ImageComponentNets, ImageOffdiagNet, ResNetNets

__all__ = [
    "MLP",
    "ComponentNets",
    "GlobalOffdiagNet",
    "ImageComponentNets",
    "ImageOffdiagNet",
    "MLPNets",
    "ResNetNets",
    "StackedLinear",
    "StackedMLP",
    "VectorDecoder",
    "VectorEncoder",
    "as_nets",
]
