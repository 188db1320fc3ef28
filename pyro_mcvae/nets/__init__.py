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
    NetworkFactory,
    as_nets,
)
from .resnet import ImageComponentNets, ImageOffdiagNet, ResNetNets
from .classifier import (
    DigitClassifier,
    classifier_accuracy,
    load_classifiers,
    load_mopoe_classifiers,
    save_classifiers,
)

__all__ = [
    "DigitClassifier",
    "classifier_accuracy",
    "load_classifiers",
    "load_mopoe_classifiers",
    "save_classifiers",
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
    "NetworkFactory",
    "as_nets",
]
