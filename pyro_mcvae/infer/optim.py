"""One Adam step over every parameter of a Pyro program: :class:`FusedClippedAdam` and the SVI
step that drives it (:func:`svi_step`).

Pyro's ``ClippedAdam`` keeps one torch optimiser per parameter, so a step is a Python loop of
about ten tensor operations per parameter. :class:`FusedClippedAdam` computes the same update
(elementwise clamping of the gradient to ``[-clip_norm, clip_norm]``, the rate multiplied by
``lrd`` before every step, Adam with Pyro's placement of ``eps``) with torch's fused Adam kernel
(one pass over each parameter; ``torch.optim.adam.adam(fused=True)``, on the CPU and CUDA), or its
multi-tensor (``foreach``) form where no fused kernel exists. The programs stay Pyro programs:
the objective traces model and guide, Pyro's parameter store holds the parameters, and the
optimiser is called like a Pyro optimiser, ``optim(params)`` with the parameters a step's param
trace recorded.

Pyro's update and torch's differ only in where ``eps`` enters: ``ClippedAdam`` divides by
``sqrt(v) + eps`` and multiplies the rate by ``sqrt(1 - beta2^t)``, torch by
``sqrt(v) / sqrt(1 - beta2^t) + eps``; torch's kernel with ``eps / sqrt(1 - beta2^t)`` is Pyro's
update exactly (in real arithmetic). That ``eps`` depends on the step count ``t``, so parameters
are stepped in buckets of equal count (one bucket, except where a parameter got its first
gradient later than the others, e.g. the prior under a beta warm-up starting at 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

import pyro
import torch
from pyro import poutine
from pyro.params.param_store import module_from_param_with_module_name, user_param_name
from torch.optim.adam import adam

__all__ = ["FusedClippedAdam", "svi_step", "STATE_FORMAT"]

STATE_FORMAT = "pyro_mcvae.FusedClippedAdam-1"
_FUSED_DEVICES = ("cpu", "cuda")


class FusedClippedAdam:
    """Pyro's ``ClippedAdam`` for all parameters in one fused Adam step.

    Args:
        lr, betas, eps, clip_norm, lrd: as in ``pyro.optim.ClippedAdam`` (``clip_norm``: every
            gradient entry is clamped to ``[-clip_norm, clip_norm]``; ``inf`` or ``None``: no
            clamping; ``lrd``: the rate is multiplied by it before every step).
        rate: optional ``rate(module_name, param_name) -> lr`` for a parameter's own learning
            rate (Pyro's names: ``"prior"``, ``"raw_tril"`` for the store's ``"prior$$$raw_tril"``;
            ``module_name`` is ``None`` for a bare ``pyro.param``).
        implementation: ``"auto"`` (torch's fused kernel where every parameter lives on a CPU or
            CUDA device, else ``"foreach"``), ``"fused"`` or ``"foreach"``.

    ``optim(params)`` steps ``params`` (the unconstrained tensors of a step's param trace):
    parameters seen for the first time join the optimiser then (a ``pyro.param`` created inside
    a program during a step is stepped from that step on), a parameter that has never had a
    gradient is left alone, and one that had a gradient before but has none now is stepped with a
    zero gradient: the moments decay and the parameter moves, as under ``pyro.infer.SVI`` (which
    zeroes gradients rather than dropping them). As in Pyro, each parameter's rate decays by
    ``lrd`` in every call that passes it, from its first (a parameter created later starts at
    its undecayed rate). Parameters of equal rate and step count are updated together.

    :meth:`get_state` / :meth:`set_state`: the state by parameter name, as Pyro's optimisers
    keep it, restored as each parameter is first seen. :meth:`set_state` also reads the state of
    Pyro's per-parameter ``ClippedAdam`` (checkpoints written before this class): its moments,
    step counts and decayed rates carry over.
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 clip_norm: float | None = 10.0, lrd: float = 1.0,
                 rate: Callable[[str | None, str], float] | None = None, implementation: str = "auto"):
        if implementation not in ("auto", "fused", "foreach"):
            raise ValueError(f"implementation must be 'auto', 'fused' or 'foreach', got {implementation!r}")
        self.lr, self.betas, self.eps, self.lrd = float(lr), tuple(float(b) for b in betas), float(eps), float(lrd)
        self.clip_norm = math.inf if clip_norm is None else float(clip_norm)
        self.rate, self.implementation = rate, implementation
        self.state: dict[torch.Tensor, dict] = {}  # parameter -> its moments and step count
        self._lr: dict[torch.Tensor, float] = {}  # every parameter seen -> its current (decayed) rate
        self._waiting: dict[str, dict] = {}  # restored state of parameters not seen yet, by name

    # -- the step -----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, params: Iterable[torch.Tensor]) -> None:
        params = list(params)
        stepped = []
        for p in params:
            if p not in self._lr:
                self._join(p)
            self._lr[p] *= self.lrd  # ClippedAdam: the rate decays before the update
            if p.grad is None:
                if p not in self.state:
                    continue  # never had a gradient: ClippedAdam skips it too
                p.grad = torch.zeros_like(p)  # SVI's zeroed gradient of an earlier step
            stepped.append(p)
        if not stepped:
            return
        if math.isfinite(self.clip_norm):
            torch.nn.utils.clip_grad_value_(stepped, self.clip_norm, foreach=True)
        buckets: dict[tuple[float, int], list[torch.Tensor]] = defaultdict(list)
        for p in stepped:
            state = self.state.get(p) or self._moments(p, 0, torch.zeros_like(p), torch.zeros_like(p))
            buckets[(self._lr[p], state["count"])].append(p)
        for (lr, count), ps in buckets.items():
            self._adam(ps, lr, count + 1)

    def _adam(self, ps: list[torch.Tensor], lr: float, t: int) -> None:
        """Adam on the parameters ``ps``, all at step ``t`` (1 at their first update)."""
        states = [self.state[p] for p in ps]
        beta1, beta2 = self.betas
        fused = all(self._fused(p) for p in ps)
        # eps / sqrt(1 - beta2^t) in torch's denominator is ClippedAdam's eps (module docstring).
        adam(ps, [p.grad for p in ps], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             [s["step"] for s in states], foreach=not fused, fused=fused, amsgrad=False, beta1=beta1,
             beta2=beta2, lr=lr, weight_decay=0.0, eps=self.eps / math.sqrt(1.0 - beta2 ** t), maximize=False)
        for s in states:
            s["count"] = t

    # -- parameters joining ----------------------------------------------------------------------------
    def _join(self, p: torch.Tensor) -> None:
        name = _name(p)
        waiting = self._waiting.pop(name, None) if name is not None else None
        self._lr[p] = float(waiting["lr"]) if waiting is not None else self._initial_rate(name)
        if waiting is not None and waiting["exp_avg"] is not None:
            self._moments(p, int(waiting["count"]), waiting["exp_avg"].to(p.device, p.dtype, copy=True),
                          waiting["exp_avg_sq"].to(p.device, p.dtype, copy=True))

    def _fused(self, p: torch.Tensor) -> bool:
        return self.implementation == "fused" or (self.implementation == "auto" and p.device.type in _FUSED_DEVICES)

    def _moments(self, p: torch.Tensor, count: int, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> dict:
        """A parameter's state. The step counter is a float32 tensor, on the parameter's device for
        torch's fused kernel and on the host for its foreach form (as ``torch.optim.Adam`` keeps
        it); ``count`` mirrors it on the host, so that bucketing never reads the device."""
        step = torch.tensor(float(count), dtype=torch.float32, device=p.device if self._fused(p) else "cpu")
        self.state[p] = {"count": count, "step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        return self.state[p]

    def _initial_rate(self, name: str | None) -> float:
        if self.rate is None or name is None:
            return self.lr
        module = module_from_param_with_module_name(name) if "$$$" in name else None
        return float(self.rate(module, user_param_name(name)))

    # -- state -------------------------------------------------------------------------------------------
    def learning_rates(self) -> dict[str, float]:
        """The current rate of every parameter seen, by its name in Pyro's parameter store."""
        return {_name(p): lr for p, lr in self._lr.items()}

    def get_state(self) -> dict:
        """Everything a resumed run needs, by parameter name (parameters not seen yet keep the
        state they were restored with)."""
        params = dict(self._waiting)
        for p, lr in self._lr.items():
            s = self.state.get(p)
            params[_name(p)] = {"lr": lr, "count": 0, "exp_avg": None, "exp_avg_sq": None} if s is None else {
                "lr": lr, "count": s["count"], "exp_avg": s["exp_avg"], "exp_avg_sq": s["exp_avg_sq"]}
        return {"format": STATE_FORMAT, "params": params}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`'s output, or the state of Pyro's per-parameter optimisers
        (``{name: torch optimiser state_dict}``, what ``PyroOptim.get_state`` returns)."""
        if state.get("format") == STATE_FORMAT:
            self._waiting.update({name: dict(s) for name, s in state["params"].items()})
            return
        self._waiting.update({name: _from_pyro(name, saved) for name, saved in state.items()})


def _from_pyro(name: str, saved: dict) -> dict:
    """One parameter's entry of Pyro's ``ClippedAdam`` state (a torch optimiser's state_dict of one
    parameter) in :class:`FusedClippedAdam`'s form; a clear error for anything else."""
    try:
        (group,) = saved["param_groups"]
        moments = saved["state"].get(group["params"][0]) if group["params"] else None
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(f"optimiser state of parameter {name!r} is neither FusedClippedAdam's nor that of Pyro's "
                         "per-parameter ClippedAdam") from None
    if moments is None:  # registered, never stepped: only its decayed rate
        return {"count": 0, "lr": float(group["lr"]), "exp_avg": None, "exp_avg_sq": None}
    if "exp_avg" not in moments or group.get("centered_variance", False) or group.get("weight_decay", 0):
        raise ValueError(f"optimiser state of parameter {name!r} is not that of Pyro's ClippedAdam with the "
                         "settings the trainer uses (Adam moments, no weight decay, no centred variance)")
    return {"count": int(moments["step"]), "lr": float(group["lr"]),
            "exp_avg": moments["exp_avg"], "exp_avg_sq": moments["exp_avg_sq"]}


def _name(p: torch.Tensor) -> str | None:
    return pyro.get_param_store().param_name(p)


def svi_step(model, guide, objective, optim, *args, **kwargs) -> float:
    """``pyro.infer.SVI.step`` for an optimiser called as ``optim(params)``: the objective's loss
    and gradients (model and guide traced by the ELBO), the update of the parameters the param
    trace recorded, then their gradients dropped (the optimiser treats a dropped gradient of a
    parameter it has stepped before as SVI's zeroed one, without writing zeros every step)."""
    with poutine.trace(param_only=True) as capture:
        loss = objective.loss_and_grads(model, guide, *args, **kwargs)
    params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
    optim(params)
    for p in params:
        p.grad = None
    return float(loss)
