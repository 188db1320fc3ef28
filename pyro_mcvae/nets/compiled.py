"""Compiled networks: ``torch.compile`` of a model's encoders, decoders and global networks.

Only the networks are compiled, each in place; the Pyro programs around them (traces, sample
sites, the latent laws, the objective) stay eager Python. A whole SVI step cannot be one graph:
Pyro's messengers and traces are Python objects built anew at every step, so Dynamo would break
the graph at almost every statement and recompile as the traces change. The networks are where
the image models spend their time (convolutions, their backward passes), they take tensors and
return tensors, and their only Python arguments are the requested components (a list of ints,
guarded by value: one compiled graph per distinct list).

What is compiled: the outermost modules of the types in :data:`NETWORK_TYPES` (component
encoders and decoders, MLP or ResNet; the GMRF's global off-diagonal network). A compiled module
keeps its parameters, buffers and ``state_dict`` keys (no ``_orig_mod.`` prefix, unlike
``torch.compile(module)``): checkpoints, :func:`~pyro_mcvae.load_model` and resuming see the same
model. The compiled code runs only where gradients are taken (training steps); calls under
``torch.no_grad`` (evaluation, generation, learning curves) run the eager forward, which avoids a
compilation for every conditioning subset and evaluation batch size. A deep copy of a compiled
module is eager.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn

from .mlp import ComponentNets, GlobalOffdiagNet
from .resnet import ImageComponentNets, ImageOffdiagNet

__all__ = ["COMPILE_MODES", "NETWORK_TYPES", "compile_networks", "compile_unavailable", "compiled_networks",
           "uncompile_networks"]

#: The modules that are compiled (the outermost ones: a network inside another is compiled with it).
NETWORK_TYPES = (ImageComponentNets, ImageOffdiagNet, ComponentNets, GlobalOffdiagNet)

#: ``TrainConfig.compile`` settings and the ``torch.compile`` arguments each means. ``True`` is
#: ``"default"``. ``"aot_eager"`` captures the graphs (Dynamo and AOTAutograd, forward and backward)
#: without generating code: no speed-up, but it checks in seconds what the code generators would
#: receive (the tests use it).
COMPILE_MODES = {
    "default": {},
    "reduce-overhead": {"mode": "reduce-overhead"},  # CUDA graphs
    "max-autotune": {"mode": "max-autotune"},
    "max-autotune-no-cudagraphs": {"mode": "max-autotune-no-cudagraphs"},
    "aot_eager": {"backend": "aot_eager"},
}

# The compiled graphs a network may hold: one per requested-components list (the GMRF's subset
# terms ask for each single modality: M + 1 lists), times the batch shapes (a last, smaller batch
# of an epoch adds a dynamic-shape graph). Dynamo's default limit (8 per code object) would send
# the later ones back to eager without a word beyond a log line.
RECOMPILE_LIMIT = 64


def compile_mode(setting) -> str | None:
    """``TrainConfig.compile`` as a key of :data:`COMPILE_MODES` (``None``: eager)."""
    if setting is False or setting is None:
        return None
    if setting is True:
        return "default"
    if setting not in COMPILE_MODES:
        raise ValueError(f"compile must be False, True or one of {list(COMPILE_MODES)}, got {setting!r}")
    return setting


def compile_unavailable(device: torch.device | str, mode: str = "default") -> str | None:
    """Why ``torch.compile`` cannot generate code for ``device`` here (``None``: it can): Dynamo
    unsupported on this Python, no C++ compiler for the CPU code generator, no Triton for the GPU's.
    ``aot_eager`` generates no code and needs neither."""
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support this Python ({torch.__version__})"
    if COMPILE_MODES[mode].get("backend") == "aot_eager":
        return None
    if torch.device(device).type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (inductor's GPU code generator needs it)"
    compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler found (inductor's CPU code generator needs g++, c++ or clang++; set CXX)"
    return None


class _TrainingCall:
    """A compiled module's ``__call__``: the compiled code with gradients enabled, the eager call
    without. Not copied: a deep copy of the module is eager (a copied compiled function would
    still call the original module)."""

    def __init__(self, module: nn.Module, mode: str):
        self.eager, self.mode = module._call_impl, mode
        self.compiled = torch.compile(module._call_impl, **COMPILE_MODES[mode])

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return self.compiled(*args, **kwargs)
        return self.eager(*args, **kwargs)

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (_nothing, ())


def _nothing():
    return None


def _outermost(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = []
    for name, module in model.named_modules():
        if isinstance(module, NETWORK_TYPES) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    return found


def compile_networks(model: nn.Module, mode="default", device=None) -> list[str]:
    """Compile ``model``'s networks in place (see the module docstring); returns their names.

    ``mode``: a key of :data:`COMPILE_MODES` (or ``True``). Where code cannot be generated for
    ``device`` (default: the device of the model's first parameter), warns with the reason and
    leaves the model eager (returns ``[]``). Compiling again with the same mode changes nothing;
    with another mode, recompiles.
    """
    mode = compile_mode(mode)
    if mode is None:
        return []
    if device is None:
        device = next(model.parameters()).device
    reason = compile_unavailable(device, mode)
    if reason is not None:
        warnings.warn(f"training eagerly, without torch.compile: {reason}", RuntimeWarning, stacklevel=2)
        return []
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    names = []
    for name, module in _outermost(model):
        current = module._compiled_call_impl
        if not (isinstance(current, _TrainingCall) and current.mode == mode):
            module._compiled_call_impl = _TrainingCall(module, mode)
        names.append(name)
    return names


def compiled_networks(model: nn.Module) -> dict[str, str]:
    """``{module name: mode}`` of the compiled networks of ``model``."""
    return {name: m._compiled_call_impl.mode for name, m in model.named_modules()
            if isinstance(m._compiled_call_impl, _TrainingCall)}


def uncompile_networks(model: nn.Module) -> None:
    """Every network of ``model`` back to its eager forward."""
    for module in model.modules():
        if isinstance(module._compiled_call_impl, _TrainingCall):
            module._compiled_call_impl = None
