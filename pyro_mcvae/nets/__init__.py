"""Encoders and decoders."""

from .mlp import (
    MLP,
    ComponentNets,
    GlobalOffdiagNet,
    StackedLinear,
    StackedMLP,
    VectorDecoder,
    VectorEncoder,
)

__all__ = [
    "MLP",
    "ComponentNets",
    "GlobalOffdiagNet",
    "StackedLinear",
    "StackedMLP",
    "VectorDecoder",
    "VectorEncoder",
]
