"""Method name -> (config dataclass, builder, default objective).

Every method of the library is registered here, and a new one is one :func:`register` call away
(see ``docs/architecture.md``, "add a model in 50 lines"). The trainer, the experiments and the
command line build models only through :func:`build_model`, so a registered method is usable
everywhere: ``pyro-mcvae train --model NAME``, ``examples/copula.py --model NAME``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

from ..validation import check_sizes
from .base import MCVAE

__all__ = ["Method", "build_model", "default_latent", "get_method", "method_names", "register"]


@dataclass(frozen=True)
class Method:
    """A registered method. ``builder(component_dims, config) -> MCVAE``; ``objective``: the
    default training objective (``"meanfield"``, ``"trace"``, ``"iwae"`` or ``"dreg"``);
    ``latent_field``: the config field holding the latent size (what ``MCVAE.build``'s
    ``latent_dim`` and the experiments' ``--latent-dim`` set)."""

    name: str
    config: type
    builder: Callable[[Sequence[int], object], MCVAE]
    objective: str = "meanfield"
    latent_field: str = "block_dim"
    description: str = ""


_METHODS: dict[str, Method] = {}


def register(name: str, config: type, builder, objective: str = "meanfield", latent_field: str = "block_dim",
             description: str = "", replace: bool = False) -> Method:
    """Register a method under ``name`` (``replace=True`` to override an existing one)."""
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"config must be a dataclass type, got {config!r}")
    if latent_field not in {f.name for f in dataclasses.fields(config)}:
        raise ValueError(f"{config.__name__} has no field {latent_field!r}")
    if name in _METHODS and not replace:
        raise ValueError(f"a method named {name!r} is already registered (pass replace=True)")
    method = Method(name, config, builder, objective, latent_field, description)
    _METHODS[name] = method
    return method


def get_method(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(method_names())}")
    return _METHODS[name]


def method_names() -> list[str]:
    _load_builtin()
    return list(_METHODS)


def build_model(name: str, component_dims: Sequence[int], config=None, **fields) -> MCVAE:
    """Build method ``name`` for components of sizes ``component_dims``, from ``config`` (its
    dataclass; default: the defaults) with ``fields`` overriding single settings."""
    method = get_method(name)
    config = method.config() if config is None else config
    if not isinstance(config, method.config):
        raise ValueError(f"method {name!r} takes a {method.config.__name__}, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{method.config.__name__} has no field(s) {unknown}; fields: {sorted(known)}")
    config = dataclasses.replace(config, **fields)
    model = method.builder(check_sizes(component_dims), config)
    # What a checkpoint records to rebuild the model (models/records.py): the name and the config
    # the builder was given.
    model.method, model.default_objective, model.config = name, method.objective, config
    return model


def default_latent(name: str) -> int:
    """The latent size method ``name`` has by default (its config's ``latent_field``)."""
    method = get_method(name)
    return next(f.default for f in dataclasses.fields(method.config) if f.name == method.latent_field)


def _load_builtin() -> None:
    """Register the library's methods (once, on first use: keeps importing a method cheap)."""
    if "gmrf" in _METHODS:
        return
    from .almrf import ALMRFConfig, build_almrf
    from .gmrf import GMRFConfig, IndependentConfig, build_gmrf, build_independent
    from .mmvae import MMVAEConfig, build_mmvae
    from .mmvaeplus import MMVAEPlusConfig, build_mmvaeplus
    from .mopoe import MoPoEConfig, build_mopoe
    from .mvae import MVAEConfig, build_mvae
    from .nnmrf import NNMRFConfig, build_nnmrf

    register("gmrf", GMRFConfig, build_gmrf, "meanfield", description="GMRF prior and posterior (the paper's model)")
    register("diagonal", IndependentConfig, build_independent, "meanfield",
             description="independent Gaussian prior and posterior (ablation)")
    register("almrf", ALMRFConfig, build_almrf, "trace", description="asymmetric Laplace MRF")
    register("nnmrf", NNMRFConfig, build_nnmrf, "trace", description="neural-potential MRF prior (experimental)")
    register("mvae", MVAEConfig, build_mvae, "meanfield", "shared_dim", "product of experts")
    register("mmvae", MMVAEConfig, build_mmvae, "dreg", "shared_dim", "mixture of experts")
    register("mopoe", MoPoEConfig, build_mopoe, "meanfield", "shared_dim", "mixture of subset products")
    register("mmvaeplus", MMVAEPlusConfig, build_mmvaeplus, "dreg", "shared_dim",
             "shared and modality-specific latents")
