"""MCMC for energy-based (MRF) priors: persistent HMC chains and the log-partition gradient.

For a prior ``p(z) = exp(-E_theta(z)) / Z(theta)`` the partition function is intractable, but
its gradient is an expectation under the prior:

    grad_theta log Z = -E_p[grad_theta E_theta(z)],

estimated from samples of ``p``. :class:`PersistentHMC` keeps ``C`` chains of Pyro's HMC
kernel alive across training steps (a few transitions per step instead of a fresh warm-up),
and :func:`log_partition_surrogate` turns its samples into a term whose gradient is the
estimate. Diagnostics go through ArviZ (R-hat, bulk and tail ESS) with the kernel's divergences
and acceptance rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pyro.infer.mcmc import HMC

__all__ = ["PersistentHMC", "log_partition_surrogate"]


def log_partition_surrogate(energy_fn: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient in the energy's parameters estimates ``grad log Z``.

    ``-mean_s E(z_s)`` over prior samples ``z_s`` (held fixed): its gradient is
    ``-E_p[grad E]``. Its value is not ``log Z`` (which stays unknown); add
    ``surrogate - surrogate.detach()`` to a log density to correct its gradient without changing
    its value.
    """
    return -energy_fn(samples.detach()).mean()


class PersistentHMC:
    """``num_chains`` chains of Pyro's HMC kernel on ``energy_fn``, persistent between calls.

    Args:
        energy_fn: ``z (C, D) -> (C,)`` energies (parameters may change between calls: the
            kernel's cached potential is cleared at every :meth:`step`).
        init: initial states ``(C, D)``.
        step_size, num_steps: leapfrog settings; with ``adapt_step_size`` the step size is
            adapted (dual averaging) during the first ``warmup`` transitions.
        keep: how many recorded draws per chain to keep for the diagnostics.

    The chains share one kernel, whose potential is the sum of the chains' energies: the chains
    target independent copies of the law, with one step size and one Metropolis decision for all
    of them per transition (Pyro's HMC works on one state), which is valid but lowers the
    acceptance as ``C`` grows; the step size adaptation compensates during the warm-up. Call
    :meth:`step` to advance; :attr:`state` holds the current ``(C, D)`` samples.
    """

    def __init__(self, energy_fn, init: torch.Tensor, step_size: float = 0.1, num_steps: int = 10,
                 warmup: int = 100, adapt_step_size: bool = True, keep: int = 500):
        if init.dim() != 2:
            raise ValueError(f"init must be (chains, dim), got {tuple(init.shape)}")
        self.energy_fn = energy_fn
        self.kernel = HMC(potential_fn=self._potential, step_size=step_size, num_steps=num_steps,
                          adapt_step_size=adapt_step_size, adapt_mass_matrix=False)
        self.kernel.initial_params = {"z": init.detach()}
        self.kernel.setup(warmup_steps=warmup)
        self.state = {"z": init.detach()}
        self.transitions = 0
        self.warmup = warmup
        self.keep = keep
        self._draws: list[torch.Tensor] = []

    def _potential(self, params) -> torch.Tensor:
        return self.energy_fn(params["z"]).sum()

    @property
    def samples(self) -> torch.Tensor:
        """Current states ``(C, D)``."""
        return self.state["z"]

    def step(self, num_transitions: int = 1, record: bool = True) -> torch.Tensor:
        """Advance every chain ``num_transitions`` HMC transitions; returns the states ``(C, D)``.
        Draws after the warm-up are recorded for :meth:`diagnostics`."""
        for _ in range(num_transitions):
            self.kernel.clear_cache()  # the energy's parameters may have changed
            self.state = self.kernel.sample(self.state)
            self.transitions += 1
            if record and self.transitions > self.warmup:
                self._draws.append(self.state["z"].detach().cpu())
                if len(self._draws) > self.keep:
                    self._draws.pop(0)
        return self.state["z"]

    def inference_data(self):
        """The recorded draws as ArviZ ``InferenceData`` (``posterior.z``: chains x draws x dim)."""
        import arviz as az

        if len(self._draws) < 4:
            raise ValueError("fewer than 4 recorded draws after the warm-up; call step() more")
        draws = torch.stack(self._draws, 1).numpy()  # (C, S, D)
        return az.from_dict(posterior={"z": draws})

    def diagnostics(self) -> dict:
        """R-hat, bulk and tail ESS (worst over coordinates, from ArviZ), divergent transitions,
        acceptance rate and step size. The ArviZ numbers are NaN while fewer than 4 draws have
        been recorded after the warm-up."""
        import arviz as az

        if len(self._draws) >= 4:
            data = self.inference_data()
            rhat = float(np.max(az.rhat(data)["z"].values))
            bulk = float(np.min(az.ess(data, method="bulk")["z"].values))
            tail = float(np.min(az.ess(data, method="tail")["z"].values))
        else:
            rhat = bulk = tail = float("nan")
        kd = self.kernel.diagnostics() if self.transitions > self.warmup else {"divergences": []}
        return {
            "max_rhat": rhat,
            "min_ess_bulk": bulk,
            "min_ess_tail": tail,
            "divergences": len(kd["divergences"]),
            "acceptance_rate": float(kd.get("acceptance rate", float("nan"))),
            "step_size": float(self.kernel.step_size),
            "draws_per_chain": len(self._draws),
            "chains": int(self.samples.shape[0]),
        }

    def trace_plot(self, path: str | Path, max_coordinates: int = 4) -> Path:
        """Trace plot PNG of the first coordinates (one line per chain)."""
        from .plots import save_figure
        import matplotlib.pyplot as plt

        draws = torch.stack(self._draws, 1).numpy()
        k = min(max_coordinates, draws.shape[-1])
        fig, axes = plt.subplots(k, 1, figsize=(7, 1.8 * k), squeeze=False, sharex=True)
        for i in range(k):
            for c in range(draws.shape[0]):
                axes[i, 0].plot(draws[c, :, i], lw=0.6)
            axes[i, 0].set_ylabel(f"z[{i}]")
        axes[-1, 0].set_xlabel("recorded transition")
        d = self.diagnostics()
        fig.suptitle(f"HMC chains: max R-hat {d['max_rhat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}, "
                     f"divergences {d['divergences']}", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)
