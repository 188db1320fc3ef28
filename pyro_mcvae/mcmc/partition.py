"""The log-partition gradient of an energy-based prior from its samples.

For ``p(z) = exp(-E_theta(z)) / Z(theta)``, ``grad_theta log Z = -E_p[grad_theta E_theta(z)]``.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["log_partition_surrogate"]


def log_partition_surrogate(energy_fn: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient in the energy's parameters estimates ``grad log Z``.

    ``-mean_s E(z_s)`` over prior samples ``z_s`` (held fixed): its gradient is
    ``-E_p[grad E]``. Its value is not ``log Z`` (which stays unknown); add
    ``surrogate - surrogate.detach()`` to a log density to correct its gradient without changing
    its value.
    """
    return -energy_fn(samples.detach()).mean()
