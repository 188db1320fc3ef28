"""The warm-up schedule of :class:`~pyro_mcvae.mcmc.PersistentHMC`: which adapter runs at which
transition.

A warm-up of ``w`` transitions that starts after transition ``s`` (transitions are numbered from
1 over the kernel's life; ``s = 0`` for the constructor's) has two windows:

* **mass window**, transitions ``s + 1 .. s + floor(3 w / 4)``, only when the mass is adapted
  and ``w >= 20`` (a shorter warm-up rests on too few transitions to estimate a mass): the mass
  is set from the moments before each transition; step size and trajectory adapt after it.
* **step window**, the rest up to ``s + w`` (the whole warm-up without a mass window): the mass
  is frozen, and after transition ``s + floor(3 w / 4)`` dual averaging restarts from the current
  step (the old step suited the old mass) and the trajectory's average restarts.

At the end of transition ``s + w`` the averaged step and trajectory are installed; from
transition ``s + w + 1`` on the kernel is fixed and its draws are recorded. The cross-chain
moments (the trajectory criterion's centre) are updated before every warm-up transition. Unlike
Stan's and Pyro's schedules there are no doubling slow windows: the moments come from many
chains at each transition, not from one chain's history.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WarmupSchedule"]

MIN_MASS_WARMUP = 20  # a warm-up shorter than this adapts no mass
MASS_FRACTION = 0.75  # the mass window's share of the warm-up


@dataclass(frozen=True)
class WarmupSchedule:
    """A warm-up of ``length`` transitions after transition ``start``; ``adapt_mass``: whether a
    mass is wanted (the window exists only for ``length >= 20``)."""

    start: int
    length: int
    adapt_mass: bool = True

    def __post_init__(self):
        if self.start < 0 or self.length < 0:
            raise ValueError(f"need start >= 0 and length >= 0, got {self.start!r}, {self.length!r}")

    @property
    def end(self) -> int:
        """The last warm-up transition (``start`` itself when ``length`` is 0)."""
        return self.start + self.length

    @property
    def mass_end(self) -> int | None:
        """The last transition of the mass window, or ``None`` without one."""
        if not (self.adapt_mass and self.length >= MIN_MASS_WARMUP):
            return None
        return self.start + int(MASS_FRACTION * self.length)

    def windows(self) -> list[tuple[str, int, int]]:
        """``(name, first, last)`` transitions (inclusive) of the ``"mass"`` and ``"step"`` windows
        that are not empty, in order."""
        mass_end = self.mass_end
        split = self.start if mass_end is None else mass_end
        out = [("mass", self.start + 1, split), ("step", split + 1, self.end)]
        return [w for w in out if w[1] <= w[2]]

    def warming(self, t: int) -> bool:
        """Is transition ``t`` (1-based) part of the warm-up?"""
        return self.start < t <= self.end

    def sets_mass(self, t: int) -> bool:
        """Is the mass set before transition ``t``?"""
        mass_end = self.mass_end
        return mass_end is not None and self.start < t <= mass_end

    def mass_is_final(self, t: int) -> bool:
        """Is ``t`` the mass window's last transition (dual averaging restarts after it)?"""
        return t == self.mass_end

    def ends(self, t: int) -> bool:
        """Is ``t`` the warm-up's last transition (the averaged iterates are installed after it)?"""
        return self.length > 0 and t == self.end
