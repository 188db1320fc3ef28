"""The slice distance: exact on a translation, at the noise floor for two samples of one law, far
above it for a Gaussian copula against the X copula (numbers in the comments: seeded, fixed)."""

import numpy as np
import pytest

from pyro_mcvae.data import sample_copula, sample_nongaussian
from pyro_mcvae.metrics.dependence import DEFAULT_WINDOW, conditional_slice_w1, slice_metrics

N = 10_000


@pytest.fixture(scope="module")
def samples():
    return {"x1": sample_nongaussian("x", N, 1), "x2": sample_nongaussian("x", N, 2), "gauss": sample_copula(N, 3)}


def test_translation_of_the_other_components_is_exact(samples):
    ref = samples["x1"].astype(np.float64)
    shift = np.array([0.1, -0.2, 0.05, 0.3])
    gen = ref.copy()
    gen[:, 1:, 0] += shift[1:]  # component 0 (the given one) and coordinate 2 untouched
    w = conditional_slice_w1(gen, ref, 0, 0, max_points=None)
    assert w == pytest.approx(np.linalg.norm(shift[1:]), rel=1e-9)
    assert conditional_slice_w1(ref, ref, 0, 1, max_points=None) == pytest.approx(0.0, abs=1e-12)


def test_noise_floor_against_a_wrong_dependence(samples):
    # window (0.8, 0.95): about 1500 tuples per slice. Two X samples: 0.064 (coordinate 1) and
    # 0.054 (coordinate 2); Gaussian copula against X: 0.716 and 0.693 (more than 10 times).
    for j in (0, 1):
        same = conditional_slice_w1(samples["x1"], samples["x2"], 0, j)
        wrong = conditional_slice_w1(samples["gauss"], samples["x2"], 0, j)
        assert same < 0.08 and wrong > 0.6 and wrong > 8 * same, (j, same, wrong)
    # At the centre the X's arms cross: the two laws nearly agree there (0.053 between two X samples, 0.088 Gaussian
    # against X).
    centre = conditional_slice_w1(samples["gauss"], samples["x2"], 0, 0, (0.45, 0.55))
    assert centre < 0.15


def test_slice_metrics_layout(samples):
    out = slice_metrics(samples["x1"][:3000], samples["x2"][:3000], components=[0, 2], max_points=300)
    assert out["window"] == list(DEFAULT_WINDOW)
    assert set(out["w1"]) == {0, 2} and all(set(v) == {1, 2} for v in out["w1"].values())
    values = [v for by_j in out["w1"].values() for v in by_j.values()]
    assert out["w1_mean"] == pytest.approx(np.mean(values))
    again = slice_metrics(samples["x1"][:3000], samples["x2"][:3000], components=[0, 2], max_points=300)
    assert again == out  # the subsample is seeded
    assert out["quantiles_of"] == "each"


def test_slicing_at_each_samples_own_quantiles(samples):
    ref = samples["x1"]
    squeezed = ref.copy()
    squeezed[:, 0, 0] = 0.5 + 0.1 * (ref[:, 0, 0] - 0.5)  # component 0's marginal wrong, its ranks kept
    with pytest.raises(ValueError, match="generated: 0 tuples"):
        conditional_slice_w1(squeezed, ref, 0, 0)
    assert conditional_slice_w1(squeezed, ref, 0, 0, quantiles_of="each", max_points=None) == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(given_component=4), "given_component"),
    (dict(coordinate=2), "coordinate"),
    (dict(window=(0.9, 0.8)), "window"),
    (dict(window=(0.0, 1.5)), "window"),
    (dict(window=(0.5, 0.501)), "at least 50"),
    (dict(max_points=0), "max_points"),
    (dict(quantiles_of="mine"), "quantiles_of"),
])
def test_bad_input(samples, kwargs, match):
    args = dict(given_component=0, coordinate=0) | kwargs
    with pytest.raises(ValueError, match=match):
        conditional_slice_w1(samples["x1"][:2000], samples["x2"][:2000], **args)


def test_shape_mismatch(samples):
    with pytest.raises(ValueError, match="mismatch"):
        conditional_slice_w1(samples["x1"][:, :3], samples["x2"], 0, 0)
