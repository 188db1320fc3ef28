"""Distance-field primitives of the bicycle drawings and their anti-aliased compositing.

Each primitive holds per-design tensors in output pixel units: points ``(m, 2)`` (column x,
row y), scalars ``(m,)``. ``sdf(x, y)`` takes sample coordinates ``x`` ``(m, 1, W)`` and ``y``
``(m, H, 1)`` and returns the signed distance ``(m, H, W)`` to the shape (negative inside);
``bounds()`` its ``(x0, x1, y0, y1)`` box, each ``(m,)``. :func:`draw` turns a union of
primitives into ink on a supersampled grid, box-filtered to pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Ellipse", "FrontHalfRing", "Ring", "Segment", "Spokes", "draw"]


def _col(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None]


class Segment:
    """Thick segment from ``a`` to ``b`` with half width ``hw`` (round caps: a capsule)."""

    def __init__(self, a, b, half_width):
        self.a, self.b, self.hw = a, b, half_width

    def sdf(self, x, y):
        ax, ay = _col(self.a[:, 0]), _col(self.a[:, 1])
        bx, by = _col(self.b[:, 0] - self.a[:, 0]), _col(self.b[:, 1] - self.a[:, 1])
        px, py = x - ax, y - ay
        h = ((px * bx + py * by) / (bx * bx + by * by).clamp_min(1e-12)).clamp(0, 1)
        return torch.hypot(px - h * bx, py - h * by) - _col(self.hw)

    def bounds(self):
        lo, hi = torch.minimum(self.a, self.b), torch.maximum(self.a, self.b)
        return lo[:, 0] - self.hw, hi[:, 0] + self.hw, lo[:, 1] - self.hw, hi[:, 1] + self.hw


class Ring:
    """Circle of radius ``r`` drawn with half width ``hw``; ``r = 0`` with ``hw`` = a disc."""

    def __init__(self, centre, radius, half_width):
        self.c, self.r, self.hw = centre, radius, half_width

    def sdf(self, x, y):
        rho = torch.hypot(x - _col(self.c[:, 0]), y - _col(self.c[:, 1]))
        return (rho - _col(self.r)).abs() - _col(self.hw)

    def bounds(self):
        e = self.r + self.hw
        return self.c[:, 0] - e, self.c[:, 0] + e, self.c[:, 1] - e, self.c[:, 1] + e


class FrontHalfRing(Ring):
    """The half of a ring with ``x >= centre x`` (the bend of a drop bar)."""

    def sdf(self, x, y):
        cx, cy, r = _col(self.c[:, 0]), _col(self.c[:, 1]), _col(self.r)
        dx, dy = x - cx, y - cy
        on_arc = (torch.hypot(dx, dy) - r).abs()
        to_end = torch.hypot(dx, dy.abs() - r)  # nearest end: (cx, cy -+ r)
        return torch.where(dx >= 0, on_arc, to_end) - _col(self.hw)

    def bounds(self):
        e = self.r + self.hw
        return self.c[:, 0] - self.hw, self.c[:, 0] + e, self.c[:, 1] - e, self.c[:, 1] + e


class Spokes(Ring):
    """``count`` diameters of a circle of radius ``r`` at angles ``k * pi / count``."""

    def __init__(self, centre, radius, half_width, count: int):
        super().__init__(centre, radius, half_width)
        self.count = count

    def sdf(self, x, y):
        dx, dy = x - _col(self.c[:, 0]), y - _col(self.c[:, 1])
        line = None
        for k in range(self.count):
            phi = math.pi * k / self.count
            d = (dx * math.sin(phi) - dy * math.cos(phi)).abs()
            line = d if line is None else torch.minimum(line, d)
        return torch.maximum(line, torch.hypot(dx, dy) - _col(self.r)) - _col(self.hw)


class Ellipse:
    """Filled ellipse, semi-axes ``a`` (along ``angle`` from the +x axis, y down) and ``b``."""

    def __init__(self, centre, a, b, angle):
        self.c, self.a, self.b, self.angle = centre, a, b, angle

    def sdf(self, x, y):
        dx, dy = x - _col(self.c[:, 0]), y - _col(self.c[:, 1])
        cos, sin = _col(torch.cos(self.angle)), _col(torch.sin(self.angle))
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        a, b = _col(self.a), _col(self.b)
        k0 = torch.hypot(u / a, v / b)
        k1 = torch.hypot(u / (a * a), v / (b * b))
        # First-order distance, exact on the boundary; the centre itself is deep inside.
        return torch.where(k1 > 1e-9, k0 * (k0 - 1) / k1, -torch.minimum(a, b))

    def bounds(self):
        e = torch.maximum(self.a, self.b)
        return self.c[:, 0] - e, self.c[:, 0] + e, self.c[:, 1] - e, self.c[:, 1] + e


def draw(canvas: torch.Tensor, rows, parts: Sequence, size: int, supersample: int) -> None:
    """Max-composite the union of ``parts`` into ``canvas[rows]`` ``(m, size * size)``.

    The union is evaluated only in a window around it: its per-design bounding box, widened to
    the largest one of the batch so that all designs share one tensor shape.
    """
    boxes = [p.bounds() for p in parts]
    x0 = torch.stack([b[0] for b in boxes]).min(0).values
    x1 = torch.stack([b[1] for b in boxes]).max(0).values
    y0 = torch.stack([b[2] for b in boxes]).min(0).values
    y1 = torch.stack([b[3] for b in boxes]).max(0).values
    # Pixel j covers [j - 0.5, j + 0.5]; one spare pixel absorbs the soft edge.
    j0, j1 = torch.floor(x0 - 0.5).long(), torch.floor(x1 + 1.5).long()
    i0, i1 = torch.floor(y0 - 0.5).long(), torch.floor(y1 + 1.5).long()
    width = min(int((j1 - j0).max()) + 1, size)
    height = min(int((i1 - i0).max()) + 1, size)
    j0 = j0.clamp(0, size - width)
    i0 = i0.clamp(0, size - height)
    s = supersample
    sub_x = (torch.arange(width * s, dtype=canvas.dtype) + 0.5) / s - 0.5
    sub_y = (torch.arange(height * s, dtype=canvas.dtype) + 0.5) / s - 0.5
    x = (j0.to(canvas.dtype)[:, None] + sub_x)[:, None, :]
    y = (i0.to(canvas.dtype)[:, None] + sub_y)[:, :, None]
    dist = None
    for part in parts:
        d = part.sdf(x, y)
        dist = d if dist is None else torch.minimum(dist, d)
    ink = (0.5 - dist * s).clamp_(0, 1)  # soft edge one sub-sample wide
    if s > 1:
        ink = F.avg_pool2d(ink[:, None], s)[:, 0]
    index = (i0[:, None, None] + torch.arange(height)[:, None]) * size + (j0[:, None, None] + torch.arange(width))
    m = len(j0)
    target = canvas if rows is None else canvas[rows]
    target.scatter_reduce_(1, index.view(m, -1), ink.reshape(m, -1), reduce="amax")
    if rows is not None:
        canvas[rows] = target
