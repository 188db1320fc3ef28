"""The recorded draws of :class:`~pyro_mcvae.mcmc.PersistentHMC` and their diagnostics.

Beside ArviZ's R-hat and bulk/tail ESS per coordinate, the draws' energy ``E(z)`` per chain gets
R-hat, bulk ESS and the pooled lag-1 autocorrelation, and so does the standardised squared
distance ``sqnorm = sum_i ((z_i - m_i) / s_i)^2`` (``m``, ``s``: mean and standard deviation of
the kept draws pooled over chains). Per-coordinate ESS alone can be fooled: a chain that
alternates sign (``z -> -z`` at a half-period trajectory) has negative autocorrelation in every
coordinate, so ArviZ reports more effective draws than draws (antithetic sampling), while
``|z|^2``, the energy and hence the ``log Z`` gradient (an expectation of ``grad_theta E``) do
not move.

**Which draws.** A *kernel* is the step size, mass and trajectory fixed at the end of one
warm-up. Every draw is recorded with its kernel's index (0 for the constructor's warm-up, one
more for each :meth:`~pyro_mcvae.mcmc.PersistentHMC.restart_warmup`); a restart with
``clear=False`` keeps the earlier kernels' draws, so the ArviZ numbers then pool several kernels:
:func:`summarise` reports how many (``kernels``), and :func:`to_inference_data` labels each draw
(``sample_stats.kernel``). The transition totals (acceptance, divergences, leapfrog steps) always
describe the current kernel alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["RHAT_LIMIT", "ESS_PER_1000_LIMIT", "DrawBuffer", "KernelTotals", "standardised_sqnorm",
           "lag1_autocorrelation", "to_inference_data", "summarise"]

RHAT_LIMIT = 1.05  # R-hat above this (coordinates, energy or sqnorm) fails ``mixing_ok``
ESS_PER_1000_LIMIT = 100.0  # bulk ESS per 1000 draws (all chains) below this fails ``mixing_ok``

_PER_CHAIN = ("energy", "hamiltonian", "accept_prob", "diverging")


class DrawBuffer:
    """A ring buffer of the last ``keep`` recorded draws of ``C`` chains, on the chains' device
    (``keep * (C * (D + 3) + 1)`` numbers, allocated at the first record): ``z (C, D)``,
    ``energy``, ``hamiltonian``, ``accept_prob``, ``diverging`` ``(C,)`` and the kernel's index."""

    def __init__(self, keep: int):
        self.keep = int(keep)
        self.count = 0  # draws recorded, including the ones overwritten
        self._buf: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Draws per chain held: ``min(count, keep)``."""
        return min(self.count, self.keep)

    def record(self, kernel: int, z: torch.Tensor, energy: torch.Tensor, hamiltonian: torch.Tensor,
               accept_prob: torch.Tensor, diverging: torch.Tensor) -> None:
        if self.keep <= 0:
            return
        c, d = z.shape
        if self._buf is None:
            kw = dict(device=z.device)
            self._buf = {"z": torch.empty(self.keep, c, d, dtype=z.dtype, **kw),
                         "energy": torch.empty(self.keep, c, dtype=energy.dtype, **kw),
                         "hamiltonian": torch.empty(self.keep, c, dtype=energy.dtype, **kw),
                         "accept_prob": torch.empty(self.keep, c, dtype=accept_prob.dtype, **kw),
                         "diverging": torch.empty(self.keep, c, dtype=torch.bool, **kw),
                         "kernel": torch.empty(self.keep, dtype=torch.long, **kw)}
        i = self.count % self.keep
        for name, value in (("z", z), ("energy", energy), ("hamiltonian", hamiltonian),
                            ("accept_prob", accept_prob), ("diverging", diverging)):
            self._buf[name][i] = value
        self._buf["kernel"][i] = kernel
        self.count += 1

    def get(self, name: str, chains: int, dim: int) -> torch.Tensor:
        """The held draws in order (oldest first) on the CPU: ``"z"`` ``(C, S, D)``; ``"energy"``,
        ``"hamiltonian"``, ``"accept_prob"``, ``"diverging"`` ``(C, S)``; ``"kernel"`` ``(S,)``."""
        if name not in ("z", "kernel", *_PER_CHAIN):
            raise KeyError(f"no recorded {name!r}; one of z, kernel, {', '.join(_PER_CHAIN)}")
        if self._buf is None:
            return torch.empty({"z": (chains, 0, dim), "kernel": (0,)}.get(name, (chains, 0)),
                               dtype=torch.long if name == "kernel" else None)
        buf, s = self._buf[name], len(self)
        if self.count > self.keep:  # oldest first
            i = self.count % self.keep
            buf = torch.cat([buf[i:], buf[:i]])
        buf = buf[:s]
        return (buf if name == "kernel" else buf.transpose(0, 1)).cpu()


class KernelTotals:
    """Sums over the transitions after the current kernel's warm-up (tensors on the chains'
    device, so no synchronisation per transition)."""

    def __init__(self, device):
        self.transitions = 0
        self.leapfrog_steps = 0
        self.accept_prob = torch.zeros((), dtype=torch.float64, device=device)
        self.divergent = torch.zeros((), dtype=torch.long, device=device)

    def add(self, alpha: torch.Tensor, divergent: torch.Tensor, steps: int) -> None:
        self.transitions += 1
        self.leapfrog_steps += steps
        self.accept_prob += alpha.sum()
        self.divergent += divergent.sum()


def standardised_sqnorm(z: torch.Tensor) -> torch.Tensor:
    """``sum_i ((z_i - m_i) / s_i)^2`` ``(C, S)`` of draws ``z (C, S, D)``, with ``m``, ``s``
    pooled over all draws (a constant coordinate gets ``s = 1``)."""
    flat = z.reshape(-1, z.shape[-1])
    m, s = flat.mean(0), flat.std(0)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (((z - m) / s) ** 2).sum(-1)


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Lag-1 autocorrelation of ``x (C, S)``, pooled over chains around the pooled mean (so
    chains stuck at different levels count as correlated)."""
    x = x - x.mean()
    den = float((x * x).mean())
    return float((x[:, 1:] * x[:, :-1]).mean() / den) if den > 0 else float("nan")


def to_inference_data(draws: DrawBuffer, chains: int, dim: int):
    """The held draws as ArviZ ``InferenceData``.

    ``posterior``: ``z`` (chain, draw, dim), ``energy`` (``E(z)``, the potential energy, i.e.
    ``-log p(z)`` up to ``log Z``) and ``sqnorm`` (the standardised squared distance from the
    pooled mean), so ``az.summary`` covers all three. ``sample_stats``: ``lp`` (``-E(z)``),
    ``energy`` (the Hamiltonian, potential plus kinetic, of the state each transition kept: what
    ``az.plot_energy`` and ``az.bfmi`` read), ``acceptance_rate`` (the Metropolis probability of
    the transition that produced the draw), ``diverging`` and ``kernel`` (the index of the kernel
    that produced the draw)."""
    import arviz as az

    if len(draws) < 4:
        raise ValueError("fewer than 4 recorded draws after the warm-up; call step() more")
    z = draws.get("z", chains, dim).to(torch.float64)
    energy = draws.get("energy", chains, dim).to(torch.float64)
    kernel = draws.get("kernel", chains, dim).expand(chains, -1)
    with warnings.catch_warnings():  # many chains, few draws is what persistent chains are
        warnings.filterwarnings("ignore", message=".*More chains.*than draws.*")
        return az.from_dict(
            posterior={"z": z.numpy(), "energy": energy.numpy(), "sqnorm": standardised_sqnorm(z).numpy()},
            sample_stats={"lp": -energy.numpy(),
                          "energy": draws.get("hamiltonian", chains, dim).to(torch.float64).numpy(),
                          "acceptance_rate": draws.get("accept_prob", chains, dim).double().numpy(),
                          "diverging": draws.get("diverging", chains, dim).numpy(),
                          "kernel": kernel.numpy()})


def _mixing(draws: DrawBuffer, chains: int, dim: int, out: dict) -> list[str]:
    """Fills the ArviZ numbers of ``out`` from the held draws; returns what fails ``mixing_ok``."""
    import arviz as az

    s = len(draws)
    if s < 4:
        return [f"{s} recorded draws after the warm-up (need 4)"]
    data = to_inference_data(draws, chains, dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ on constant series
        rhat, bulk = az.rhat(data), az.ess(data, method="bulk")
        tail = az.ess(data, method="tail", var_names=["z"])
    out.update(max_rhat=float(np.max(rhat["z"].values)), min_ess_bulk=float(np.min(bulk["z"].values)),
               min_ess_tail=float(np.min(tail["z"].values)))
    for name in ("energy", "sqnorm"):
        out[f"rhat_{name}"] = float(rhat[name].values)
        out[f"ess_bulk_{name}"] = float(bulk[name].values)
        out[f"lag1_autocorr_{name}"] = lag1_autocorrelation(data.posterior[name].values)  # (C, S)
    problems = []
    per = 1000.0 / (chains * s)
    labels = {"max_rhat": "R-hat of the worst coordinate", "rhat_energy": "R-hat of the energy",
              "rhat_sqnorm": "R-hat of |z - mean|^2"}
    for key, label in labels.items():
        if not out[key] <= RHAT_LIMIT:
            problems.append(f"{label} is {out[key]:.3f} > {RHAT_LIMIT}")
    coord = out["min_ess_bulk"] * per
    if not coord >= ESS_PER_1000_LIMIT:
        problems.append(f"bulk ESS of the worst coordinate is {coord:.0f} per 1000 draws")
    for key, label in (("ess_bulk_energy", "the energy"), ("ess_bulk_sqnorm", "|z - mean|^2")):
        value = out[key] * per
        if not value >= ESS_PER_1000_LIMIT:
            msg = f"bulk ESS of {label} is {value:.0f} per 1000 draws"
            if coord >= ESS_PER_1000_LIMIT:
                msg += (f" while the per-coordinate bulk ESS is {coord:.0f} per 1000: the trajectory is"
                        " resonant (coordinates alternate sign, the squared distance stays put)")
            problems.append(msg)
    return problems


def summarise(draws: DrawBuffer, totals: KernelTotals, chains: int, dim: int, step_size: float,
              trajectory_length: float, leapfrog_steps: int) -> dict:
    """Plain ``float``/``int``/``bool``/``str`` values (for logs). Two scopes:

    *The held draws* (the last ``keep`` recorded, possibly from several kernels):

    * per coordinate (ArviZ): ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``;
    * of the energy and of ``sqnorm`` (module docstring): ``rhat_energy``, ``ess_bulk_energy``,
      ``rhat_sqnorm``, ``ess_bulk_sqnorm``, ``lag1_autocorr_energy``, ``lag1_autocorr_sqnorm``
      (pooled over chains);
    * ``draws_per_chain``, and ``kernels``: how many kernels the draws come from (1 unless a
      warm-up was restarted with ``clear=False``; 0 without draws).

    *The current kernel*: ``divergences``, ``acceptance_rate`` (mean Metropolis probability),
    ``mean_leapfrog_steps`` (gradient evaluations per transition; each ``step`` call adds one at
    its start) over the transitions after its warm-up (NaN acceptance and the current number of
    leapfrog steps, ``leapfrog_steps``, before any), and its ``step_size`` and
    ``trajectory_length``.

    ``mixing_ok``: every R-hat (coordinates, energy, sqnorm) at most 1.05 and every bulk ESS
    (worst coordinate, energy, sqnorm) at least 100 per 1000 draws (all chains together: a
    relative efficiency of 0.1, which an autocorrelation of ``rho`` at every lag ``k`` as
    ``rho^k`` reaches at ``rho = 0.82``); ``warnings``: what failed, ``"; "`` separated (``""`` if
    nothing). The ArviZ numbers are NaN (and ``mixing_ok`` False) while fewer than 4 draws are
    held. ``chains``: ``C``."""
    nan = float("nan")
    out = dict(max_rhat=nan, min_ess_bulk=nan, min_ess_tail=nan, rhat_energy=nan, ess_bulk_energy=nan,
               rhat_sqnorm=nan, ess_bulk_sqnorm=nan, lag1_autocorr_energy=nan, lag1_autocorr_sqnorm=nan)
    problems = _mixing(draws, chains, dim, out)
    mixing_ok = not problems  # divergences are reported but do not decide mixing_ok
    n = max(totals.transitions, 1)
    divergences = int(totals.divergent)
    if divergences:
        problems.append(f"{divergences} divergent transitions after the warm-up")
    out.update(
        divergences=divergences,
        acceptance_rate=float(totals.accept_prob) / (n * chains) if totals.transitions else nan,
        step_size=float(step_size),
        trajectory_length=float(trajectory_length),
        mean_leapfrog_steps=totals.leapfrog_steps / n if totals.transitions else float(leapfrog_steps),
        draws_per_chain=len(draws),
        kernels=int(draws.get("kernel", chains, dim).unique().numel()),
        chains=chains,
        mixing_ok=mixing_ok,
        warnings="; ".join(problems),
    )
    return out
