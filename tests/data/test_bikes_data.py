"""Bicycle assemblies: the procedural laws, the rendering against the geometry, writing and
the BIKED-style loader (all on small sets made here)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_mcvae.data import bikes
from pyro_mcvae.data._store import to_uint8
from pyro_mcvae.data.bikes import (
    BAR_STYLES,
    BIKE_TYPES,
    COMPONENTS,
    MM_PER_PIXEL,
    generate_bike_assemblies,
    load_component_images,
    make_bike_splits,
    mm_to_pixels,
    pixels_to_mm,
    read_bike_geometry,
    render_bikes,
    sample_bike_geometry,
    verify_bike_assemblies,
    write_bike_assemblies,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def geometry():
    return sample_bike_geometry(3000, seed=11)


@pytest.fixture(scope="module")
def rendered():
    """Designs of every type and bar style, drawn at 64x64."""
    g = sample_bike_geometry(240, seed=5)
    return g, render_bikes(g)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    assemblies = generate_bike_assemblies(6, seed=2)
    root = write_bike_assemblies(tmp_path_factory.mktemp("bikes") / "set", assemblies, progress=False)
    return assemblies, root


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(n, H, W) -> (n, 2) (x, y) in pixel-centre coordinates."""
    h, w = images.shape[-2:]
    mass = images.sum((-1, -2))
    x = (images.sum(-2) * torch.arange(w, dtype=images.dtype)).sum(-1) / mass
    y = (images.sum(-1) * torch.arange(h, dtype=images.dtype)).sum(-1) / mass
    return torch.stack([x, y], -1)


def mm_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1) * MM_PER_PIXEL


def angle_from_horizontal(vector_px: np.ndarray) -> np.ndarray:
    """Degrees of a pixel vector above the horizontal (rows grow downwards), folded to [0, 180)."""
    return np.degrees(np.arctan2(-vector_px[:, 1], vector_px[:, 0])) % 180


# ----------------------------------------------------------------------------- sampling


def test_same_seed_same_designs_other_seed_differs():
    a, b, c = sample_bike_geometry(40, 3), sample_bike_geometry(40, 3), sample_bike_geometry(40, 4)
    for f in dataclasses.fields(a):
        assert np.array_equal(getattr(a, f.name), getattr(b, f.name)), f.name
    assert not np.array_equal(a.saddle, c.saddle)
    prefix = sample_bike_geometry(15, 3)  # one row of uniforms per design
    assert np.array_equal(prefix.handlebar, a.handlebar[:15])
    assert torch.equal(render_bikes(a[:8]), render_bikes(b[:8]))
    assert not torch.equal(render_bikes(a[:8]), render_bikes(c[:8]))
    streams = sample_bike_geometry(40, 3, stream="train"), sample_bike_geometry(40, 3, stream="test")
    assert not np.array_equal(streams[0].saddle, streams[1].saddle)


def test_each_type_with_its_own_laws(geometry):
    g = geometry
    freq = np.bincount(g.type_index, minlength=4) / len(g)
    assert np.allclose(freq, [0.35, 0.30, 0.25, 0.10], atol=0.03)
    t = g.type_name
    assert set(np.unique(g.wheel_bsd_mm[t == "road"])) == {622}
    assert set(np.unique(g.wheel_bsd_mm[t == "mountain"])) == {584, 622}
    assert set(np.unique(g.wheel_bsd_mm[t == "city"])) == {559, 622}
    assert set(np.unique(g.wheel_bsd_mm[t == "bmx"])) == {406}
    assert set(g.bar_style[t == "road"]) == {"drop"} and set(g.bar_style[t == "bmx"]) == {"bmx"}
    assert set(g.bar_style[t == "mountain"]) == {"flat", "riser"}
    assert set(g.bar_style[t == "city"]) == {"swept", "flat"}
    assert g.step_through[t != "city"].sum() == 0 and 0.4 < g.step_through[t == "city"].mean() < 0.6
    for name, lo, hi in (("road", 23, 32), ("mountain", 56, 66), ("bmx", 48, 61)):
        tyre = g.tyre_width_mm[t == name]
        assert lo <= tyre.min() and tyre.max() <= hi
    for k, name in enumerate(BIKE_TYPES):
        sel = g.type_index == k
        for law, (_, ranges) in bikes.laws.LAWS.items():
            values = g.chainring_teeth if law == "chainring_teeth" else getattr(g, law, None)
            if values is None:  # post_mm: the saddle height minus the seat tube
                values = g.saddle_height_mm - g.seat_tube_mm
            lo, hi = ranges[k]
            assert lo - 1e-9 <= values[sel].min() and values[sel].max() <= hi + 1e-9, (name, law)
    # Typical differences between the types.
    mean = lambda v, name: v[t == name].mean()  # noqa: E731
    assert mean(g.head_angle_deg, "mountain") < mean(g.head_angle_deg, "city") < mean(g.head_angle_deg, "road")
    assert mean(g.wheelbase_mm, "bmx") < mean(g.wheelbase_mm, "road") < mean(g.wheelbase_mm, "mountain")
    assert (g.bb_drop_mm[t == "bmx"] < 0).all() and (g.bb_drop_mm[t != "bmx"] > 0).all()
    assert mean(g.chainring_teeth, "bmx") < mean(g.chainring_teeth, "mountain") < mean(g.chainring_teeth, "road")
    # A bigger frame has a taller stack and a longer seat tube.
    road = t == "road"
    assert np.corrcoef(g.frame_size[road], g.stack_mm[road])[0, 1] > 0.8
    assert np.corrcoef(g.stack_mm[road], g.seat_tube_mm[road])[0, 1] > 0.7
    # Physically sensible derived quantities.
    assert (g.trail_mm > 25).all() and (g.trail_mm < 150).all()
    assert (g.fork_length_mm > 250).all() and (g.fork_length_mm < 620).all()


def test_key_points_obey_the_dependencies(geometry):
    g = geometry
    bb, rear, front = g.bottom_bracket, g.rear_wheel_centre, g.front_wheel_centre
    radius_mm = g.wheel_diameter_mm / 2
    # Both wheels stand on the ground line; the BB sits "drop" below the axles.
    assert np.allclose(pixels_to_mm(rear)[:, 1], radius_mm) and np.allclose(pixels_to_mm(front)[:, 1], radius_mm)
    assert np.allclose(pixels_to_mm(bb)[:, 1], radius_mm - g.bb_drop_mm)
    assert np.allclose(g.wheel_radius_px * MM_PER_PIXEL, radius_mm)
    # Rear wheel centre = rear dropout, at chainstay length from the BB, behind it.
    assert np.allclose(mm_distance(rear, bb), g.chainstay_mm)
    assert (rear[:, 0] < bb[:, 0]).all() and (front[:, 0] > bb[:, 0]).all()
    assert np.allclose(mm_distance(front, rear), g.wheelbase_mm)
    assert np.allclose(mm_distance(front, bb), g.front_centre_mm)
    # Axle midpoint at the frame's origin column.
    assert np.allclose((rear[:, 0] + front[:, 0]) / 2, bikes.ORIGIN_X)
    # Saddle on the seat-tube line at saddle height; the seat tube at the seat angle.
    seat = g.seat_tube_top - bb
    cross = seat[:, 0] * (g.saddle - bb)[:, 1] - seat[:, 1] * (g.saddle - bb)[:, 0]
    assert np.abs(cross).max() < 1e-9
    assert np.allclose(mm_distance(g.saddle, bb), g.saddle_height_mm)
    assert np.allclose(mm_distance(g.seat_tube_top, bb), g.seat_tube_mm)
    assert np.allclose(180 - angle_from_horizontal(seat), g.seat_angle_deg)
    # Head tube at stack/reach from the BB, head angle and length; steerer on its axis.
    assert np.allclose(pixels_to_mm(g.head_tube_top) - pixels_to_mm(bb), np.stack([g.reach_mm, g.stack_mm], -1))
    axis = g.head_tube_top - g.head_tube_bottom
    assert np.allclose(180 - angle_from_horizontal(axis), g.head_angle_deg)
    assert np.allclose(mm_distance(g.head_tube_top, g.head_tube_bottom), g.head_tube_mm)
    steer = g.steerer_top - g.head_tube_top
    assert np.abs(steer[:, 0] * axis[:, 1] - steer[:, 1] * axis[:, 0]).max() < 1e-9
    # Front axle: fork offset perpendicular to the steering axis.
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    rel = front - g.head_tube_bottom
    assert np.allclose(np.abs(rel[:, 0] * unit[:, 1] - rel[:, 1] * unit[:, 0]) * MM_PER_PIXEL, g.fork_offset_mm)
    # Stem from the steerer to the bar clamp; the grip is where the bar style puts it.
    assert np.allclose(mm_distance(g.handlebar, g.steerer_top), g.stem_length_mm)
    other = g.bar_style != "drop"
    offset = pixels_to_mm(g.grip) - pixels_to_mm(g.handlebar)
    assert np.allclose(offset[other], np.stack([g.bar_reach_mm, g.bar_rise_mm], -1)[other])
    assert (g.handlebar[:, 1] < g.head_tube_top[:, 1]).all()  # above the head tube
    assert np.allclose(g.chainring_radius_mm, 12.7 / (2 * np.sin(np.pi / g.chainring_teeth)))


def test_mm_pixel_maps_are_inverse():
    pts = mm_to_pixels([-900.0, 0.0, 1000.0], [0.0, 500.0, 1200.0])
    assert np.allclose(pts[1], [bikes.ORIGIN_X, bikes.GROUND_ROW - 500 / MM_PER_PIXEL])
    assert np.allclose(pixels_to_mm(pts), [[-900, 0], [0, 500], [1000, 1200]])


def test_largest_designs_fit_with_a_margin():
    g = sample_bike_geometry(20000, seed=1)
    r = g.wheel_radius_px
    left, right = g.rear_wheel_centre[:, 0] - r, g.front_wheel_centre[:, 0] + r
    assert left.min() > 2.5 and right.max() < 60.5
    assert (g.rear_wheel_centre[:, 1] + r).max() < 60 and g.grip[:, 1].min() > 5 and g.saddle[:, 1].min() > 5
    # Draw the extremes: nothing may reach the border rows and columns.
    extreme = np.unique(np.concatenate([np.argsort(left)[:8], np.argsort(-right)[:8], np.argsort(g.grip[:, 1])[:8],
                                        np.argsort(g.handlebar[:, 1])[:4], np.argsort(g.saddle[:, 1])[:4]]))
    images = render_bikes(g[extreme])
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    assert border.max() == 0


# ----------------------------------------------------------------------------- rendering


def test_rendering_has_ink_grey_levels_and_empty_borders(rendered):
    g, images = rendered
    assert images.shape == (240, 5, 64, 64) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert (images.sum((-1, -2)) > 1).all(), "every component image must hold ink"
    border = torch.cat([images[..., :2, :].flatten(2), images[..., -2:, :].flatten(2),
                        images[..., :, :2].flatten(2), images[..., :, -2:].flatten(2)], -1)
    assert border.max() == 0
    grey = ((images > 0.02) & (images < 0.98)).float().sum() / (images > 0.02).float().sum()
    assert grey > 0.3, "anti-aliasing should leave many intermediate grey values"
    assert set(np.unique(g.bar_style)) == set(BAR_STYLES)
    # Size of the wheels image follows the wheel size.
    wheels = images[:, COMPONENTS.index("wheels")]
    rows_with_ink = (wheels.sum(-1) > 0.05).sum(-1).numpy()
    assert np.corrcoef(rows_with_ink, g.wheel_radius_px)[0, 1] > 0.95


def test_centres_of_mass_match_the_geometry(rendered):
    g, images = rendered
    com = {name: centre_of_mass(images[:, k]).numpy() for k, name in enumerate(COMPONENTS)}
    assert np.abs(com["crank"] - g.bottom_bracket).max() < 0.1
    midpoint = (g.rear_wheel_centre + g.front_wheel_centre) / 2
    assert np.abs(com["wheels"] - midpoint).max() < 0.1
    assert np.abs(com["saddle"] - g.saddle).max() < 0.1
    # The saddle sits on the extension of the seat tube.
    seat = g.seat_tube_top - g.bottom_bracket
    unit = seat / np.linalg.norm(seat, axis=1, keepdims=True)
    rel = com["saddle"] - g.bottom_bracket
    assert np.abs(rel[:, 0] * unit[:, 1] - rel[:, 1] * unit[:, 0]).max() < 0.1
    # The handlebars sit above the head tube's bottom, in front of the saddle; the frame
    # lies between the wheels.
    assert (com["handlebars"][:, 1] < g.head_tube_bottom[:, 1]).all()
    assert (com["handlebars"][:, 0] > g.saddle[:, 0] + 5).all()
    frame_x = com["frame"][:, 0]
    assert (frame_x > g.rear_wheel_centre[:, 0]).all() and (frame_x < g.front_wheel_centre[:, 0]).all()


def test_other_sizes_scale_the_frame(rendered):
    g, images = rendered
    big = render_bikes(g[:10], size=128, supersample=2, spokes=0)
    crank = centre_of_mass(big[:, COMPONENTS.index("crank")]).numpy()
    assert np.abs(crank - ((g.bottom_bracket[:10] + 0.5) * 2 - 0.5)).max() < 0.15
    pooled = torch.nn.functional.avg_pool2d(big, 2)
    assert (pooled - render_bikes(g[:10], spokes=0)).abs().mean() < 0.01
    fast = render_bikes(g[:10], supersample=1)
    assert (fast - images[:10]).abs().mean() < 0.02
    with pytest.raises(ValueError, match="supersample"):
        render_bikes(g, supersample=0)
    with pytest.raises(ValueError, match="BikeGeometry"):
        render_bikes(images)


# ----------------------------------------------------------------------------- writing


def test_write_layout_manifest_and_geometry_table(small_set):
    assemblies, root = small_set
    for component in COMPONENTS:
        assert sorted(p.name for p in (root / component).iterdir()) == [f"{i:06d}.png" for i in range(6)]
    with Image.open(root / "frame" / "000003.png") as im:
        assert im.mode == "L" and im.size == (64, 64)
        assert np.array_equal(np.asarray(im), assemblies.images[3, 1].numpy())
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 2 and manifest["designs"] == 6 and manifest["complete"] is True
    assert manifest["components"] == list(COMPONENTS) and manifest["generator_version"] == bikes.GENERATOR_VERSION
    assert manifest["checksums"]["files"] == 6 * 5 + 1
    verify_bike_assemblies(root)
    designs, geometry = read_bike_geometry(root / "geometry.csv")
    assert designs == [f"{i:06d}" for i in range(6)]
    for f in dataclasses.fields(geometry):
        assert np.array_equal(getattr(geometry, f.name), getattr(assemblies.geometry, f.name)), f.name
    assert torch.equal(to_uint8(render_bikes(geometry)), assemblies.images)
    assert not list(root.parent.glob(".*partial*"))


def test_write_refuses_to_overwrite_and_verify_catches_changes(small_set, tmp_path):
    assemblies, root = small_set
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_bike_assemblies(root, assemblies, progress=False)
    copy = write_bike_assemblies(tmp_path / "copy", assemblies, progress=False)
    write_bike_assemblies(copy, assemblies, overwrite=True, progress=False)
    verify_bike_assemblies(copy)
    (copy / "wheels" / "000001.png").write_bytes((copy / "wheels" / "000002.png").read_bytes())
    with pytest.raises(ValueError, match=r"000001\.png was modified"):
        verify_bike_assemblies(copy)
    with pytest.raises(ValueError, match="uint8"):
        write_bike_assemblies(tmp_path / "bad", dataclasses.replace(assemblies, images=assemblies.float_images()))


def test_make_bike_splits_independent_and_seeded():
    a = make_bike_splits(5, 4, seed=7, spokes=0)
    b = make_bike_splits(5, 4, seed=7, spokes=0)
    assert len(a.train) == 5 and len(a.test) == 4
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert not np.array_equal(a.train.geometry.saddle[:4], a.test.geometry.saddle)
    assert a.train.stream == "train" and torch.equal(a.train.labels, torch.as_tensor(a.train.geometry.type_index))


# ----------------------------------------------------------------------------- loading


def test_round_trip_through_the_loader(small_set):
    assemblies, root = small_set
    data = load_component_images(root)
    assert data.designs == [f"{i:06d}" for i in range(6)] and data.components == list(COMPONENTS)
    assert data.images.shape == (6, 5, 64, 64) and data.images.dtype == torch.float32
    assert (data.images - assemblies.float_images()).abs().max() <= 1 / 255 + 1e-6
    assert not data.inverted.any()
    subset = load_component_images(root, components=["wheels", "crank"], size=32)
    assert subset.images.shape == (6, 2, 32, 32)
    expected = torch.nn.functional.avg_pool2d(assemblies.float_images()[:, [3, 2]], 2)
    assert (subset.images - expected).abs().max() < 1e-3  # box filter when shrinking


def test_configurable_folder_names(small_set, tmp_path):
    _, root = small_set
    names = {c: f"{c.capitalize()}_images" for c in COMPONENTS}
    for c in COMPONENTS:
        shutil.copytree(root / c, tmp_path / names[c])
    data = load_component_images(tmp_path, names=names)
    assert torch.equal(data.images, load_component_images(root).images)
    as_list = load_component_images(tmp_path, components=["frame", "saddle"], names=[names["frame"], names["saddle"]])
    assert torch.equal(as_list.images, data.images[:, [1, 0]])
    with pytest.raises(ValueError, match=r"saddle.*names="):
        load_component_images(tmp_path)
    with pytest.raises(ValueError, match="unknown components"):
        load_component_images(tmp_path, names={"seatpost": "x"})


def _write_dark_on_light(folder, images: torch.Tensor, designs, size=(128, 128), fmt="JPEG", mode="RGB"):
    folder.mkdir(parents=True)
    for image, design in zip(images, designs):
        gray = Image.fromarray((255 * (1 - image)).round().byte().numpy()).resize(size, Image.Resampling.NEAREST)
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        gray.convert(mode).save(folder / f"{design}{suffix}", format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def test_rgb_jpeg_of_another_size_dark_on_light(small_set, tmp_path):
    assemblies, _ = small_set
    ref = assemblies.float_images()
    designs = [f"bike{i}" for i in range(6)]
    for k, c in enumerate(COMPONENTS):
        _write_dark_on_light(tmp_path / c, ref[:, k], designs)
    data = load_component_images(tmp_path)
    assert data.designs == designs and data.inverted.all()
    assert (data.images - ref).abs().mean() < 0.02
    com = centre_of_mass(data.images.flatten(0, 1)) - centre_of_mass(ref.flatten(0, 1))
    assert com.abs().max() < 0.3
    kept = load_component_images(tmp_path, invert=False)
    assert not kept.inverted.any() and kept.images.mean() > 0.9
    forced = load_component_images(tmp_path, invert=True)
    assert torch.equal(forced.images, data.images)


def test_non_square_images_are_padded_and_modes_converted(tmp_path):
    for c, mode in zip(("saddle", "frame"), ("RGBA", "P")):
        (tmp_path / c).mkdir()
        canvas = np.full((60, 120), 255, np.uint8)
        canvas[25:35, 55:65] = 0  # a dark square at the centre
        Image.fromarray(canvas).convert(mode).save(tmp_path / c / "10.png")
        Image.fromarray(canvas).convert(mode).save(tmp_path / c / "2.png")
    data = load_component_images(tmp_path, components=["saddle", "frame"], size=24)
    assert data.designs == ["2", "10"]  # natural order
    com = centre_of_mass(data.images.flatten(0, 1))
    assert torch.allclose(com, torch.full_like(com, 11.5), atol=0.05)
    stretched = load_component_images(tmp_path, components=["saddle"], size=24, fit="stretch")
    assert stretched.images.shape == (2, 1, 24, 24)
    assert stretched.images.sum() > data.images[:, :1].sum() * 1.5  # stretched vertically
    # Transparent pixels count as the white background.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[15:25, 15:25] = (0, 0, 0, 255)
    (tmp_path / "alpha").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha" / "2.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha" / "10.png")
    alpha = load_component_images(tmp_path, components=["alpha"], size=40)
    assert alpha.inverted.all() and alpha.images[0, 0, 20, 20] == 1 and alpha.images[0, 0, 2, 2] == 0


@pytest.mark.filterwarnings("ignore:skipping")
def test_missing_component_unreadable_file_and_empty_folder(small_set, tmp_path):
    _, root = small_set
    work = tmp_path / "set"
    shutil.copytree(root, work)
    (work / "crank" / "000004.png").unlink()
    (work / "saddle" / "000001.png").unlink()
    with pytest.raises(ValueError, match=r"2 design\(s\).*000001: saddle; 000004: crank"):
        load_component_images(work)
    with pytest.warns(UserWarning, match="skipping 2 design"):
        skipped = load_component_images(work, on_missing="skip")
    assert skipped.designs == ["000000", "000002", "000003", "000005"]
    (work / "frame" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ValueError, match=r"frame/000002\.png: unreadable or corrupt"):
        load_component_images(work, on_missing="skip")
    truncated = (root / "wheels" / "000000.png").read_bytes()[:60]
    (work / "frame" / "000002.png").write_bytes(truncated)
    with pytest.raises(ValueError, match=r"frame/000002\.png"):
        load_component_images(work, on_missing="skip")
    empty = tmp_path / "empty"
    for c in COMPONENTS:
        (empty / c).mkdir(parents=True)
    (empty / "frame" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"saddle: no image files"):
        load_component_images(empty)
    with pytest.raises(ValueError, match="not a directory"):
        load_component_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="on_missing"):
        load_component_images(root, on_missing="ignore")
    with pytest.raises(ValueError, match="invert"):
        load_component_images(root, invert="yes")

