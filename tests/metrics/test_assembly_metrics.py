"""Assembly metrics: centres of mass, their Wasserstein distance, full-assembly SSIM / FID and
keypoint-based assembly validity, checked against independent computations."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyro_mcvae.metrics.assembly import (
    KeypointRegressor,
    assembly_fid,
    assembly_ssim,
    assembly_validity,
    centres_of_mass,
    com_wasserstein,
    com_wasserstein_report,
    empty_components,
    overlay,
    predict_keypoints,
    train_keypoint_regressor,
)

FAST = settings(max_examples=30, deadline=None)


# --------------------------------------------------------------------------------------------
# synthetic images


def disk_images(centres_px: torch.Tensor, radius: float, size: int = 64) -> torch.Tensor:
    """Binary disks ``(N, size, size)`` centred at ``centres_px`` ``(N, 2)`` (x, y in pixels,
    pixel ``(r, c)`` covering ``[c, c+1] x [r, r+1]``)."""
    grid = torch.arange(size, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    cx = centres_px[:, 0, None, None].double()
    cy = centres_px[:, 1, None, None].double()
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).float()


def shift_images(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Translate by whole pixels (down ``rows``, right ``cols``), filling with 0."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    src_r = slice(max(-rows, 0), h - max(rows, 0))
    dst_r = slice(max(rows, 0), h - max(-rows, 0))
    src_c = slice(max(-cols, 0), w - max(cols, 0))
    dst_c = slice(max(cols, 0), w - max(-cols, 0))
    out[..., dst_r, dst_c] = images[..., src_r, src_c]
    return out


def brute_force_w1(x: np.ndarray, y: np.ndarray) -> float:
    """W1 between two equal-size uniform point sets: by Birkhoff's theorem an optimal plan is a
    permutation, so enumerate them all."""
    n = len(x)
    cost = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    return min(cost[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n)))


# --------------------------------------------------------------------------------------------
# centres of mass


def test_centres_match_a_loop_over_pixels():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(3, 2, 5, 7)) * (rng.uniform(size=(3, 2, 5, 7)) > 0.3)
    got = centres_of_mass(torch.tensor(images, dtype=torch.float32))
    assert got.shape == (3, 2, 2) and got.dtype == torch.float64
    for n in range(3):
        for k in range(2):
            mass = sx = sy = 0.0
            for r in range(5):
                for c in range(7):
                    v = float(np.float32(images[n, k, r, c]))
                    mass += v
                    sx += v * (c + 0.5) / 7
                    sy += v * (r + 0.5) / 5
            assert got[n, k].tolist() == pytest.approx([sx / mass, sy / mass], abs=1e-6)


@pytest.mark.parametrize("r, c", [(0, 0), (3, 9), (10, 1), (10, 11)])
def test_single_bright_pixel_is_its_centre(r, c):
    images = torch.zeros(1, 1, 11, 12)
    images[0, 0, r, c] = 0.7
    assert centres_of_mass(images)[0, 0].tolist() == pytest.approx([(c + 0.5) / 12, (r + 0.5) / 11], abs=1e-12)


def test_symmetric_shapes_have_their_centre():
    # a centred disk, a centred ring of rectangles and an off-centre square
    disk = disk_images(torch.tensor([[32.0, 32.0]]), 10)[0]
    frame = torch.zeros(64, 64)
    frame[10:14, 10:54] = frame[50:54, 10:54] = frame[10:54, 10:14] = frame[10:54, 50:54] = 1.0
    square = torch.zeros(64, 64)
    square[5:10, 20:29] = 0.5  # rows 5..9 -> y centre 7.5 px; cols 20..28 -> x centre 24.5 px
    centres = centres_of_mass(torch.stack([disk, frame, square])[None])[0]
    assert centres[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    assert centres[1].tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    assert centres[2].tolist() == pytest.approx([24.5 / 64, 7.5 / 64], abs=1e-12)


@pytest.mark.parametrize("rows, cols", [(3, -5), (0, 7), (-6, 0)])
def test_translation_moves_the_centre_by_the_shift(rows, cols):
    rng = np.random.default_rng(1)
    images = torch.zeros(4, 3, 32, 40)
    images[..., 8:24, 8:30] = torch.tensor(rng.uniform(0, 1, (4, 3, 16, 22)), dtype=torch.float32)
    moved = shift_images(images, rows, cols)
    delta = centres_of_mass(moved) - centres_of_mass(images)
    expected = torch.tensor([cols / 40, rows / 32], dtype=torch.float64)
    assert torch.allclose(delta, expected.expand_as(delta), atol=1e-6)


def test_empty_components_are_nan_and_flagged():
    images = torch.rand(3, 2, 8, 8)
    images[1, 0] = 0.0
    images[2, 1] = 0.05  # faint haze: empty only under a threshold
    centres = centres_of_mass(images)
    assert torch.isnan(centres[1, 0]).all() and not torch.isnan(centres[[0, 2]]).any()
    assert empty_components(images).tolist() == [[False, False], [True, False], [False, False]]
    assert empty_components(centres).tolist() == empty_components(images).tolist()
    flagged = empty_components(images, threshold=0.1)
    assert bool(flagged[1, 0]) and bool(flagged[2, 1]) and int(flagged.sum()) >= 2
    # a threshold ignores the background haze that pulls a centre towards the middle
    haze = torch.full((1, 1, 16, 16), 0.02)
    haze[0, 0, 1, 1] = 1.0
    assert centres_of_mass(haze, threshold=0.1)[0, 0].tolist() == pytest.approx([1.5 / 16, 1.5 / 16])
    assert centres_of_mass(haze)[0, 0, 0] > 0.2


def test_centres_reject_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        centres_of_mass(-torch.rand(1, 1, 4, 4) - 0.1)
    with pytest.raises(ValueError, match="NaN"):
        centres_of_mass(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="infinite"):
        centres_of_mass(torch.full((1, 1, 4, 4), float("inf")))
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        centres_of_mass(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="float"):
        centres_of_mass(torch.ones(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="tensor"):
        centres_of_mass(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="threshold"):
        centres_of_mass(torch.rand(1, 1, 4, 4), threshold=-1)


# --------------------------------------------------------------------------------------------
# Wasserstein distance between centre-of-mass laws


@pytest.mark.parametrize("n, k, seed", [(3, 1, 0), (3, 5, 1), (4, 2, 2), (5, 3, 3)])
def test_com_wasserstein_matches_brute_force_assignment(n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(size=(n, k, 2)), rng.uniform(size=(n, k, 2))
    expected = brute_force_w1(a.reshape(n, -1), b.reshape(n, -1))
    assert com_wasserstein(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_com_wasserstein_from_images_equals_from_centres():
    rng = np.random.default_rng(4)
    real = torch.tensor(rng.uniform(size=(6, 3, 10, 12)), dtype=torch.float32)
    gen = torch.tensor(rng.uniform(size=(5, 3, 10, 12)) ** 4, dtype=torch.float32)
    from_images = com_wasserstein(real, gen)
    assert from_images == pytest.approx(com_wasserstein(centres_of_mass(real), centres_of_mass(gen)), abs=1e-12)
    assert from_images == pytest.approx(com_wasserstein(real, centres_of_mass(gen)), abs=1e-12)
    assert from_images > 0


def test_identical_sets_give_zero_and_a_rigid_shift_gives_its_length():
    rng = np.random.default_rng(5)
    k = 5
    centres = torch.tensor(rng.uniform(0.2, 0.8, size=(7, k, 2)))
    assert com_wasserstein(centres, centres.clone()) == 0.0
    # every centre moves by v: each 2K-point moves by w = (v, ..., v), |w| = sqrt(K) |v|, and
    # W1 of a translated law is exactly |w| (a transport map achieves it; |mean shift| bounds it)
    v = torch.tensor([0.03, -0.04], dtype=torch.float64)
    assert com_wasserstein(centres, centres + v) == pytest.approx(math.sqrt(k) * 0.05, rel=1e-12)
    # per-component shifts v_k: w = (v_1, ..., v_K)
    vs = torch.tensor(rng.normal(0, 0.02, size=(k, 2)))
    assert com_wasserstein(centres, centres + vs) == pytest.approx(float(vs.norm()), rel=1e-12)


def test_shifting_the_images_gives_the_shift_length():
    rng = np.random.default_rng(6)
    images = torch.zeros(8, 5, 64, 64)
    images[..., 16:48, 16:48] = torch.tensor(rng.uniform(size=(8, 5, 32, 32)) ** 3, dtype=torch.float32)
    moved = shift_images(images, 4, -3)
    expected = math.sqrt(5) * math.hypot(3 / 64, 4 / 64)
    assert com_wasserstein(images, moved) == pytest.approx(expected, rel=1e-5)
    assert com_wasserstein(images, moved, units="pixels") == pytest.approx(math.sqrt(5) * 5.0, rel=1e-5)


def point_sets(n_max=5, k_max=3):
    """Three centre sets (n_i, K, 2) with a common K and sizes 1..n_max."""
    unit = st.floats(0, 1, allow_nan=False)
    return st.tuples(st.integers(1, k_max), st.lists(st.integers(1, n_max), min_size=3, max_size=3)).flatmap(
        lambda kn: st.tuples(*(hnp.arrays(np.float64, (n, kn[0], 2), elements=unit) for n in kn[1]))
    )


@FAST
@given(point_sets())
def test_com_wasserstein_is_symmetric_and_satisfies_the_triangle_inequality(sets):
    a, b, c = (torch.tensor(s) for s in sets)
    ab, ba = com_wasserstein(a, b), com_wasserstein(b, a)
    assert ab == pytest.approx(ba, rel=1e-9, abs=1e-12)
    assert ab >= 0
    assert com_wasserstein(a, c) <= ab + com_wasserstein(b, c) + 1e-9


def test_empty_assemblies_are_dropped_and_counted():
    rng = np.random.default_rng(7)
    real = torch.tensor(rng.uniform(size=(6, 2, 8, 8)), dtype=torch.float32)
    gen = torch.tensor(rng.uniform(size=(5, 2, 8, 8)), dtype=torch.float32)
    gen[1, 0] = 0.0
    gen[3, 1] = 0.0
    report = com_wasserstein_report(real, gen)
    assert report["n_dropped_real"] == 0 and report["n_dropped_generated"] == 2
    assert report["n_used_real"] == 6 and report["n_used_generated"] == 3
    assert report["units"] == "unit"
    keep = torch.tensor([0, 2, 4])
    assert report["value"] == pytest.approx(com_wasserstein(real, gen[keep]), abs=1e-12)
    assert com_wasserstein(real, gen) == report["value"]
    with pytest.raises(ValueError, match="empty component"):
        com_wasserstein(real, torch.zeros(3, 2, 8, 8))


def test_subsampling_is_equal_size_and_seeded():
    rng = np.random.default_rng(8)
    real, gen = torch.tensor(rng.uniform(size=(40, 3, 2))), torch.tensor(rng.uniform(size=(30, 3, 2)))
    report = com_wasserstein_report(real, gen, max_points=10, seed=3)
    assert report["n_used_real"] == report["n_used_generated"] == 10
    assert com_wasserstein(real, gen, max_points=10, seed=3) == report["value"]
    assert com_wasserstein(real, gen, max_points=10, seed=4) != report["value"]
    capped = com_wasserstein_report(real, gen, max_points=1000)
    assert capped["n_used_real"] == capped["n_used_generated"] == 30
    # with equal sizes and max_points >= n every point is kept: the full distance
    assert com_wasserstein(real[:30], gen, max_points=50) == pytest.approx(com_wasserstein(real[:30], gen), abs=1e-12)


def test_pixel_units_and_bad_arguments():
    rng = np.random.default_rng(9)
    a, b = torch.tensor(rng.uniform(size=(4, 2, 2))), torch.tensor(rng.uniform(size=(4, 2, 2)))
    # a 64x32 (H x W) image scales x by 32 and y by 64
    scale = torch.tensor([32.0, 64.0], dtype=torch.float64)
    assert com_wasserstein(a, b, units="pixels", image_size=(64, 32)) == pytest.approx(
        com_wasserstein(a * scale, b * scale), rel=1e-12
    )
    with pytest.raises(ValueError, match="image_size"):
        com_wasserstein(a, b, units="pixels")
    with pytest.raises(ValueError, match="units"):
        com_wasserstein(a, b, units="mm")
    with pytest.raises(ValueError, match="same K"):
        com_wasserstein(a, b[:, :1])
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        com_wasserstein(a[..., 0], b)
    with pytest.raises(ValueError, match="max_points"):
        com_wasserstein(a, b, max_points=0)
    with pytest.raises(ValueError, match="one image size"):
        com_wasserstein(torch.rand(2, 2, 8, 8), torch.rand(2, 2, 8, 6), units="pixels")


# --------------------------------------------------------------------------------------------
# overlay, SSIM, FID


def test_overlay_max_and_clipped_sum():
    images = torch.rand(3, 4, 9, 9)
    assert torch.equal(overlay(images), images.max(1).values)
    assert torch.equal(overlay(images, "sum"), images.sum(1).clamp(max=1))
    parts = torch.zeros(1, 2, 4, 4)
    parts[0, 0, 0, 0], parts[0, 1, 0, 0], parts[0, 1, 3, 3] = 0.3, 0.4, 0.9
    assert overlay(parts, "sum")[0, 0, 0] == pytest.approx(0.7) and overlay(parts)[0, 0, 0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="mode"):
        overlay(images, "mean")


def test_assembly_ssim_identical_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(10)
    real = torch.tensor(rng.uniform(size=(4, 3, 16, 16)), dtype=torch.float32)
    same = assembly_ssim(real, real.clone(), component_names=["saddle", "frame", "crank"])
    assert set(same["per_component"]) == {"saddle", "frame", "crank"}
    assert all(v == pytest.approx(1.0) for v in same["per_component"].values())
    assert same["assembly"] == pytest.approx(1.0) and same["component_mean"] == pytest.approx(1.0)
    noisy = (real + 0.3 * torch.rand_like(real)).clamp(0, 1)
    worse = assembly_ssim(real, noisy)
    assert all(v < 0.99 for v in worse["per_component"].values()) and worse["assembly"] < 0.99
    with pytest.raises(ValueError, match="paired"):
        assembly_ssim(real, real[:3])


class PooledFeatures:
    """Stand-in extractor: 8x8 average-pooled grey images as 64-d features; records the shapes
    it was called with."""

    def __init__(self):
        self.shapes = []

    def __call__(self, images):
        self.shapes.append(tuple(images.shape))
        return F.adaptive_avg_pool2d(images, 8).flatten(1)


def test_assembly_fid_with_a_stand_in_extractor():
    rng = np.random.default_rng(11)
    centres = torch.tensor(rng.uniform(16, 48, size=(200, 2)))
    real = torch.stack([disk_images(centres, 6), disk_images(centres + 3, 4)], dim=1)  # (200, 2, 64, 64)
    extractor = PooledFeatures()
    same = assembly_fid(real, real.clone(), extractor)
    assert all(s == (200, 1, 64, 64) for s in extractor.shapes)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in same["per_component"].values())
    assert same["assembly"] == pytest.approx(0.0, abs=1e-9)
    shifted = shift_images(real, 0, 8)
    moved = assembly_fid(real, shifted[:150], extractor, component_names=["frame", "crank"])
    assert moved["per_component"]["frame"] > 0.1 and moved["per_component"]["crank"] > 0.1
    assert moved["assembly"] > 0.1
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        assembly_fid(real, real[:, :1], extractor)


# --------------------------------------------------------------------------------------------
# keypoints and assembly validity

OFFSET_REAR = torch.tensor([-14.0, 2.0])  # dropouts relative to the "bottom bracket", pixels
OFFSET_FRONT = torch.tensor([14.0, 2.0])


def toy_assemblies(n, seed, crank_shift=(0.0, 0.0), wheel_shift=(0.0, 0.0)):
    """Toy bikes: the frame is a disk (radius 4) at the bottom bracket B; the dropouts sit at
    fixed offsets from B; the crank is a disk (radius 3) at B and the wheels image two disks
    (radius 5) at the dropouts, each optionally displaced (pixels). Returns images and the true
    keypoints in unit coordinates."""
    g = torch.Generator().manual_seed(seed)
    bb = torch.rand(n, 2, generator=g) * torch.tensor([16.0, 22.0]) + torch.tensor([24.0, 14.0])
    rear, front = bb + OFFSET_REAR, bb + OFFSET_FRONT
    frames = disk_images(bb, 4)
    cranks = disk_images(bb + torch.tensor(crank_shift), 3)
    ws = torch.tensor(wheel_shift)
    wheels = torch.maximum(disk_images(rear + ws, 5), disk_images(front + ws, 5))
    return {
        "frames": frames,
        "cranks": cranks,
        "wheels": wheels,
        "frame_points": torch.stack([bb, rear, front], 1) / 64,
        "wheel_points": torch.stack([rear, front], 1) / 64,
    }


@pytest.fixture(scope="module")
def regressors():
    train = toy_assemblies(512, seed=0)
    frame_model = train_keypoint_regressor(train["frames"], train["frame_points"], epochs=5, seed=0, progress=False)
    wheel_model = train_keypoint_regressor(train["wheels"], train["wheel_points"], epochs=5, seed=1, progress=False)
    return frame_model, wheel_model


def test_regressor_finds_the_disk_and_its_offset_points(regressors):
    frame_model, wheel_model = regressors
    test = toy_assemblies(200, seed=1)
    pred = predict_keypoints(frame_model, test["frames"])
    assert pred.shape == (200, 3, 2) and pred.dtype == torch.float32
    assert bool(((pred >= 0) & (pred <= 1)).all())
    err_px = (pred - test["frame_points"]).norm(dim=-1) * 64
    assert float(err_px[:, 0].mean()) < 1.5 and float(err_px[:, 0].max()) < 4.0  # the disk centre
    assert float(err_px.mean()) < 2.0
    wheel_err_px = (predict_keypoints(wheel_model, test["wheels"]) - test["wheel_points"]).norm(dim=-1) * 64
    assert float(wheel_err_px.mean()) < 2.0
    # (N, 1, H, W) input gives the same predictions
    assert torch.allclose(predict_keypoints(frame_model, test["frames"][:, None]), pred)


def test_assembly_validity_perfect_and_displaced_assemblies(regressors):
    frame_model, wheel_model = regressors
    perfect = toy_assemblies(100, seed=2)
    good = assembly_validity(perfect["frames"], perfect["cranks"], perfect["wheels"], frame_model, wheel_model)
    assert good["n"] == 100 and good["n_empty_cranks"] == 0
    for name in ("crank", "rear_wheel", "front_wheel"):
        d = good[name]["distances"]
        assert d.shape == (100,)
        assert good[name]["mean"] < 2.0 / 64 and good[name]["p90"] < 3.5 / 64
        assert good[name]["median"] == pytest.approx(float(torch.quantile(d, 0.5)))
    bad = toy_assemblies(100, seed=2, crank_shift=(0.0, -10.0), wheel_shift=(0.0, 8.0))
    off = assembly_validity(bad["frames"], bad["cranks"], bad["wheels"], frame_model, wheel_model)
    assert off["crank"]["mean"] == pytest.approx(10.0 / 64, abs=2.0 / 64) and off["crank"]["p90"] > 7.0 / 64
    for name in ("rear_wheel", "front_wheel"):
        assert 5.0 / 64 < off[name]["mean"] < 10.0 / 64  # shifted by 8 px
    # an empty crank has no centre: NaN distance, left out of the summaries
    cranks = perfect["cranks"].clone()
    cranks[0] = 0.0
    partial = assembly_validity(perfect["frames"], cranks, perfect["wheels"], frame_model, wheel_model)
    assert partial["n_empty_cranks"] == 1 and math.isnan(partial["crank"]["distances"][0])
    assert math.isfinite(partial["crank"]["mean"])
    with pytest.raises(ValueError, match="3 keypoints"):
        assembly_validity(perfect["frames"], cranks, perfect["wheels"], wheel_model, wheel_model)
    with pytest.raises(ValueError, match="same shape"):
        assembly_validity(perfect["frames"], cranks[:5], perfect["wheels"], frame_model, wheel_model)


def test_training_is_seeded_and_checks_its_input():
    data = toy_assemblies(32, seed=3)
    state = torch.random.get_rng_state()
    a = train_keypoint_regressor(data["frames"], data["frame_points"], epochs=1, seed=7, batch_size=16, progress=False)
    b = train_keypoint_regressor(data["frames"], data["frame_points"], epochs=1, seed=7, batch_size=16, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # global random state untouched
    assert torch.equal(predict_keypoints(a, data["frames"]), predict_keypoints(b, data["frames"]))
    assert a.num_points == 3 and not a.training
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        train_keypoint_regressor(data["frames"], data["frame_points"][..., 0], epochs=1, progress=False)
    with pytest.raises(ValueError, match="unit coordinates"):
        train_keypoint_regressor(data["frames"], data["frame_points"] * 64, epochs=1, progress=False)
    with pytest.raises(ValueError, match="rows"):
        train_keypoint_regressor(data["frames"][:5], data["frame_points"], epochs=1, progress=False)
    with pytest.raises(ValueError, match="multiples of 4"):
        KeypointRegressor(2)(torch.rand(2, 30, 30))
    with pytest.raises(ValueError, match="grey"):
        predict_keypoints(a, torch.rand(2, 3, 64, 64))
