"""Geometry of the procedural bicycles: the common frame and the sampling of designs.

A design is sampled in millimetres and degrees from the laws of :mod:`.laws` (documented in
``docs/data/bikes.md``), assembled with the dependencies of a real bike (axles on the ground,
fork solved so the front axle reaches it, saddle on the seat-tube line, ...) and placed in the
frame shared by all designs: the ground line at row ``GROUND_ROW``, the axle midpoint at column
``ORIGIN_X``, ``MM_PER_PIXEL`` millimetres per pixel of the ``FRAME_SIZE`` x ``FRAME_SIZE``
frame. One scale for all designs, so position and size carry information.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, fields, replace

import numpy as np

from .._store import derive_seed
from .laws import (
    BAR_SHAPES,
    BAR_STYLES,
    BARS_BY_TYPE,
    BIKE_TYPES,
    LAWS,
    NUM_UNIFORMS,
    SEED_NAMESPACE,
    SIZE_LINKED_TYPES,
    STEP_THROUGH_PROB,
    TYPE_PROBS,
    WHEELS,
    WIDTH_MM,
)

__all__ = ["BikeGeometry", "FRAME_SIZE", "GROUND_ROW", "MM_PER_PIXEL", "ORIGIN_X", "mm_to_pixels",
           "pixels_to_mm", "sample_bike_geometry"]

FRAME_SIZE = 64
MM_PER_PIXEL = 36.0
#: Pixel coordinates of the frame origin: the axle midpoint (x) on the ground line (y).
ORIGIN_X = 31.5
GROUND_ROW = 49.0


@dataclass
class BikeGeometry:
    """Parameters and key points of ``n`` designs; every field has shape ``(n,)`` or ``(n, 2)``.

    Fields ending in ``_mm`` / ``_deg`` are physical (millimetres / degrees, lengths as in a
    geometry chart); ``_px`` fields and the key points are in pixel units of the common 64x64
    frame (key points ``(n, 2)``: column ``x`` and row ``y`` of pixel centres, rows growing
    downwards). ``type_index`` indexes ``BIKE_TYPES``, ``bar_style_index`` ``BAR_STYLES``.
    """

    type_index: np.ndarray
    bar_style_index: np.ndarray
    step_through: np.ndarray
    frame_size: np.ndarray
    wheel_bsd_mm: np.ndarray
    tyre_width_mm: np.ndarray
    wheel_diameter_mm: np.ndarray
    bb_drop_mm: np.ndarray
    bb_height_mm: np.ndarray
    chainstay_mm: np.ndarray
    stack_mm: np.ndarray
    reach_mm: np.ndarray
    head_angle_deg: np.ndarray
    head_tube_mm: np.ndarray
    fork_offset_mm: np.ndarray
    fork_length_mm: np.ndarray
    trail_mm: np.ndarray
    seat_angle_deg: np.ndarray
    seat_tube_mm: np.ndarray
    saddle_height_mm: np.ndarray
    saddle_length_mm: np.ndarray
    saddle_tilt_deg: np.ndarray
    spacer_mm: np.ndarray
    stem_length_mm: np.ndarray
    stem_angle_deg: np.ndarray
    bar_reach_mm: np.ndarray
    bar_rise_mm: np.ndarray
    crank_length_mm: np.ndarray
    chainring_teeth: np.ndarray
    chainring_radius_mm: np.ndarray
    crank_angle_deg: np.ndarray
    wheelbase_mm: np.ndarray
    front_centre_mm: np.ndarray
    wheel_radius_px: np.ndarray
    rim_radius_px: np.ndarray
    crank_length_px: np.ndarray
    chainring_radius_px: np.ndarray
    bottom_bracket: np.ndarray
    rear_wheel_centre: np.ndarray
    front_wheel_centre: np.ndarray
    seat_tube_top: np.ndarray
    saddle: np.ndarray
    head_tube_top: np.ndarray
    head_tube_bottom: np.ndarray
    steerer_top: np.ndarray
    handlebar: np.ndarray
    grip: np.ndarray

    def __len__(self) -> int:
        return len(self.type_index)

    def __getitem__(self, index) -> "BikeGeometry":
        """The designs selected by ``index`` (slice, integer array or boolean mask)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def type_name(self) -> np.ndarray:
        """(n,) names from ``BIKE_TYPES``."""
        return np.asarray(BIKE_TYPES)[self.type_index]

    @property
    def bar_style(self) -> np.ndarray:
        """(n,) names from ``BAR_STYLES``."""
        return np.asarray(BAR_STYLES)[self.bar_style_index]

    def to_columns(self) -> dict[str, np.ndarray]:
        """One ``(n,)`` array per column (key points split into ``{name}_x`` and ``{name}_y``)."""
        out: dict[str, np.ndarray] = {"type": self.type_name, "bar_style": self.bar_style}
        for f in fields(self):
            value = getattr(self, f.name)
            if value.ndim == 2:
                out[f"{f.name}_x"], out[f"{f.name}_y"] = value[:, 0], value[:, 1]
            else:
                out[f.name] = value
        return out


def mm_to_pixels(x_mm, y_mm) -> np.ndarray:
    """Frame millimetres (x forward from the axle midpoint, y up from the ground) -> pixels ``(..., 2)``."""
    x_mm, y_mm = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(y_mm, float))
    return np.stack([ORIGIN_X + x_mm / MM_PER_PIXEL, GROUND_ROW - y_mm / MM_PER_PIXEL], -1)


def pixels_to_mm(points) -> np.ndarray:
    """Pixel points ``(..., 2)`` (x, y) of the 64x64 frame -> millimetres ``(..., 2)`` (x forward, y up)."""
    p = np.asarray(points, float)
    return np.stack([(p[..., 0] - ORIGIN_X) * MM_PER_PIXEL, (GROUND_ROW - p[..., 1]) * MM_PER_PIXEL], -1)


def _categorical(u: np.ndarray, probs) -> np.ndarray:
    """Uniforms ``u`` ``(m,)`` -> category indices ``(m,)`` with the (normalised) ``probs``."""
    edges = np.cumsum(probs)
    return np.minimum(np.searchsorted(edges / edges[-1], u, side="right"), len(probs) - 1)


def sample_bike_geometry(n: int, seed: int = 0, stream: str = "") -> BikeGeometry:
    """Draw ``n`` designs from the laws of :mod:`.laws` (``docs/data/bikes.md``).

    Every design uses its own row of uniforms, so the first ``k`` designs of ``n`` are those of
    ``sample_bike_geometry(k, seed)``; the same ``(seed, stream)`` gives identical numbers.

    Args:
        n: number of designs (>= 0).
        seed: int seed.
        stream: a name mixed into the seed (``make_bike_splits`` uses ``"train"`` / ``"test"``).

    Returns:
        :class:`BikeGeometry` with ``(n,)`` parameters and ``(n, 2)`` pixel key points.
    """
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seed = operator.index(seed)
    # No stream: the tag list stays empty (".../{seed}", not ".../{seed}/"), as since version 1.
    rng = np.random.default_rng(derive_seed(SEED_NAMESPACE, seed, *([stream] if stream else [])))
    u = rng.random((n, NUM_UNIFORMS))
    columns = iter(range(NUM_UNIFORMS))

    def col() -> np.ndarray:
        return u[:, next(columns)]

    kind = _categorical(col(), TYPE_PROBS)
    names = np.asarray(BIKE_TYPES)[kind]
    size = col()

    def by_type(ranges, v: np.ndarray, link=None, linked_types=BIKE_TYPES) -> np.ndarray:
        lo = np.array([ranges[k][0] for k in range(len(BIKE_TYPES))], float)[kind]
        hi = np.array([ranges[k][1] for k in range(len(BIKE_TYPES))], float)[kind]
        t = v
        if link is not None:
            s = size if link == "size" else 1.0 - size
            t = np.where(np.isin(names, list(linked_types)), 0.7 * s + 0.3 * v, v)
        return lo + (hi - lo) * t

    # Wheel option: BSD, tyre, BB drop and fork offset depend on it.
    u_wheel, u_tyre, u_drop, u_offset = col(), col(), col(), col()
    bsd, tyre, drop, offset = (np.empty(n) for _ in range(4))
    for k, name in enumerate(BIKE_TYPES):
        sel = kind == k
        options = WHEELS[name]
        choice = _categorical(u_wheel[sel], [o[1] for o in options])
        table = np.array([[o[0], *o[2], *o[3], *o[4]] for o in options], float)[choice]
        bsd[sel] = table[:, 0]
        tyre[sel] = table[:, 1] + (table[:, 2] - table[:, 1]) * u_tyre[sel]
        drop[sel] = table[:, 3] + (table[:, 4] - table[:, 3]) * u_drop[sel]
        offset[sel] = table[:, 5] + (table[:, 6] - table[:, 5]) * u_offset[sel]
    p = {}
    for name, (link, ranges) in LAWS.items():
        linked = SIZE_LINKED_TYPES.get(name, BIKE_TYPES)
        p[name] = by_type(ranges, col(), link, linked)
    # Teeth: an integer uniform on lo..hi, from the same uniform as the continuous draw.
    lo_t = np.array([r[0] for r in LAWS["chainring_teeth"][1]])[kind]
    hi_t = np.array([r[1] for r in LAWS["chainring_teeth"][1]])[kind]
    v_teeth = (p["chainring_teeth"] - lo_t) / (hi_t - lo_t)
    teeth = np.minimum(lo_t + np.floor((hi_t - lo_t + 1) * v_teeth), hi_t)
    u_style, u_bar_reach, u_bar_rise, u_step = col(), col(), col(), col()
    style = np.empty(n, np.int64)
    for k, name in enumerate(BIKE_TYPES):
        sel = kind == k
        options = BARS_BY_TYPE[name]
        pick = _categorical(u_style[sel], [o[1] for o in options])
        style[sel] = np.array([BAR_STYLES.index(o[0]) for o in options])[pick]
    shapes = np.array([[*BAR_SHAPES[s][0], *BAR_SHAPES[s][1]] for s in BAR_STYLES], float)[style]
    bar_reach = shapes[:, 0] + (shapes[:, 1] - shapes[:, 0]) * u_bar_reach
    bar_rise = shapes[:, 2] + (shapes[:, 3] - shapes[:, 2]) * u_bar_rise
    step_prob = np.array([STEP_THROUGH_PROB.get(t, 0.0) for t in BIKE_TYPES])[kind]
    step_through = u_step < step_prob

    # Assembly in millimetres, BB at x = 0, y up from the ground.
    radius = bsd / 2 + tyre
    bb_height = radius - drop
    rear_x = -np.sqrt(p["chainstay_mm"] ** 2 - drop**2)
    theta = np.radians(p["head_angle_deg"])
    down_axis = np.stack([np.cos(theta), -np.sin(theta)], -1)  # down the steering axis
    forward_normal = np.stack([np.sin(theta), np.cos(theta)], -1)
    bb = np.stack([np.zeros(n), bb_height], -1)
    ht_top = bb + np.stack([p["reach_mm"], p["stack_mm"]], -1)
    ht_bottom = ht_top + p["head_tube_mm"][:, None] * down_axis
    fork_length = (ht_bottom[:, 1] + offset * np.cos(theta) - radius) / np.sin(theta)
    front = ht_bottom + fork_length[:, None] * down_axis + offset[:, None] * forward_normal
    trail = (radius * np.cos(theta) - offset) / np.sin(theta)
    alpha = np.radians(p["seat_angle_deg"])
    seat_axis = np.stack([-np.cos(alpha), np.sin(alpha)], -1)
    saddle_height = p["seat_tube_mm"] + p["post_mm"]
    seat_top = bb + p["seat_tube_mm"][:, None] * seat_axis
    saddle = bb + saddle_height[:, None] * seat_axis
    steerer_top = ht_top - (p["spacer_mm"] + WIDTH_MM["stem"] / 2)[:, None] * down_axis
    beta = np.radians(p["stem_angle_deg"])
    stem_dir = np.cos(beta)[:, None] * forward_normal - np.sin(beta)[:, None] * down_axis
    clamp = steerer_top + p["stem_length_mm"][:, None] * stem_dir
    grip = clamp + np.stack([bar_reach, bar_rise], -1)
    is_drop = style == BAR_STYLES.index("drop")
    hood = clamp + np.stack([bar_reach - (1 - math.cos(math.pi / 4)) * -bar_rise / 2,
                             bar_rise / 2 + math.sin(math.pi / 4) * -bar_rise / 2], -1)
    grip = np.where(is_drop[:, None], hood, grip)
    rear = np.stack([rear_x, radius], -1)
    shift = np.stack([-(rear_x + front[:, 0]) / 2, np.zeros(n)], -1)  # axle midpoint to x = 0

    def px(point_mm: np.ndarray) -> np.ndarray:
        q = point_mm + shift
        return mm_to_pixels(q[:, 0], q[:, 1])

    chainring_radius = 12.7 / (2 * np.sin(np.pi / teeth))  # pitch radius of a 1/2-inch chain
    return BikeGeometry(
        type_index=kind.astype(np.int64),
        bar_style_index=style,
        step_through=step_through,
        frame_size=size,
        wheel_bsd_mm=bsd,
        tyre_width_mm=tyre,
        wheel_diameter_mm=2 * radius,
        bb_drop_mm=drop,
        bb_height_mm=bb_height,
        chainstay_mm=p["chainstay_mm"],
        stack_mm=p["stack_mm"],
        reach_mm=p["reach_mm"],
        head_angle_deg=p["head_angle_deg"],
        head_tube_mm=p["head_tube_mm"],
        fork_offset_mm=offset,
        fork_length_mm=fork_length,
        trail_mm=trail,
        seat_angle_deg=p["seat_angle_deg"],
        seat_tube_mm=p["seat_tube_mm"],
        saddle_height_mm=saddle_height,
        saddle_length_mm=p["saddle_length_mm"],
        saddle_tilt_deg=p["saddle_tilt_deg"],
        spacer_mm=p["spacer_mm"],
        stem_length_mm=p["stem_length_mm"],
        stem_angle_deg=p["stem_angle_deg"],
        bar_reach_mm=bar_reach,
        bar_rise_mm=bar_rise,
        crank_length_mm=p["crank_length_mm"],
        chainring_teeth=teeth.astype(np.int64),
        chainring_radius_mm=chainring_radius,
        crank_angle_deg=p["crank_angle_deg"],
        wheelbase_mm=front[:, 0] - rear_x,
        front_centre_mm=np.hypot(front[:, 0], front[:, 1] - bb_height),
        wheel_radius_px=radius / MM_PER_PIXEL,
        rim_radius_px=bsd / 2 / MM_PER_PIXEL,
        crank_length_px=p["crank_length_mm"] / MM_PER_PIXEL,
        chainring_radius_px=chainring_radius / MM_PER_PIXEL,
        bottom_bracket=px(bb),
        rear_wheel_centre=px(rear),
        front_wheel_centre=px(front),
        seat_tube_top=px(seat_top),
        saddle=px(saddle),
        head_tube_top=px(ht_top),
        head_tube_bottom=px(ht_bottom),
        steerer_top=px(steerer_top),
        handlebar=px(clamp),
        grip=px(grip),
    )
