"""What a results file records so a number can be traced to how it was made."""

from __future__ import annotations

import platform
import shlex
import sys
from importlib import metadata

import torch

__all__ = ["provenance", "versions"]

_PACKAGES = ("pyro_mcvae", "torch", "pyro-ppl", "numpy", "scipy", "pot")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(names=_PACKAGES) -> dict:
    """Installed version of each named distribution (``"not installed"`` where absent)."""
    return {name: _version(name) for name in names}


def provenance(device: str | torch.device = "cpu") -> dict:
    """The command line, package versions, Python, platform and the device that ran."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "versions": versions() | {"python": platform.python_version()},
        "platform": platform.platform(),
        "device": {"type": device.type, "name": name, "torch_threads": torch.get_num_threads()},
    }
