"""Bicycle assemblies: five component images per design, procedural or BIKED-style from disk.

Components, in this order everywhere: ``COMPONENTS = ("saddle", "frame", "crank", "wheels",
"handlebars")``. Every image is ``(size, size)`` grayscale with **ink 1 on background 0**, all
five of a design drawn in one common frame, so that the overlay of the five is the whole bike.

Procedural generator (the embedded default data set)
----------------------------------------------------
A design is sampled in millimetres and degrees (``sample_bike_geometry``), then placed in a
frame shared by all designs: the bike stands on a common ground line, centred horizontally on
the midpoint of its two axles, at ``MM_PER_PIXEL = 36`` mm per pixel of the 64x64 frame
(``x_px = 31.5 + x_mm / 36``, ``y_px = 49 - y_mm / 36``; pixel coordinates are the column
``x`` and row ``y`` of pixel centres, ``(0, 0)`` is the centre of the top-left pixel). One
scale for all designs, so position and size carry information: a BMX is about 42 px long, a
29-inch mountain bike up to 58 px; the largest designs keep more than 2 px of margin.

Laws. A type is drawn first (``road`` 0.35, ``mountain`` 0.30, ``city`` 0.25, ``bmx`` 0.10),
then a wheel option and one latent frame size ``s ~ U(0, 1)``. Each parameter is uniform on its
type's range ``[lo, hi]``; parameters marked *size* use ``lo + (hi - lo) (0.7 s + 0.3 v)``
with ``v ~ U(0, 1)`` of its own (*-size*: the same with ``1 - s``), so a bigger frame has a
taller stack, longer reach, seat tube and head tube together. Ranges (mm unless degrees):

=================  ==============  ==============  ==============  ==============
parameter          road            mountain        city            bmx
=================  ==============  ==============  ==============  ==============
wheel (BSD)        622 (700c)      584 (27.5") .45 622 (700c) .7   406 (20")
                                   622 (29") .55   559 (26") .3
tyre width         23-32           56-66           35-47 / 40-54   48-61
BB drop            65-78           20-40 / 45-65   60-75 / 45-60   -30 to -5 (rise)
fork offset        43-50           37-44 / 42-51   45-55 / 40-50   25-32
chainstay          403-420         425-450         440-470         335-370
stack (size)       515-620         590-650         590-690         385-420
reach (size)       365-400         410-495         340-400         370-420
head angle         71.5-73.5 size  64-68           69-71.5         74.5-75.5
head tube          110-200 size    95-135 size     150-220 size    115-135
seat angle         72.5-74.5 -size 74-77.5         70-73 -size     69-72
seat tube          470-590 size    380-480 size    440-560 size    180-230
seat post exposed  140-240         200-320         120-240         80-160
saddle length      240-285         240-275         250-280         200-230
saddle tilt        -3 to 3         -3 to 3         -3 to 3         0-15
spacers            5-35            5-25            10-40           0-15
stem length        90-130 size     35-60           60-100          45-55
stem angle         -17 to -6       -6 to 6         10-35           -2 to 2
crank length       165-175 size    165-175 size    165-175 size    165-180
chainring teeth    46-53           28-36           38-46           25-30
bars               drop            flat .35 /      swept .7 /      bmx riser
                                   riser .65       flat .3
=================  ==============  ==============  ==============  ==============

Bars (``bar_reach_mm`` forward of the clamp, ``bar_rise_mm`` above it): drop: reach 70-90,
drop 120-140 (``bar_rise_mm = -drop``); flat: rise 0-15, backsweep 5-25; riser: rise 20-40,
backsweep 15-35; swept (city): rise 40-100, backsweep 120-220; bmx: rise 200-250, backsweep
30-70 (``bar_reach_mm = -backsweep``). City frames are step-through with probability 0.5. The
crank angle is uniform on [0, 180) degrees.

Dependencies (``y`` up from the ground, ``x`` forward): the wheel radius is ``R = BSD / 2 +
tyre``, both axles at height ``R``; the bottom bracket (BB, the crank centre) at height
``R - drop``; the rear wheel centre is the rear dropout, at chainstay length from the BB; the
head-tube top is at ``BB + (reach, stack)``, the head-tube bottom ``head_tube`` further down the
steering axis (head angle from the horizontal); the fork continues along the axis with
``fork_offset`` perpendicular to it, its length chosen so that the front axle sits at height
``R`` (``fork_length_mm``, with the trail and the wheelbase, follows); the saddle point is on
the seat-tube line at ``saddle_height = seat_tube + exposure`` from the BB; the steerer carries
the spacers and the stem (length and angle to the perpendicular of the steering axis), whose end
is the bar clamp (``handlebar``); the bars are drawn from the clamp by style.

Drawing: each component is a union of thick segments, rings, discs, a half ring and an ellipse
given by distance fields, evaluated on a ``supersample x supersample`` grid per pixel with a one
sub-pixel soft edge and average-pooled (a box filter: grey values on edges, and the image's
centre of mass is that of the shape). Frame: seat, top, down and head tubes, chainstay,
seatstay, fork, exposed seat post and BB shell. Crank: chainring, both arms (opposite), both
pedals, spindle (point-symmetric about the BB). Wheels: tyre, rim, hub and ``spokes``
diameters. Saddle: an ellipse centred on the saddle point. Handlebars: steerer with spacers,
stem, and the bars by style.

On disk (``write_bike_assemblies``): ``{component}/{i:06d}.png`` (8-bit grayscale, ink 255 on
0), ``geometry.csv`` (one row per design: every parameter and key point), ``SHA256SUMS`` and
``manifest.json`` (written last), in a temporary directory renamed into place when complete.

BIKED-style images (``load_component_images``): a folder per component, the same file stem for
the same design; any size and mode, converted to grayscale, ink polarity normalised to 1 on 0.

Command line: ``python -m pyro_mcvae.data.bikes OUT_DIR [--num-train 10000] [--num-test 2000]
[--seed 0]`` writes ``OUT_DIR/train`` and ``OUT_DIR/test``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import operator
import os
import re
import shutil
import struct
import tempfile
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._io import finish_dataset

__all__ = [
    "BAR_STYLES",
    "BIKE_TYPES",
    "COMPONENTS",
    "MM_PER_PIXEL",
    "BikeAssemblies",
    "BikeGeometry",
    "BikeSplits",
    "ComponentImages",
    "generate_bike_assemblies",
    "load_component_images",
    "make_bike_splits",
    "mm_to_pixels",
    "pixels_to_mm",
    "read_bike_geometry",
    "render_bikes",
    "sample_bike_geometry",
    "verify_bike_assemblies",
    "write_bike_assemblies",
]

COMPONENTS = ("saddle", "frame", "crank", "wheels", "handlebars")
BIKE_TYPES = ("road", "mountain", "city", "bmx")
BAR_STYLES = ("drop", "flat", "riser", "swept", "bmx")

#: Bumped whenever the same seed would give different geometry or images.
GENERATOR_VERSION = 1
FRAME_SIZE = 64
MM_PER_PIXEL = 36.0
#: Pixel coordinates of the frame origin: the axle midpoint (x) on the ground line (y).
ORIGIN_X = 31.5
GROUND_ROW = 49.0
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
GEOMETRY_CSV = "geometry.csv"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# --------------------------------------------------------------------------- the laws

_TYPE_PROBS = (0.35, 0.30, 0.25, 0.10)
# Per type: wheel options (BSD mm, probability, tyre width, BB drop, fork offset).
_WHEELS = {
    "road": ((622, 1.0, (23, 32), (65, 78), (43, 50)),),
    "mountain": ((584, 0.45, (56, 66), (20, 40), (37, 44)), (622, 0.55, (56, 66), (45, 65), (42, 51))),
    "city": ((622, 0.7, (35, 47), (60, 75), (45, 55)), (559, 0.3, (40, 54), (45, 60), (40, 50))),
    "bmx": ((406, 1.0, (48, 61), (-30, -5), (25, 32)),),
}
# name -> (link to the frame size: None, "size" or "-size"; range per type in BIKE_TYPES order).
_LAWS = {
    "chainstay_mm": (None, ((403, 420), (425, 450), (440, 470), (335, 370))),
    "stack_mm": ("size", ((515, 620), (590, 650), (590, 690), (385, 420))),
    "reach_mm": ("size", ((365, 400), (410, 495), (340, 400), (370, 420))),
    "head_angle_deg": ("size", ((71.5, 73.5), (64, 68), (69, 71.5), (74.5, 75.5))),
    "head_tube_mm": ("size", ((110, 200), (95, 135), (150, 220), (115, 135))),
    "seat_angle_deg": ("-size", ((72.5, 74.5), (74, 77.5), (70, 73), (69, 72))),
    "seat_tube_mm": ("size", ((470, 590), (380, 480), (440, 560), (180, 230))),
    "post_mm": (None, ((140, 240), (200, 320), (120, 240), (80, 160))),
    "saddle_length_mm": (None, ((240, 285), (240, 275), (250, 280), (200, 230))),
    "saddle_tilt_deg": (None, ((-3, 3), (-3, 3), (-3, 3), (0, 15))),
    "spacer_mm": (None, ((5, 35), (5, 25), (10, 40), (0, 15))),
    "stem_length_mm": ("size", ((90, 130), (35, 60), (60, 100), (45, 55))),
    "stem_angle_deg": (None, ((-17, -6), (-6, 6), (10, 35), (-2, 2))),
    "crank_length_mm": ("size", ((165, 175), (165, 175), (165, 175), (165, 180))),
    "chainring_teeth": (None, ((46, 53), (28, 36), (38, 46), (25, 30))),
    "crank_angle_deg": (None, ((0, 180),) * 4),
}
# For these laws the size link applies to the types named here only; the others are plain uniform.
_SIZE_LINKED_TYPES = {
    "head_angle_deg": {"road"},
    "head_tube_mm": {"road", "mountain", "city"},
    "seat_angle_deg": {"road", "city"},
    "seat_tube_mm": {"road", "mountain", "city"},
    "stem_length_mm": {"road"},
    "crank_length_mm": {"road", "mountain", "city"},
}
# Per type: bar styles with probabilities; per style: (reach or -backsweep range, rise range).
_BARS_BY_TYPE = {
    "road": (("drop", 1.0),),
    "mountain": (("flat", 0.35), ("riser", 0.65)),
    "city": (("swept", 0.7), ("flat", 0.3)),
    "bmx": (("bmx", 1.0),),
}
_BAR_SHAPES = {
    "drop": ((70, 90), (-140, -120)),
    "flat": ((-25, -5), (0, 15)),
    "riser": ((-35, -15), (20, 40)),
    "swept": ((-220, -120), (40, 100)),
    "bmx": ((-70, -30), (200, 250)),
}
_STEP_THROUGH_PROB = {"city": 0.5}
_NUM_UNIFORMS = 32  # columns of uniforms per design (spares keep the layout when laws grow)

# Physical widths of the drawn parts (mm); nothing is drawn thinner than _MIN_HALF_WIDTH px.
_MIN_HALF_WIDTH = 0.5
_WIDTH_MM = {
    "head_tube": 50, "down_tube": 45, "top_tube": 36, "seat_tube": 34, "chainstay": 24,
    "seatstay": 20, "fork": 34, "seat_post": 27, "bb_shell": 70, "rim": 14, "hub": 60,
    "spoke": 7, "chainring": 30, "crank_arm": 30, "pedal": 28, "spindle": 40, "pedal_length": 95,
    "saddle_thickness": 56, "steerer": 36, "stem": 36, "bar": 28, "grip": 34, "hood": 40,
}


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


def _derive_seed(seed, *tags: str) -> int:
    text = "/".join(["pyro_mcvae.bikes", str(seed), *tags]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _categorical(u: np.ndarray, probs) -> np.ndarray:
    edges = np.cumsum(probs)
    return np.minimum(np.searchsorted(edges / edges[-1], u, side="right"), len(probs) - 1)


def sample_bike_geometry(n: int, seed: int = 0, stream: str = "") -> BikeGeometry:
    """Draw ``n`` designs from the laws of the module docstring.

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
    rng = np.random.default_rng(_derive_seed(seed, stream) if stream else _derive_seed(seed))
    u = rng.random((n, _NUM_UNIFORMS))
    columns = iter(range(_NUM_UNIFORMS))

    def col() -> np.ndarray:
        return u[:, next(columns)]

    kind = _categorical(col(), _TYPE_PROBS)
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
        options = _WHEELS[name]
        choice = _categorical(u_wheel[sel], [o[1] for o in options])
        table = np.array([[o[0], *o[2], *o[3], *o[4]] for o in options], float)[choice]
        bsd[sel] = table[:, 0]
        tyre[sel] = table[:, 1] + (table[:, 2] - table[:, 1]) * u_tyre[sel]
        drop[sel] = table[:, 3] + (table[:, 4] - table[:, 3]) * u_drop[sel]
        offset[sel] = table[:, 5] + (table[:, 6] - table[:, 5]) * u_offset[sel]
    p = {}
    for name, (link, ranges) in _LAWS.items():
        linked = _SIZE_LINKED_TYPES.get(name, BIKE_TYPES)
        p[name] = by_type(ranges, col(), link, linked)
    # Teeth: an integer uniform on lo..hi, from the same uniform as the continuous draw.
    lo_t = np.array([r[0] for r in _LAWS["chainring_teeth"][1]])[kind]
    hi_t = np.array([r[1] for r in _LAWS["chainring_teeth"][1]])[kind]
    v_teeth = (p["chainring_teeth"] - lo_t) / (hi_t - lo_t)
    teeth = np.minimum(lo_t + np.floor((hi_t - lo_t + 1) * v_teeth), hi_t)
    u_style, u_bar_reach, u_bar_rise, u_step = col(), col(), col(), col()
    style = np.empty(n, np.int64)
    for k, name in enumerate(BIKE_TYPES):
        sel = kind == k
        options = _BARS_BY_TYPE[name]
        pick = _categorical(u_style[sel], [o[1] for o in options])
        style[sel] = np.array([BAR_STYLES.index(o[0]) for o in options])[pick]
    shapes = np.array([[*_BAR_SHAPES[s][0], *_BAR_SHAPES[s][1]] for s in BAR_STYLES], float)[style]
    bar_reach = shapes[:, 0] + (shapes[:, 1] - shapes[:, 0]) * u_bar_reach
    bar_rise = shapes[:, 2] + (shapes[:, 3] - shapes[:, 2]) * u_bar_rise
    step_prob = np.array([_STEP_THROUGH_PROB.get(t, 0.0) for t in BIKE_TYPES])[kind]
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
    steerer_top = ht_top - (p["spacer_mm"] + _WIDTH_MM["stem"] / 2)[:, None] * down_axis
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


# --------------------------------------------------------------------------- drawing primitives
# Each primitive holds per-design tensors in output pixel units: points (m, 2), scalars (m,).
# ``sdf(x, y)`` takes sample coordinates x (m, 1, W) and y (m, H, 1) and returns the signed
# distance (m, H, W) to the shape (negative inside); ``bounds()`` its (x0, x1, y0, y1) box.


def _col(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None]


class _Segment:
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


class _Ring:
    """Circle of radius ``r`` drawn with half width ``hw``; ``r = 0`` with ``hw`` = a disc."""

    def __init__(self, centre, radius, half_width):
        self.c, self.r, self.hw = centre, radius, half_width

    def sdf(self, x, y):
        rho = torch.hypot(x - _col(self.c[:, 0]), y - _col(self.c[:, 1]))
        return (rho - _col(self.r)).abs() - _col(self.hw)

    def bounds(self):
        e = self.r + self.hw
        return self.c[:, 0] - e, self.c[:, 0] + e, self.c[:, 1] - e, self.c[:, 1] + e


class _FrontHalfRing(_Ring):
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


class _Spokes(_Ring):
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


class _Ellipse:
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


def _draw(canvas: torch.Tensor, rows, parts: Sequence, size: int, supersample: int) -> None:
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


def _render_chunk(g: BikeGeometry, size: int, supersample: int, spokes: int) -> torch.Tensor:
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
        return torch.clamp_min(mm(np.asarray(width_mm, float) / 2), _MIN_HALF_WIDTH * k)

    def unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = b - a
        return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def vec_mm(dx_mm, dy_up_mm) -> torch.Tensor:  # a physical offset -> output pixels (y down)
        return torch.stack([mm(dx_mm), -mm(dy_up_mm)], 1)

    canvases = torch.zeros(len(COMPONENTS), n, size * size, dtype=dtype)
    saddle_c, frame_c, crank_c, wheels_c, bars_c = canvases
    W = _WIDTH_MM
    bb, saddle = pt("bottom_bracket"), pt("saddle")
    seat_axis = unit(bb, saddle)
    ht_top, ht_bottom = pt("head_tube_top"), pt("head_tube_bottom")
    down_axis = unit(ht_top, ht_bottom)
    rear, front = pt("rear_wheel_centre"), pt("front_wheel_centre")

    # Saddle: an ellipse centred on the saddle point, nose forward, tilted nose up.
    tilt = torch.as_tensor(-np.radians(g.saddle_tilt_deg), dtype=dtype)
    _draw(saddle_c, None, [_Ellipse(saddle, mm(g.saddle_length_mm / 2),
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
        _draw(frame_c, None, [_Segment(a, b, hw(W[name]))], size, supersample)
    _draw(frame_c, None, [_Ring(bb, torch.zeros(n), hw(W["bb_shell"]))], size, supersample)

    # Crank: point-symmetric about the bottom bracket.
    phi = torch.as_tensor(np.radians(g.crank_angle_deg), dtype=dtype)
    arm = length(g.crank_length_px)[:, None] * torch.stack([torch.cos(phi), -torch.sin(phi)], 1)
    half_pedal = vec_mm(W["pedal_length"] / 2, 0)
    parts = [
        _Ring(bb, length(g.chainring_radius_px), hw(W["chainring"])),
        _Segment(bb - arm, bb + arm, hw(W["crank_arm"])),
        _Segment(bb + arm - half_pedal, bb + arm + half_pedal, hw(W["pedal"])),
        _Segment(bb - arm - half_pedal, bb - arm + half_pedal, hw(W["pedal"])),
        _Ring(bb, torch.zeros(n), hw(W["spindle"])),
    ]
    _draw(crank_c, None, parts, size, supersample)

    # Wheels: tyre, rim, hub and spokes, identical for both wheels.
    tyre_hw = hw(g.tyre_width_mm)
    outer = length(g.wheel_radius_px)
    rim = length(g.rim_radius_px)
    for centre in (rear, front):
        parts = [_Ring(centre, outer - tyre_hw, tyre_hw), _Ring(centre, rim, hw(W["rim"]))]
        parts.append(_Ring(centre, torch.zeros(n), hw(W["hub"])))
        if spokes:
            parts.append(_Spokes(centre, rim, mm(W["spoke"] / 2).clamp_min(0.2 * k), spokes))
        _draw(wheels_c, None, parts, size, supersample)

    # Handlebars: steerer with spacers, stem, then the bars by style.
    steerer_top, clamp = pt("steerer_top"), pt("handlebar")
    cap = steerer_top - mm(W["stem"] / 2)[:, None] * down_axis
    _draw(bars_c, None, [_Segment(ht_top, cap, hw(W["steerer"])), _Segment(steerer_top, clamp, hw(W["stem"]))],
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
                _Segment(c, bend_top, bar),
                _FrontHalfRing(centre, r, bar),
                _Segment(bottom, tail, bar),
                _Segment(hood_base, hood_tip, sub(hw(np.full(n, W["hood"])))),
            ]
        else:
            g_pt = c + sub(vec_mm(reach, rise))
            if name == "swept":
                bend = c + sub(vec_mm(25, 0.55 * rise))
                end = g_pt + sub(vec_mm(-80, -8))
                parts = [_Segment(c, bend, bar), _Segment(bend, g_pt, bar), _Segment(g_pt, end, grip_hw)]
            elif name == "bmx":
                cross = c + 0.55 * (g_pt - c)
                parts = [_Segment(c, g_pt, bar), _Ring(cross, torch.zeros(m), bar),
                         _Ring(g_pt, torch.zeros(m), grip_hw)]
            else:  # flat, riser: bar seen nearly end-on, grip and a brake lever
                lever = g_pt + sub(vec_mm(60, -25))
                parts = [_Segment(c, g_pt, bar), _Ring(g_pt, torch.zeros(m), grip_hw),
                         _Segment(g_pt, lever, bar)]
        _draw(bars_c, rows_t, parts, size, supersample)
    _draw(bars_c, None, [_Ring(clamp, torch.zeros(n), hw(W["stem"]))], size, supersample)
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


# --------------------------------------------------------------------------- assemblies


@dataclass
class BikeAssemblies:
    """``images`` uint8 ``(n, 5, size, size)`` (ink 255 on 0, ``COMPONENTS`` order), the geometry
    behind them, ``labels`` int64 ``(n,)`` (index into ``BIKE_TYPES``) and how they were made."""

    images: torch.Tensor
    geometry: BikeGeometry
    labels: torch.Tensor
    seed: int | None = None
    stream: str = ""
    components: tuple[str, ...] = COMPONENTS

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self) -> torch.Tensor:
        """float32 ``(n, 5, size, size)`` in [0, 1] (value / 255)."""
        return self.images.float().div_(255.0)


class BikeSplits(NamedTuple):
    train: BikeAssemblies
    test: BikeAssemblies


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return torch.floor(255 * images + 0.5).clamp_(0, 255).to(torch.uint8)


def generate_bike_assemblies(
    n: int, seed: int = 0, size: int = 64, supersample: int = 4, spokes: int = 3, stream: str = ""
) -> BikeAssemblies:
    """Sample ``n`` designs and render them (see :func:`sample_bike_geometry`, :func:`render_bikes`).

    Images are stored as uint8 ``floor(255 x + 0.5)``, exactly what the PNG files hold.
    """
    geometry = sample_bike_geometry(n, seed, stream)
    images = _to_uint8(render_bikes(geometry, size, supersample, spokes))
    return BikeAssemblies(images, geometry, torch.as_tensor(geometry.type_index), seed, stream)


def make_bike_splits(n_train: int, n_test: int, seed: int = 0, **kwargs) -> BikeSplits:
    """Train and test assemblies from the independent streams ``(seed, "train")`` and ``(seed, "test")``.

    ``kwargs`` go to :func:`generate_bike_assemblies` (``size``, ``supersample``, ``spokes``).
    """
    return BikeSplits(
        generate_bike_assemblies(n_train, seed, stream="train", **kwargs),
        generate_bike_assemblies(n_test, seed, stream="test", **kwargs),
    )


# --------------------------------------------------------------------------- writing


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _encode_gray_png(image: np.ndarray) -> bytes:
    """(h, w) uint8 -> an 8-bit grayscale PNG (no filter, zlib level 9: byte-stable files)."""
    h, w = image.shape
    raw = np.zeros((h, w + 1), np.uint8)
    raw[:, 1:] = image
    head = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + _png_chunk(b"IEND", b"")


def _format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _geometry_csv(geometry: BikeGeometry, designs: Sequence[str]) -> str:
    columns = geometry.to_columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["design", *columns])
    arrays = list(columns.values())
    for i, design in enumerate(designs):
        writer.writerow([design, *(_format_value(a[i]) for a in arrays)])
    return buf.getvalue()


def read_bike_geometry(path: str | os.PathLike) -> tuple[list[str], BikeGeometry]:
    """Read a ``geometry.csv`` written by :func:`write_bike_assemblies`: design names and geometry."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / GEOMETRY_CSV
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the geometry table ({err})") from None
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header row and one row per design")
    header, body = rows[0], rows[1:]
    table = {name: [r[j] for r in body] for j, name in enumerate(header)}
    values = {}
    template = sample_bike_geometry(1)  # the dtype and shape of every field
    try:
        for f in fields(BikeGeometry):
            probe = getattr(template, f.name)
            if probe.ndim == 2:
                values[f.name] = np.stack([np.array(table[f"{f.name}_x"], float),
                                           np.array(table[f"{f.name}_y"], float)], -1)
            elif probe.dtype == bool:
                values[f.name] = np.array(table[f.name], int).astype(bool)
            else:
                values[f.name] = np.array(table[f.name], probe.dtype)
    except KeyError as err:
        raise ValueError(f"{path}: column {err.args[0]!r} is missing") from None
    except ValueError as err:
        raise ValueError(f"{path}: malformed value ({err})") from None
    return table.get("design", [str(i) for i in range(len(body))]), BikeGeometry(**values)


def write_bike_assemblies(
    out_dir: str | os.PathLike,
    assemblies: BikeAssemblies,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Write ``{component}/{i:06d}.png``, ``geometry.csv``, ``SHA256SUMS`` and ``manifest.json``.

    Everything goes to a hidden temporary sibling of ``out_dir`` that is renamed to ``out_dir``
    at the end, with the manifest written last, so an interrupted run leaves no ``out_dir``.

    Args:
        out_dir: target directory (must not exist unless ``overwrite``).
        assemblies: from :func:`generate_bike_assemblies` (uint8 images, ink 255 on 0).
        overwrite: replace an existing ``out_dir``.
        progress: tqdm bar over the files written.
        workers: threads encoding and writing PNGs.

    Returns:
        ``out_dir`` as a Path.
    """
    images = assemblies.images
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"assemblies.images must be uint8 (n, {len(COMPONENTS)}, size, size), got {got}")
    if images.shape[1] != len(assemblies.components) or len(images) != len(assemblies.geometry):
        raise ValueError(
            f"assemblies.images {tuple(images.shape)} must hold one image per component "
            f"({len(assemblies.components)}) for each of the {len(assemblies.geometry)} designs"
        )
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    n = len(images)
    designs = [f"{i:06d}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    bar = None
    try:
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n * images.shape[1], desc="bike PNG", unit="img")
        sums: list[tuple[str, str]] = []
        array = images.numpy()
        for k, component in enumerate(assemblies.components):
            folder = tmp / component
            folder.mkdir()

            def work(start: int, k=k, folder=folder, component=component) -> list[tuple[str, str]]:
                out = []
                for i in range(start, min(start + 1000, n)):
                    data = _encode_gray_png(array[i, k])
                    (folder / f"{designs[i]}.png").write_bytes(data)
                    out.append((f"{component}/{designs[i]}.png", hashlib.sha256(data).hexdigest()))
                if bar is not None:
                    bar.update(len(out))
                return out

            with ThreadPoolExecutor(max(1, workers)) as pool:
                sums += [item for part in pool.map(work, range(0, n, 1000)) for item in part]
        if bar is not None:
            bar.close()
        csv_bytes = _geometry_csv(assemblies.geometry, designs).encode()
        (tmp / GEOMETRY_CSV).write_bytes(csv_bytes)
        sums.append((GEOMETRY_CSV, hashlib.sha256(csv_bytes).hexdigest()))
        sums_text = "".join(f"{digest}  {path}\n" for path, digest in sums).encode()
        (tmp / CHECKSUMS).write_bytes(sums_text)
        labels = assemblies.labels.long()
        manifest = {
            "dataset": "procedural bicycle assemblies (pyro_mcvae)",
            "generator_version": GENERATOR_VERSION,
            "seed": assemblies.seed,
            "stream": assemblies.stream,
            "designs": n,
            "size": int(images.shape[-1]),
            "components": list(assemblies.components),
            "ink": "255 on background 0",
            "file_names": "{component}/{design}.png, design = {i:06d}",
            "types": dict(zip(BIKE_TYPES, torch.bincount(labels, minlength=len(BIKE_TYPES)).tolist())),
            "frame": {"mm_per_pixel_at_64": MM_PER_PIXEL, "origin_x_px": ORIGIN_X, "ground_row_px": GROUND_ROW},
            "checksums": {"file": CHECKSUMS, "files": len(sums), "sha256": hashlib.sha256(sums_text).hexdigest()},
        }
        finish_dataset(tmp, out_dir, manifest)
    except BaseException:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def verify_bike_assemblies(root: str | os.PathLike) -> None:
    """Check every file under ``root`` against ``SHA256SUMS`` and ``manifest.json``.

    Raises:
        ValueError: naming the first missing, changed or unlisted file, or an incomplete set.
    """
    root = Path(root).expanduser()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} is missing: not a complete bike set (interrupted writing?)")
    try:
        manifest = json.loads(manifest_path.read_text())
        check = manifest["checksums"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{manifest_path}: unreadable manifest ({err})") from None
    if manifest.get("complete") is not True:
        raise ValueError(f"{manifest_path}: the set is not marked complete")
    sums_path = root / check["file"]
    if not sums_path.is_file():
        raise ValueError(f"{sums_path} is missing (listed in {manifest_path})")
    if hashlib.sha256(sums_path.read_bytes()).hexdigest() != check["sha256"]:
        raise ValueError(f"{sums_path} was modified: its sha256 differs from the one in {manifest_path}")
    listed = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{sums_path}, line {number}: expected '<sha256>  <path>', got {line!r}")
        listed[rel] = digest
    if len(listed) != check["files"]:
        raise ValueError(f"{sums_path} lists {len(listed)} files, the manifest says {check['files']}")
    for rel, digest in listed.items():
        path = root / rel
        if not path.is_file():
            raise ValueError(f"{path} is missing (listed in {sums_path})")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ValueError(f"{path} was modified: sha256 differs from {sums_path}")
    for component in manifest.get("components", []):
        for name in sorted(os.listdir(root / component)):
            if not name.startswith(".") and f"{component}/{name}" not in listed:
                raise ValueError(f"{root / component / name} is not listed in {sums_path} (an extra file)")


# --------------------------------------------------------------------------- BIKED-style loading


@dataclass
class ComponentImages:
    """``images`` float32 ``(N, K, size, size)`` in [0, 1], ink 1 on 0; ``designs`` the sorted file
    stems; ``components`` the K names; ``inverted`` bool ``(N, K)``: whether a file was read as
    dark ink on a light background and inverted."""

    images: torch.Tensor
    designs: list[str]
    components: list[str]
    inverted: torch.Tensor

    def __len__(self) -> int:
        return len(self.designs)


def _natural_key(text: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _scan_component_folder(folder: Path, component: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(
            f"{folder} not found: expected the folder of component {component!r} "
            "(pass names={'" + component + "': 'FolderName', ...} when it is called otherwise)"
        )
    found: dict[str, Path] = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if entry.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise ValueError(f"{folder}: design {path.stem!r} appears twice ({found[path.stem].name} and {entry})")
        found[path.stem] = path
    if not found:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) for component {component!r}")
    return found


def _read_gray(path: Path) -> np.ndarray:
    """One image file -> float32 (h, w) in [0, 1]; transparency composited over white."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, np.float32) / 65535.0
            elif im.mode == "F":
                arr = np.asarray(im, np.float32)
                arr = arr / 255.0 if arr.size and arr.max() > 1 else arr
            else:
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, rgba)
                arr = np.asarray(im.convert("L"), np.float32) / 255.0
    except FileNotFoundError:
        raise ValueError(f"{path}: file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, zlib.error) as err:
        raise ValueError(f"{path}: unreadable or corrupt image ({err})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{path}: could not read a 2-D grayscale image (got shape {arr.shape})")
    return np.clip(arr, 0, 1)


def _to_square(arr: np.ndarray, size: int, fit: str) -> np.ndarray:
    from PIL import Image

    h, w = arr.shape
    if fit == "pad" and h != w:
        side = max(h, w)
        canvas = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = arr
        arr, h, w = canvas, side, side
    if (h, w) == (size, size):
        return arr
    # Box (area) filter when shrinking: no ringing, and ink mass and centre of mass are kept.
    shrinking = h >= size and w >= size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    out = Image.fromarray(np.ascontiguousarray(arr, np.float32)).resize((size, size), resample)
    return np.clip(np.asarray(out, np.float32), 0, 1)


def load_component_images(
    root: str | os.PathLike,
    components: Sequence[str] = COMPONENTS,
    size: int = 64,
    names: Mapping[str, str] | Sequence[str] | None = None,
    invert: str | bool = "auto",
    on_missing: str = "error",
    fit: str = "pad",
    workers: int = 2,
    progress: bool = False,
) -> ComponentImages:
    """Load BIKED-style component images: a folder per component, one file stem per design.

    Each file (PNG, JPEG, ... any size and mode) becomes grayscale (luma; transparency over
    white), ink polarity is normalised to ink 1 on background 0, it is padded to a square
    (``fit="pad"``, centred, with background) or stretched (``fit="stretch"``) and resized to
    ``size x size`` with Pillow (box filter when shrinking, bicubic when enlarging; files already
    ``size x size`` are not resampled). BIKED renders are dark lines on white, the generator's
    PNGs light ink on black: ``invert="auto"`` inverts an image when its median pixel is bright
    (> 0.5), ``True`` always, ``False`` never.

    Args:
        root: folder holding the component folders.
        components: the K component names, in the order of the output.
        size: output side in pixels.
        names: folder name per component, as a mapping (``{"frame": "Frame_images"}``;
            unnamed components use their own name) or a sequence aligned with ``components``.
        invert: ``"auto"``, ``True`` or ``False`` (see above).
        on_missing: ``"error"``: a design lacking a component raises; ``"skip"``: such designs
            are left out (with a warning saying how many).
        fit: ``"pad"`` or ``"stretch"`` for non-square images.
        workers: threads decoding files.
        progress: tqdm bar over files.

    Returns:
        :class:`ComponentImages` with designs sorted naturally (``"2"`` before ``"10"``).

    Raises:
        ValueError: a missing or empty folder, a design missing a component (naming both), an
            unreadable file (naming it), or a bad argument.
    """
    root = Path(root).expanduser()
    components = list(components)
    if not components or len(set(components)) != len(components):
        raise ValueError(f"components must be distinct names, at least one, got {components!r}")
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if invert not in ("auto", True, False):
        raise ValueError(f"invert must be 'auto', True or False, got {invert!r}")
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    if fit not in ("pad", "stretch"):
        raise ValueError(f"fit must be 'pad' or 'stretch', got {fit!r}")
    if names is None:
        folders = list(components)
    elif isinstance(names, Mapping):
        unknown = set(names) - set(components)
        if unknown:
            raise ValueError(f"names has entries for unknown components {sorted(unknown)}; components are {components}")
        folders = [names.get(c, c) for c in components]
    else:
        folders = list(names)
        if len(folders) != len(components):
            raise ValueError(f"names lists {len(folders)} folders for {len(components)} components")
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory; expected one folder per component ({', '.join(folders)})")
    scans = [_scan_component_folder(root / folder, c) for folder, c in zip(folders, components)]
    all_designs = set().union(*scans)
    missing = {d: [c for c, scan in zip(components, scans) if d not in scan] for d in all_designs}
    missing = {d: cs for d, cs in missing.items() if cs}
    if missing:
        first = sorted(missing, key=_natural_key)[:10]
        listing = "; ".join(f"{d}: {', '.join(missing[d])}" for d in first)
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        if on_missing == "error":
            raise ValueError(
                f"{len(missing)} design(s) under {root} lack component files: {listing}{more}; "
                "every component folder needs a file with the same stem (on_missing='skip' leaves them out)"
            )
        warnings.warn(f"skipping {len(missing)} design(s) without every component: {listing}{more}", stacklevel=2)
    designs = sorted(all_designs - set(missing), key=_natural_key)
    if not designs:
        raise ValueError(f"{root}: no design has a file in every component folder ({', '.join(folders)})")
    images = np.empty((len(designs), len(components), size, size), np.float32)
    inverted = np.zeros((len(designs), len(components)), bool)
    jobs = [(i, k, scans[k][d]) for i, d in enumerate(designs) for k in range(len(components))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="component images", unit="img")

    def work(start: int) -> None:
        part = jobs[start : start + 500]
        for i, k, path in part:
            arr = _read_gray(path)
            flip = bool(np.median(arr) > 0.5) if invert == "auto" else bool(invert)
            if flip:
                arr = 1.0 - arr
            images[i, k] = _to_square(arr, size, fit)
            inverted[i, k] = flip
        if bar is not None:
            bar.update(len(part))

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(work, range(0, len(jobs), 500)))
    finally:
        if bar is not None:
            bar.close()
    return ComponentImages(torch.from_numpy(images), designs, components, torch.from_numpy(inverted))


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m pyro_mcvae.data.bikes", description="Generate procedural bicycle assemblies (seeded)."
    )
    p.add_argument("out_dir")
    p.add_argument("--num-train", type=int, default=10000)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    splits = make_bike_splits(args.num_train, args.num_test, args.seed)
    for name, assemblies in splits._asdict().items():
        out = write_bike_assemblies(Path(args.out_dir) / name, assemblies, overwrite=args.overwrite)
        print(f"wrote {out} ({len(assemblies)} designs)")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
