"""Latent laws with block structure."""

from .gmrf import GMRF, component_indices

__all__ = ["GMRF", "component_indices"]
