"""Schedules for the KL weight ``beta`` as functions of the optimisation step."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ConstantBeta", "LinearWarmup", "CyclicalBeta", "parse_beta_schedule"]


@dataclass(frozen=True)
class ConstantBeta:
    """``beta(step) = value``."""

    value: float = 1.0

    def __post_init__(self):
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"beta must be a finite non-negative number, got {self.value}")

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class LinearWarmup:
    """Linear ramp from ``start`` to ``end`` over ``steps`` steps, then ``end``."""

    steps: int
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"warm-up steps must be >= 1, got {self.steps}")
        if min(self.start, self.end) < 0:
            raise ValueError("beta values must be non-negative")

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0) / self.steps, 1.0)
        return float(self.start + frac * (self.end - self.start))


@dataclass(frozen=True)
class CyclicalBeta:
    """Cyclical annealing: each period ramps linearly from ``low`` to ``high`` during its first
    ``ramp`` fraction, then holds ``high``."""

    period: int
    low: float = 0.0
    high: float = 1.0
    ramp: float = 0.5

    def __post_init__(self):
        if self.period < 1:
            raise ValueError(f"period must be >= 1, got {self.period}")
        if not 0 < self.ramp <= 1:
            raise ValueError(f"ramp must lie in (0, 1], got {self.ramp}")
        if min(self.low, self.high) < 0:
            raise ValueError("beta values must be non-negative")

    def __call__(self, step: int) -> float:
        phase = (max(step, 0) % self.period) / self.period
        frac = min(phase / self.ramp, 1.0)
        return float(self.low + frac * (self.high - self.low))


def parse_beta_schedule(spec) -> object:
    """A schedule from a number or a string: ``"1.0"``, ``"constant:0.5"``,
    ``"linear:STEPS[:END]"``, ``"cyclical:PERIOD[:HIGH]"``."""
    if callable(spec):
        return spec
    if isinstance(spec, (int, float)):
        return ConstantBeta(float(spec))
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    args = [a for a in rest.split(":") if a]
    try:
        if kind in ("constant", "const"):
            return ConstantBeta(float(args[0]) if args else 1.0)
        if kind == "linear":
            return LinearWarmup(int(args[0]), end=float(args[1]) if len(args) > 1 else 1.0)
        if kind == "cyclical":
            return CyclicalBeta(int(args[0]), high=float(args[1]) if len(args) > 1 else 1.0)
        return ConstantBeta(float(text))
    except (IndexError, ValueError) as err:
        raise ValueError(
            f"cannot read beta schedule {spec!r}: use a number, 'constant:B', 'linear:STEPS[:END]' "
            f"or 'cyclical:PERIOD[:HIGH]' ({err})"
        ) from None
