"""Rendering of the procedural bicycles: the five component images of every design.

Vectorised over designs: each component is a union of the distance-field primitives of
:mod:`.shapes`, evaluated for a chunk of designs at once; a Python loop runs only over the few
primitives. Key points come from :class:`~.geometry.BikeGeometry` in the 64-pixel frame and
are scaled to the output size.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

from .geometry import FRAME_SIZE, MM_PER_PIXEL, BikeGeometry
from .laws import BAR_STYLES, COMPONENTS, MIN_HALF_WIDTH, WIDTH_MM
from .shapes import Ellipse, FrontHalfRing, Ring, Segment, Spokes, draw

__all__ = ["render_bikes"]


def _render_chunk(g: BikeGeometry, size: int, supersample: int, spokes: int) -> torch.Tensor:
    """The ``n`` designs of ``g`` -> float32 ``(n, 5, size, size)`` ink (not yet clamped)."""
    n = len(g)
    k = size / FRAME_SIZE
    dtype = torch.float32

    def pt(name: str) -> torch.Tensor:  # key point in output pixels
        return torch.as_tensor((getattr(g, name) + 0.5) * k - 0.5, dtype=dtype)

    def length(values) -> torch.Tensor:  # 64-frame pixels -> output pixels
        return torch.as_tensor(np.asarray(values, float) * k, dtype=dtype)

    def mm(values) -> torch.Tensor:
        return length(np.broadcast_to(np.asarray(values, float) / MM_PER_PIXEL, (n,)))

    def hw(width_mm) -> torch.Tensor:  # half width, never below the minimum
        return torch.clamp_min(mm(np.asarray(width_mm, float) / 2), MIN_HALF_WIDTH * k)

    def unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = b - a
        return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def vec_mm(dx_mm, dy_up_mm) -> torch.Tensor:  # a physical offset -> output pixels (y down)
        return torch.stack([mm(dx_mm), -mm(dy_up_mm)], 1)

    canvases = torch.zeros(len(COMPONENTS), n, size * size, dtype=dtype)
    saddle_c, frame_c, crank_c, wheels_c, bars_c = canvases
    W = WIDTH_MM
    bb, saddle = pt("bottom_bracket"), pt("saddle")
    seat_axis = unit(bb, saddle)
    ht_top, ht_bottom = pt("head_tube_top"), pt("head_tube_bottom")
    down_axis = unit(ht_top, ht_bottom)
    rear, front = pt("rear_wheel_centre"), pt("front_wheel_centre")

    # Saddle: an ellipse centred on the saddle point, nose forward, tilted nose up.
    tilt = torch.as_tensor(-np.radians(g.saddle_tilt_deg), dtype=dtype)
    draw(saddle_c, None, [Ellipse(saddle, mm(g.saddle_length_mm / 2),
                                    torch.clamp_min(mm(W["saddle_thickness"] / 2), 0.7 * k), tilt)],
          size, supersample)

    # Frame.
    along = lambda distance_mm: bb + mm(distance_mm)[:, None] * seat_axis  # noqa: E731
    step = torch.as_tensor(g.step_through)
    top_seat = torch.where(step[:, None], along(0.4 * g.seat_tube_mm), along(g.seat_tube_mm - 25))
    top_head = torch.where(step[:, None], ht_bottom - mm(0.3 * g.head_tube_mm)[:, None] * down_axis,
                           ht_top + mm(20)[:, None] * down_axis)
    tubes = [
        (bb, pt("seat_tube_top"), "seat_tube"),
        (pt("seat_tube_top"), saddle, "seat_post"),
        (top_seat, top_head, "top_tube"),
        (bb, ht_bottom - mm(25)[:, None] * down_axis, "down_tube"),
        (ht_top, ht_bottom, "head_tube"),
        (bb, rear, "chainstay"),
        (rear, along(g.seat_tube_mm - 45), "seatstay"),
        (ht_bottom, front, "fork"),
    ]
    for a, b, name in tubes:
        draw(frame_c, None, [Segment(a, b, hw(W[name]))], size, supersample)
    draw(frame_c, None, [Ring(bb, torch.zeros(n), hw(W["bb_shell"]))], size, supersample)

    # Crank: point-symmetric about the bottom bracket.
    phi = torch.as_tensor(np.radians(g.crank_angle_deg), dtype=dtype)
    arm = length(g.crank_length_px)[:, None] * torch.stack([torch.cos(phi), -torch.sin(phi)], 1)
    half_pedal = vec_mm(W["pedal_length"] / 2, 0)
    parts = [
        Ring(bb, length(g.chainring_radius_px), hw(W["chainring"])),
        Segment(bb - arm, bb + arm, hw(W["crank_arm"])),
        Segment(bb + arm - half_pedal, bb + arm + half_pedal, hw(W["pedal"])),
        Segment(bb - arm - half_pedal, bb - arm + half_pedal, hw(W["pedal"])),
        Ring(bb, torch.zeros(n), hw(W["spindle"])),
    ]
    draw(crank_c, None, parts, size, supersample)

    # Wheels: tyre, rim, hub and spokes, identical for both wheels.
    tyre_hw = hw(g.tyre_width_mm)
    outer = length(g.wheel_radius_px)
    rim = length(g.rim_radius_px)
    for centre in (rear, front):
        parts = [Ring(centre, outer - tyre_hw, tyre_hw), Ring(centre, rim, hw(W["rim"]))]
        parts.append(Ring(centre, torch.zeros(n), hw(W["hub"])))
        if spokes:
            parts.append(Spokes(centre, rim, mm(W["spoke"] / 2).clamp_min(0.2 * k), spokes))
        draw(wheels_c, None, parts, size, supersample)

    # Handlebars: steerer with spacers, stem, then the bars by style.
    steerer_top, clamp = pt("steerer_top"), pt("handlebar")
    cap = steerer_top - mm(W["stem"] / 2)[:, None] * down_axis
    draw(bars_c, None, [Segment(ht_top, cap, hw(W["steerer"])), Segment(steerer_top, clamp, hw(W["stem"]))],
          size, supersample)
    style = g.bar_style_index
    reach, rise = g.bar_reach_mm, g.bar_rise_mm
    for index, name in enumerate(BAR_STYLES):
        rows = np.flatnonzero(style == index)
        if len(rows) == 0:
            continue
        sub = lambda t: t[rows]  # noqa: E731
        c = sub(clamp)
        m = len(rows)
        bar, grip_hw = hw(np.full(n, W["bar"]))[rows], hw(np.full(n, W["grip"]))[rows]
        rows_t = torch.as_tensor(rows)
        if name == "drop":
            r = sub(mm(-rise / 2))
            straight = sub(mm(reach + rise / 2))  # reach - r
            bend_top = c + torch.stack([straight, torch.zeros(m)], 1)
            centre = bend_top + torch.stack([torch.zeros(m), r], 1)
            bottom = centre + torch.stack([torch.zeros(m), r], 1)
            tail = bottom - torch.stack([sub(mm(60)), torch.zeros(m)], 1)
            hood_base = centre + r[:, None] * torch.tensor([math.cos(math.pi / 4), -math.sin(math.pi / 4)])
            hood_tip = hood_base + sub(vec_mm(30 * math.cos(math.pi / 6), 30 * math.sin(math.pi / 6)))
            parts = [
                Segment(c, bend_top, bar),
                FrontHalfRing(centre, r, bar),
                Segment(bottom, tail, bar),
                Segment(hood_base, hood_tip, sub(hw(np.full(n, W["hood"])))),
            ]
        else:
            g_pt = c + sub(vec_mm(reach, rise))
            if name == "swept":
                bend = c + sub(vec_mm(25, 0.55 * rise))
                end = g_pt + sub(vec_mm(-80, -8))
                parts = [Segment(c, bend, bar), Segment(bend, g_pt, bar), Segment(g_pt, end, grip_hw)]
            elif name == "bmx":
                cross = c + 0.55 * (g_pt - c)
                parts = [Segment(c, g_pt, bar), Ring(cross, torch.zeros(m), bar),
                         Ring(g_pt, torch.zeros(m), grip_hw)]
            else:  # flat, riser: bar seen nearly end-on, grip and a brake lever
                lever = g_pt + sub(vec_mm(60, -25))
                parts = [Segment(c, g_pt, bar), Ring(g_pt, torch.zeros(m), grip_hw),
                         Segment(g_pt, lever, bar)]
        draw(bars_c, rows_t, parts, size, supersample)
    draw(bars_c, None, [Ring(clamp, torch.zeros(n), hw(W["stem"]))], size, supersample)
    return canvases.permute(1, 0, 2).reshape(n, len(COMPONENTS), size, size)


def render_bikes(
    geometry: BikeGeometry,
    size: int = 64,
    supersample: int = 4,
    spokes: int = 3,
    chunk_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Draw every design's five components, each into its own image of the common frame.

    Vectorised over designs (chunks of ``chunk_size``); a loop runs over the few primitives.

    Args:
        geometry: ``n`` designs (:func:`sample_bike_geometry`).
        size: output side; the 64-pixel frame is scaled by ``size / 64``.
        supersample: sub-samples per pixel side (distance fields averaged over
            ``supersample**2`` points); 1: one sample per pixel with a one-pixel soft edge.
        spokes: spoke diameters per wheel (0: none).
        chunk_size: designs drawn at once (bounds memory, not the result; small chunks stay in
            cache: 128 was fastest on one core).
        progress: tqdm bar over chunks.

    Returns:
        float32 ``(n, 5, size, size)`` in [0, 1], ink 1 on background 0, components in the
        order of ``COMPONENTS``.
    """
    if not isinstance(geometry, BikeGeometry):
        raise ValueError(f"geometry must be a BikeGeometry, got {type(geometry).__name__}")
    size, supersample, spokes = operator.index(size), operator.index(supersample), operator.index(spokes)
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if spokes < 0:
        raise ValueError(f"spokes must be >= 0, got {spokes}")
    n = len(geometry)
    out = torch.empty(n, len(COMPONENTS), size, size)
    starts = range(0, n, max(1, chunk_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="render bikes", unit="chunk")
    for start in starts:
        part = geometry[start : start + chunk_size]
        out[start : start + len(part)] = _render_chunk(part, size, supersample, spokes)
    return out.clamp_(0, 1)
