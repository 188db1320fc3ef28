"""The laws of the procedural bicycles: types, parameter ranges, bar shapes and drawn widths.

Tables only; :mod:`.geometry` samples from them and :mod:`.render` draws with the widths. The
same tables, as prose, are in ``docs/data/bikes.md``. Changing a number changes every
generated design: bump ``GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

COMPONENTS = ("saddle", "frame", "crank", "wheels", "handlebars")
BIKE_TYPES = ("road", "mountain", "city", "bmx")
BAR_STYLES = ("drop", "flat", "riser", "swept", "bmx")

#: Bumped whenever the same seed would give different geometry or images.
GENERATOR_VERSION = 1
#: The random streams of the generator are named ``pyro_mcvae.bikes/{seed}[/{stream}]``.
SEED_NAMESPACE = "pyro_mcvae.bikes"

TYPE_PROBS = (0.35, 0.30, 0.25, 0.10)
# Per type: wheel options (BSD mm, probability, tyre width, BB drop, fork offset).
WHEELS = {
    "road": ((622, 1.0, (23, 32), (65, 78), (43, 50)),),
    "mountain": ((584, 0.45, (56, 66), (20, 40), (37, 44)), (622, 0.55, (56, 66), (45, 65), (42, 51))),
    "city": ((622, 0.7, (35, 47), (60, 75), (45, 55)), (559, 0.3, (40, 54), (45, 60), (40, 50))),
    "bmx": ((406, 1.0, (48, 61), (-30, -5), (25, 32)),),
}
# name -> (link to the frame size: None, "size" or "-size"; range per type in BIKE_TYPES order).
# The order is the order of the uniform columns (see geometry.sample_bike_geometry): moving or
# inserting a law changes every design.
LAWS = {
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
SIZE_LINKED_TYPES = {
    "head_angle_deg": {"road"},
    "head_tube_mm": {"road", "mountain", "city"},
    "seat_angle_deg": {"road", "city"},
    "seat_tube_mm": {"road", "mountain", "city"},
    "stem_length_mm": {"road"},
    "crank_length_mm": {"road", "mountain", "city"},
}
# Per type: bar styles with probabilities; per style: (reach or -backsweep range, rise range).
BARS_BY_TYPE = {
    "road": (("drop", 1.0),),
    "mountain": (("flat", 0.35), ("riser", 0.65)),
    "city": (("swept", 0.7), ("flat", 0.3)),
    "bmx": (("bmx", 1.0),),
}
BAR_SHAPES = {
    "drop": ((70, 90), (-140, -120)),
    "flat": ((-25, -5), (0, 15)),
    "riser": ((-35, -15), (20, 40)),
    "swept": ((-220, -120), (40, 100)),
    "bmx": ((-70, -30), (200, 250)),
}
STEP_THROUGH_PROB = {"city": 0.5}
NUM_UNIFORMS = 32  # columns of uniforms per design (spares keep the layout when laws grow)

# Physical widths of the drawn parts (mm); nothing is drawn thinner than MIN_HALF_WIDTH px.
# The stem width also places the steerer top (geometry), hence here and not in the renderer.
MIN_HALF_WIDTH = 0.5
WIDTH_MM = {
    "head_tube": 50, "down_tube": 45, "top_tube": 36, "seat_tube": 34, "chainstay": 24,
    "seatstay": 20, "fork": 34, "seat_post": 27, "bb_shell": 70, "rim": 14, "hub": 60,
    "spoke": 7, "chainring": 30, "crank_arm": 30, "pedal": 28, "spindle": 40, "pedal_length": 95,
    "saddle_thickness": 56, "steerer": 36, "stem": 36, "bar": 28, "grip": 34, "hood": 40,
}
