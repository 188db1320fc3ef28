"""What every objective of this library shares: ``beta`` on the latent sites, and strata.

The model and guide programs know nothing of either. An objective receives ``beta`` (a keyword
of ``loss`` / ``loss_and_grads``, as :class:`pyro.infer.SVI` passes it) and takes it out before
the programs run; the ELBOs of Pyro then see latent sites scaled by ``beta``, the
importance-weighted bound reads it directly. A guide that draws one latent per stratum of a
mixture (:class:`StratifiedGuide`: MMVAE, MoPoE-VAE, MMVAE+) gets a ``strata`` plate (dim -2)
around both programs, each stratum weighted by its mixture weight, so that the ELBO is the
stratified estimator ``sum_s w_s ELBO(z_s)`` of MMVAE. The programs keep their ``data`` plate at
dim -1; ``max_plate_nesting`` is 2.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, nullcontext
from typing import Protocol, runtime_checkable

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

from ...validation import module_dtype

__all__ = ["MAX_PLATE_NESTING", "LatentScale", "MultimodalObjective", "StratifiedGuide", "check_beta"]

MAX_PLATE_NESTING = 2  # data (-1) and strata (-2)


@runtime_checkable
class StratifiedGuide(Protocol):
    """A guide whose latent sites carry one draw per stratum (batch dimension -2)."""

    def stratum_weights(self, mask, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Weights ``(S, batch)`` of the strata (zero: the stratum is absent for that datum)."""


def check_beta(beta) -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a non-negative number, got {beta!r}") from None
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"beta must be a non-negative finite number, got {beta!r}")
    return value


class LatentScale(Messenger):
    """Scale every unobserved sample site by ``beta``; at ``beta = 0`` mask it out instead
    (``poutine.scale`` refuses zero, which every warm-up starts from)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = check_beta(beta)

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
            return
        if self.beta == 0.0:
            msg["mask"] = False
        else:
            msg["scale"] = self.beta * msg["scale"]


def _batch_of(args) -> tuple[int, torch.device]:
    """Batch size and device of the programs' first argument, the data ``(batch, M, D)`` or a list
    of ``M`` tensors ``(batch, D_k)`` (or NumPy arrays: on the CPU)."""
    data = (torch.Tensor, np.ndarray)
    xs = args[0] if args else None
    first = xs if isinstance(xs, data) else (xs[0] if isinstance(xs, (list, tuple)) and xs else None)
    if not isinstance(first, data):
        raise ValueError("the objective expects the data as the programs' first argument "
                         "(a (batch, M, D) tensor or a list of M tensors (batch, D_k))")
    return first.shape[0], first.device if isinstance(first, torch.Tensor) else torch.device("cpu")


class MultimodalObjective:
    """Mixin for the objectives: :meth:`_programs` takes ``beta`` out of the keyword arguments
    and returns the model and guide wrapped in the strata plate (and, when ``scales_latents``,
    with their latent sites scaled by ``beta``)."""

    scales_latents = True

    @staticmethod
    def strata_weights(guide, args, kwargs) -> torch.Tensor | None:
        """``(S, batch)`` weights of a :class:`StratifiedGuide`, else ``None``."""
        if not isinstance(guide, StratifiedGuide):
            return None
        batch, device = _batch_of(args)
        # The weights scale the guide's densities: in its dtype (the data may come in another).
        dtype, device = module_dtype(guide) if isinstance(guide, nn.Module) else (torch.get_default_dtype(), device)
        mask = kwargs.get("mask")
        return guide.stratum_weights(torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask, batch,
                                     device, dtype)

    def _programs(self, model, guide, args, kwargs):
        kwargs = dict(kwargs)
        beta = check_beta(kwargs.pop("beta", 1.0))
        weights = self.strata_weights(guide, args, kwargs)

        def wrap(fn):
            def program(*a, **kw):
                with _strata(weights), (LatentScale(beta) if self.scales_latents else nullcontext()):
                    return fn(*a, **kw)
            return program

        return wrap(model), wrap(guide), kwargs, beta, weights


def _strata(weights: torch.Tensor | None) -> ExitStack:
    """Plate ``strata`` (dim -2) with each stratum scaled by its weight ``(S, batch)``; zero-weight
    strata are masked out. Nothing when ``weights`` is None."""
    stack = ExitStack()
    if weights is not None:
        stack.enter_context(pyro.plate("strata", weights.shape[0], dim=-2))
        stack.enter_context(poutine.mask(mask=weights > 0))
        stack.enter_context(poutine.scale(scale=torch.where(weights > 0, weights, torch.ones_like(weights))))
    return stack
