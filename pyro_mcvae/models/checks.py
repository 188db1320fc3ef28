"""Checks of the methods' settings, so that a config dataclass refuses bad values when it is
built and names every bad field in one error (:meth:`CommonConfig.problems`).

Each check takes a value and returns what is wrong with it (``"must be ..., got ..."``) or
``None``; :func:`field_problems` applies them to a config's fields by name.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

__all__ = ["boolean", "fraction", "field_problems", "graph_matrix", "non_negative_int", "non_negative_number",
           "one_of", "optional", "positive_int", "positive_number", "sizes", "unit_open"]

Check = Callable[[object], "str | None"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(value) -> str | None:
    return None if _is_int(value) and value >= 1 else f"must be a positive integer, got {value!r}"


def non_negative_int(value) -> str | None:
    return None if _is_int(value) and value >= 0 else f"must be a non-negative integer, got {value!r}"


def positive_number(value) -> str | None:
    return None if _is_real(value) and value > 0 else f"must be a positive number, got {value!r}"


def non_negative_number(value) -> str | None:
    return None if _is_real(value) and value >= 0 else f"must be a finite number >= 0, got {value!r}"


def unit_open(value) -> str | None:
    """A margin in ``(0, 1)``."""
    return None if _is_real(value) and 0 < value < 1 else f"must be a number in (0, 1), got {value!r}"


def fraction(value) -> str | None:
    """A kept fraction in ``(0, 1]``."""
    return None if _is_real(value) and 0 < value <= 1 else f"must be a number in (0, 1], got {value!r}"


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def one_of(*choices) -> Check:
    def check(value):
        return None if isinstance(value, str) and value in choices else f"must be one of {choices}, got {value!r}"

    return check


def optional(check: Check) -> Check:
    """``check``, or ``None`` (the default the method fills in)."""

    def check_or_none(value):
        message = None if value is None else check(value)
        return None if message is None else message.replace("must be", "must be None or", 1)

    return check_or_none


def sizes(value) -> str | None:
    """Hidden layer sizes: a sequence of positive integers (empty: no hidden layer)."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and all(_is_int(v) and v >= 1 for v in value)
    return None if ok else f"must be a sequence of positive integers (layer sizes), got {value!r}"


def graph_matrix(value) -> str | None:
    """``None`` or a symmetric boolean ``(M, M)`` adjacency (tensor, array or nested lists)."""
    if value is None:
        return None
    import torch

    try:
        matrix = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        matrix = None
    if matrix is None or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        return f"must be None or a square boolean (M, M) adjacency matrix, got {value!r}"
    if not bool(((matrix == 0) | (matrix == 1)).all()):
        return "must hold only True/False (or 0/1) entries"
    if not torch.equal(matrix.bool(), matrix.bool().T):
        return "must be symmetric (an edge i-j is an edge j-i)"
    return None


def field_problems(config, **checks: Check) -> list[str]:
    """``"<field> <what is wrong>"`` for every field of ``config`` whose check fails."""
    out = []
    for name, check in checks.items():
        message = check(getattr(config, name))
        if message is not None:
            out.append(f"{name} {message}")
    return out
