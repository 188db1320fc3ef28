"""Image metrics for PolyMNIST: digit classifiers, coherence, Fréchet distance / FID, SSIM."""

import gzip
import itertools
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn
from helpers import SEEDS, random_spd
from hypothesis import given, settings
from hypothesis import strategies as st

import pyro_mcvae.metrics.fid as fid_module
from pyro_mcvae.metrics.coherence import (
    coherence_by_subset_size,
    conditional_coherence,
    predict_digits,
    unconditional_coherence,
)
from pyro_mcvae.metrics.fid import (
    INCEPTION_WEIGHTS_ENV,
    InceptionFeatureExtractor,
    InceptionWeightsUnavailable,
    digit_frechet_distance,
    fid,
    frechet_distance,
    gaussian_statistics,
)
from pyro_mcvae.metrics.ssim import mean_ssim, ssim
from pyro_mcvae.nets.classifier import (
    DigitClassifier,
    StackedDigitClassifiers as _StackedDigitClassifiers,
    classifier_accuracy,
    load_classifiers,
    load_mopoe_classifiers,
    save_classifiers,
)
from pyro_mcvae.metrics.coherence import train_digit_classifiers

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MOPOE_DIR = DATA / "polymnist" / "mopoe_classifiers"


# --------------------------------------------------------------------------------------------
# Fréchet distance


def _commuting_pair(rng, n):
    """Two covariances sharing the eigenbasis ``Q``: ``Q diag(a) Q^T`` and ``Q diag(b) Q^T``."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a, b = rng.uniform(0.01, 4.0, n), rng.uniform(0.01, 4.0, n)
    return a, b, q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T


@pytest.mark.parametrize("n", [1, 3, 8])
def test_frechet_commuting_covariances_closed_form(n):
    rng = np.random.default_rng(n)
    mu1, mu2 = rng.standard_normal(n), rng.standard_normal(n)
    a, b, s1, s2 = _commuting_pair(rng, n)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(torch.tensor(mu1), torch.tensor(s1), torch.tensor(mu2), torch.tensor(s2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # diagonal covariances are the special case Q = I
    got_diag = frechet_distance(
        torch.tensor(mu1), torch.diag(torch.tensor(a)), torch.tensor(mu2), torch.diag(torch.tensor(b))
    )
    assert got_diag == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_frechet_general_case_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    n = 6
    mu1, mu2 = rng.standard_normal(n), rng.standard_normal(n)
    s1, s2 = random_spd(rng, n), random_spd(rng, n)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real
    got = frechet_distance(*map(torch.tensor, (mu1, s1, mu2, s2)))
    assert got == pytest.approx(expected, rel=1e-7)


def _random_covariance(rng, n, rank):
    a = rng.standard_normal((n, rank)) * rng.uniform(0.1, 3.0)
    return a @ a.T  # rank-deficient when rank < n, as FID covariances of few samples are


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 7), rank1=st.integers(1, 7), rank2=st.integers(1, 7))
def test_frechet_properties(seed, n, rank1, rank2):
    rng = np.random.default_rng(seed)
    mu1, mu2 = torch.tensor(rng.standard_normal(n)), torch.tensor(rng.standard_normal(n))
    s1 = torch.tensor(_random_covariance(rng, n, min(rank1, n)))
    s2 = torch.tensor(_random_covariance(rng, n, min(rank2, n)))
    d12 = frechet_distance(mu1, s1, mu2, s2)
    d21 = frechet_distance(mu2, s2, mu1, s1)
    # The trace term sums square roots of eigenvalues: an eigenvalue known to rounding level
    # (n eps ||S1|| ||S2||) is only known to its square root, so agreement is at sqrt(eps) level
    # (20,000 random cases of this law: worst 1.5 sqrt(n eps) scale).
    tol = 2.0 * n * math.sqrt(n * np.finfo(np.float64).eps) * (1.0 + float(torch.trace(s1) + torch.trace(s2)))
    assert d12 >= 0.0
    assert d12 == pytest.approx(d21, abs=tol)
    assert frechet_distance(mu1, s1, mu1, s1) <= tol
    # the mean term alone is a lower bound
    assert d12 >= float(((mu1 - mu2) ** 2).sum()) - tol


def test_frechet_identical_rank_deficient_high_dimension_is_zero():
    # 60 samples in 128 dimensions: a singular covariance, as FID with few images has
    rng = np.random.default_rng(0)
    mu, sigma = gaussian_statistics(torch.tensor(rng.standard_normal((60, 128))))
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-8 * float(torch.trace(sigma))


def test_gaussian_statistics_match_numpy_and_converge():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4))
    mu, sigma = gaussian_statistics(torch.tensor(x, dtype=torch.float32))
    assert mu.dtype == sigma.dtype == torch.float64
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu.numpy(), x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-7)

    true_mu = np.array([1.0, -2.0, 0.5])
    true_sigma = random_spd(rng, 3)
    samples = rng.multivariate_normal(true_mu, true_sigma, size=200_000)
    mu, sigma = gaussian_statistics(torch.tensor(samples))
    assert torch.allclose(mu, torch.tensor(true_mu), atol=0.02 * math.sqrt(true_sigma.max()))
    assert torch.allclose(sigma, torch.tensor(true_sigma), rtol=0.03, atol=0.03 * true_sigma.max())
    assert frechet_distance(mu, sigma, torch.tensor(true_mu), torch.tensor(true_sigma)) < 1e-2


def test_frechet_and_statistics_reject_bad_input():
    eye = torch.eye(2, dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="equal size"):
        frechet_distance(zero, eye, torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(zero, torch.eye(3), zero, eye)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(zero, torch.tensor([[1.0, 0.5], [0.0, 1.0]]), zero, eye)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(zero, torch.diag(torch.tensor([1.0, -1.0])), zero, eye)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.tensor([0.0, float("nan")]), eye, zero, eye)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_statistics(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        gaussian_statistics(torch.zeros(5))


def test_fid_with_any_feature_extractor():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(64, 3, 8, 8, generator=gen), torch.rand(64, 3, 8, 8, generator=gen)
    extractor = lambda x: x.mean(dim=(2, 3))  # noqa: E731 - (N, 3) channel means
    assert fid(a, a, extractor) == pytest.approx(0.0, abs=1e-10)
    expected = frechet_distance(*gaussian_statistics(extractor(a)), *gaussian_statistics(extractor(b)))
    assert fid(a, b, extractor) == pytest.approx(expected)


def test_digit_frechet_distance():
    torch.manual_seed(0)
    clf = DigitClassifier().train()
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(100, 3, 28, 28, generator=gen)
    b = torch.rand(100, 3, 28, 28, generator=gen) * 0.5
    assert digit_frechet_distance(a, a, clf) == pytest.approx(0.0, abs=1e-8)
    d_ab = digit_frechet_distance(a, b, clf)
    assert d_ab > 1e-3
    assert digit_frechet_distance(a[torch.randperm(100)], b, clf) == pytest.approx(d_ab, rel=1e-6)
    assert clf.training  # the caller's mode is kept
    assert "NOT FID" in digit_frechet_distance.__doc__
    with pytest.raises(ValueError, match="features"):
        digit_frechet_distance(a, b, nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# SSIM


def _rgb(n, seed, size=28):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_ssim_identical_images_is_one():
    x = _rgb(5, 0)
    values = ssim(x, x.clone())
    assert values.shape == (5,) and values.dtype == torch.float64
    assert torch.allclose(values, torch.ones(5, dtype=torch.float64))
    assert mean_ssim(x, x) == pytest.approx(1.0)
    grey = x[:, 0]  # (N, H, W)
    assert torch.allclose(ssim(grey, grey), torch.ones(5, dtype=torch.float64))


def test_ssim_decreases_with_noise():
    x = _rgb(8, 1) * 0.5 + 0.25
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=gen)
    values = [mean_ssim(x, (x + level * noise).clamp(0, 1)) for level in (0.0, 0.02, 0.05, 0.1, 0.2)]
    assert values[0] == pytest.approx(1.0)
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values
    per_image = [ssim(x, (x + level * noise).clamp(0, 1)) for level in (0.02, 0.2)]
    assert bool((per_image[1] < per_image[0]).all())


@pytest.mark.parametrize("c1, c2", [(0.2, 0.2), (0.2, 0.7), (0.9, 0.1), (0.0, 1.0)])
def test_ssim_constant_images_closed_form(c1, c2):
    # constant images: no variance, so SSIM is the luminance term alone
    k1c = (0.01 * 1.0) ** 2
    expected = (2 * c1 * c2 + k1c) / (c1**2 + c2**2 + k1c)
    a, b = torch.full((2, 3, 28, 28), c1), torch.full((2, 3, 28, 28), c2)
    assert torch.allclose(ssim(a, b), torch.full((2,), expected, dtype=torch.float64), atol=1e-9)


def _global_ssim_numpy(x, y, data_range=1.0):
    """SSIM formula of Wang et al. on the whole image as one window (sample statistics)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = ((x - mx) * (y - my)).sum() / (x.size - 1)
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_single_window_matches_numpy_formula():
    # a 7x7 image with a 7x7 window has exactly one window position: SSIM is the global formula
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (2, 3, 7, 7))
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1)
    expected = [np.mean([_global_ssim_numpy(x[i, c], y[i, c]) for c in range(3)]) for i in range(2)]
    got = ssim(torch.tensor(x), torch.tensor(y), win_size=7)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # and with another data range
    expected_255 = _global_ssim_numpy(255 * x[0, 0], 255 * y[0, 0], data_range=255.0)
    got_255 = ssim(torch.tensor(255 * x[:1, 0]), torch.tensor(255 * y[:1, 0]), data_range=255.0)
    assert float(got_255[0]) == pytest.approx(expected_255, rel=1e-10)


def _structured_pair(shape, seed, data_range=1.0):
    """Smooth gradients with blobs, and a noisy, shifted copy: SSIM spread over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape[-2], shape[-1]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(*shape[:-2], 1, 1, generator=g)
    a = 0.5 + 0.4 * torch.sin(6 * xx + 4 * yy + 6 * phase) * torch.cos(3 * yy - 5 * phase)
    b = (a.roll(1, -1) + 0.15 * torch.randn(shape, generator=g)).clamp(0, 1)
    return (a * data_range).double(), (b * data_range).double()


@pytest.mark.parametrize("shape, win_size, data_range", [
    ((6, 3, 28, 28), None, 1.0),   # PolyMNIST
    ((5, 28, 28), None, 1.0),      # grey (N, H, W)
    ((4, 3, 9, 11), None, 1.0),    # rectangular
    ((3, 1, 5, 6), None, 1.0),     # window shrinks to 5
    ((3, 2, 4, 4), None, 1.0),     # window shrinks to 3
    ((4, 3, 28, 28), 3, 1.0),
    ((4, 3, 28, 28), 11, 255.0),
])
def test_ssim_torch_backend_equals_scikit_image(shape, win_size, data_range):
    # the batched torch computation against scikit-image's own function, pair by pair
    a, b = _structured_pair(shape, seed=sum(shape), data_range=data_range)
    reference = ssim(a, b, data_range, win_size, backend="skimage")
    got = ssim(a, b, data_range, win_size)
    assert bool((reference < 0.98).all()) and float(reference.abs().max()) > 0.01, reference  # not trivial
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-10)
    # random images too, and any chunking gives the same values
    r = torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * data_range
    torch.testing.assert_close(ssim(r, a, data_range, win_size, chunk=1),
                               ssim(r, a, data_range, win_size, backend="skimage"), rtol=0, atol=1e-10)


def test_ssim_rejects_bad_input():
    x = _rgb(2, 4)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:1])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ssim(x, bad)
    with pytest.raises(ValueError, match="outside"):
        ssim(x, x * 2)
    with pytest.raises(ValueError, match="outside"):
        ssim(x - 0.5, x)
    with pytest.raises(ValueError, match="exceeds"):
        ssim(x, x, win_size=29)
    with pytest.raises(ValueError, match="float"):
        ssim((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="backend"):
        ssim(x, x, backend="numpy")
    with pytest.raises(ValueError, match="chunk"):
        ssim(x, x, chunk=0)


# --------------------------------------------------------------------------------------------
# coherence with a planted classifier


class PlantedDigitReader(nn.Module):
    """Test stand-in for a digit classifier: the digit is written in pixel ``(0, 0, 0)`` as
    ``digit / 9``; the logits peak at the nearest digit."""

    def forward(self, x):
        value = x[:, 0, 0, 0] * 9
        return -((torch.arange(10, dtype=x.dtype) - value[:, None]) ** 2)


def _planted(digits, seed=0):
    """Images ``(N, M, 3, 28, 28)`` whose planted digits are ``digits`` ``(N, M)``."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(*digits.shape, 3, 28, 28, generator=gen)
    images[..., 0, 0, 0] = digits.float() / 9
    return images


def test_predict_digits_reads_planted_digits_in_batches():
    gen = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 10, (37, 4), generator=gen)
    readers = [PlantedDigitReader().train() for _ in range(4)]
    pred = predict_digits(readers, _planted(digits), batch_size=5)
    assert pred.dtype == torch.int64 and torch.equal(pred, digits)
    assert all(r.training for r in readers)  # modes restored
    with pytest.raises(ValueError, match="one per modality"):
        predict_digits(readers[:3], _planted(digits))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_digits(readers, _planted(digits) * 2)
    nan = _planted(digits)
    nan[3, 2, 1, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predict_digits(readers, nan)


def test_conditional_coherence_perfect_and_shuffled_generators():
    n, m = 1500, 5
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n,), generator=gen)
    readers = [PlantedDigitReader() for _ in range(m)]
    perfect = _planted(labels[:, None].expand(n, m))
    # a generator that ignores its input: each modality shows the label of a random other tuple
    shuffled_digits = torch.stack([labels[torch.randperm(n, generator=gen)] for _ in range(m)], 1)
    shuffled = _planted(shuffled_digits)
    for observed in [(0,), (1, 3), (0, 2, 3, 4), ()]:
        assert conditional_coherence(perfect, labels, readers, observed) == 1.0
        assert conditional_coherence(shuffled, labels, readers, observed) == pytest.approx(0.1, abs=0.03)
    # observed slots are not judged
    wrong_observed = perfect.clone()
    wrong_observed[:, 1, 0, 0, 0] = ((labels + 1) % 10).float() / 9
    assert conditional_coherence(wrong_observed, labels, readers, [1]) == 1.0
    # the average is over the unobserved modalities
    half = perfect.clone()
    half[:, 2, 0, 0, 0] = ((labels + 1) % 10).float() / 9
    assert conditional_coherence(half, labels, readers, [0, 1, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no modality"):
        conditional_coherence(perfect, labels, readers, range(m))
    with pytest.raises(ValueError, match="out of range"):
        conditional_coherence(perfect, labels, readers, [5])
    with pytest.raises(ValueError, match="labels"):
        conditional_coherence(perfect, labels[:10], readers, [0])


def test_unconditional_coherence_formula():
    gen = torch.Generator().manual_seed(1)
    n, m = 3000, 3
    # digits drawn from a small alphabet so that agreement is common
    digits = torch.randint(0, 2, (n, m), generator=gen) * 7
    digits[: n // 3] = digits[: n // 3, :1]  # a third agree by construction
    expected = float(np.mean([len(set(row)) == 1 for row in digits.tolist()]))
    readers = [PlantedDigitReader() for _ in range(m)]
    assert unconditional_coherence(_planted(digits), readers) == pytest.approx(expected, abs=1e-12)
    all_same = torch.full((10, m), 4)
    assert unconditional_coherence(_planted(all_same), readers) == 1.0


def test_coherence_by_subset_size():
    m = 3
    results = {s: 0.1 * len(s) + 0.01 * s[0] for k in range(1, m) for s in itertools.combinations(range(m), k)}
    out = coherence_by_subset_size(results, num_modalities=m)
    assert list(out) == [1, 2, "mean"]
    assert out[1] == pytest.approx((0.1 + 0.11 + 0.12) / 3)
    assert out[2] == pytest.approx((0.2 + 0.2 + 0.21) / 3)
    assert out["mean"] == pytest.approx(sum(results.values()) / 6)
    incomplete = dict(results)
    del incomplete[(0, 2)]
    assert set(coherence_by_subset_size(incomplete)) == {1, 2, "mean"}
    with pytest.raises(ValueError, match=r"miss 1 subset.*\(0, 2\)"):
        coherence_by_subset_size(incomplete, num_modalities=m)
    with pytest.raises(ValueError, match="repeats"):
        coherence_by_subset_size({(1, 1): 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        coherence_by_subset_size({(1,): 1.5})


# --------------------------------------------------------------------------------------------
# the MoPoE classifier architecture and its files


MOPOE_SHAPES = {
    "encoder.0.weight": (10, 3, 4, 4),
    "encoder.0.bias": (10,),
    "encoder.3.weight": (20, 10, 4, 4),
    "encoder.3.bias": (20,),
    "encoder.7.weight": (128, 980),
    "encoder.7.bias": (128,),
    "encoder.10.weight": (10, 128),
    "encoder.10.bias": (10,),
}


def test_digit_classifier_architecture_and_features():
    torch.manual_seed(0)
    clf = DigitClassifier()
    assert {k: tuple(v.shape) for k, v in clf.state_dict().items()} == MOPOE_SHAPES
    x = torch.rand(6, 3, 28, 28)
    clf.train()
    feats = clf.features(x)
    assert feats.shape == (6, 128) and bool((feats >= 0).all())
    assert clf.training
    clf.eval()
    assert torch.allclose(clf.encoder[10](feats), clf(x), atol=1e-6)  # penultimate activations


def _write_mopoe_dir(directory, modalities=range(2)):
    directory.mkdir(exist_ok=True)
    states = []
    for k in modalities:
        torch.manual_seed(k)
        state = DigitClassifier().state_dict()
        torch.save(state, directory / f"pretrained_img_to_digit_clf_m{k}")
        states.append(state)
    return states


def test_load_mopoe_classifiers_from_files(tmp_path):
    states = _write_mopoe_dir(tmp_path / "clf")
    loaded = load_mopoe_classifiers(tmp_path / "clf", modalities=range(2))
    assert len(loaded) == 2 and not any(c.training for c in loaded)
    for clf, state in zip(loaded, states):
        for key, value in clf.state_dict().items():
            assert torch.equal(value, state[key])


def test_load_mopoe_classifiers_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mopoe_classifiers(tmp_path / "absent")
    directory = tmp_path / "clf"
    states = _write_mopoe_dir(directory)
    with pytest.raises(FileNotFoundError, match="modality 2"):
        load_mopoe_classifiers(directory, modalities=range(3))

    def write(state):
        torch.save(state, directory / "pretrained_img_to_digit_clf_m1")

    write([1, 2, 3])
    with pytest.raises(ValueError, match="not a state dict"):
        load_mopoe_classifiers(directory, modalities=[1])
    missing = {k: v for k, v in states[1].items() if k != "encoder.7.bias"}
    write(missing)
    with pytest.raises(ValueError, match=r"missing keys \['encoder.7.bias'\]"):
        load_mopoe_classifiers(directory, modalities=[1])
    write({**states[1], "encoder.11.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys"):
        load_mopoe_classifiers(directory, modalities=[1])
    write({**states[1], "encoder.7.weight": torch.zeros(128, 784)})
    with pytest.raises(ValueError, match=r"encoder.7.weight: \(128, 784\) \(expected \(128, 980\)\)"):
        load_mopoe_classifiers(directory, modalities=[1])
    (directory / "pretrained_img_to_digit_clf_m1").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        load_mopoe_classifiers(directory, modalities=[1])


def _read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _composite_polymnist(digits, background, rng):
    """PolyMNIST recipe for one modality: random 28x28 crops of ``background`` (H, W, 3) uint8,
    inverted where the binarised digit ``(N, 28, 28)`` is on; float ``(N, 3, 28, 28)`` in [0, 1]."""
    n = len(digits)
    rows = rng.integers(0, background.shape[0] - 28 + 1, n)[:, None] + np.arange(28)
    cols = rng.integers(0, background.shape[1] - 28 + 1, n)[:, None] + np.arange(28)
    crops = background[rows[:, :, None], cols[:, None, :]].astype(np.float64) / 255.0  # (N, 28, 28, 3)
    on = (digits > 128)[..., None]
    images = np.where(on, 1.0 - crops, crops)
    return torch.tensor(images.transpose(0, 3, 1, 2), dtype=torch.float32)


def test_real_mopoe_classifier_recognises_composited_mnist():
    mnist = DATA / "mnist"
    background_file = DATA / "polymnist" / "backgrounds" / "00flowers-19830_1280.jpg"
    needed = [MOPOE_DIR / "pretrained_img_to_digit_clf_m1", mnist / "t10k-images-idx3-ubyte.gz", background_file]
    absent = [str(p) for p in needed if not p.is_file()]
    if absent:
        pytest.skip(f"real PolyMNIST reference data not available: {absent}")
    from PIL import Image

    n = 500
    digits = _read_idx(mnist / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n]
    labels = torch.tensor(_read_idx(mnist / "t10k-labels-idx1-ubyte.gz", 8)[:n].astype(np.int64))
    with Image.open(background_file) as im:
        background = np.asarray(im.convert("RGB"))
    images = _composite_polymnist(digits, background, np.random.default_rng(0))

    classifiers = load_mopoe_classifiers(MOPOE_DIR, modalities=range(5))
    for clf in classifiers:
        assert {k: tuple(v.shape) for k, v in clf.state_dict().items()} == MOPOE_SHAPES
    accuracy = classifier_accuracy([classifiers[1]], images[:, None], labels)
    assert accuracy.shape == (1,)
    assert float(accuracy[0]) > 0.9


# --------------------------------------------------------------------------------------------
# our own classifiers


def _synthetic_task(n, m, seed):
    """Digit ``c`` is a bright bar at one of 10 places (place shifted per modality) on noise:
    uint8 images ``(n, m, 3, 28, 28)`` and labels ``(n,)``."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = torch.rand(n, m, 3, 28, 28, generator=gen) * 0.4
    for k in range(m):
        place = (labels + 3 * k) % 10
        for c in range(10):
            rows = place == c
            top, left = 4 + 12 * (c // 5), 1 + 5 * (c % 5)
            images[rows, k, k % 3, top : top + 8, left : left + 5] = 1.0
    return (images * 255).to(torch.uint8), labels


def test_stacked_training_network_equals_separate_classifiers():
    torch.manual_seed(0)
    classifiers = [DigitClassifier().eval() for _ in range(3)]
    stacked = _StackedDigitClassifiers(classifiers).eval()
    x = torch.rand(7, 3, 3, 28, 28)
    logits = stacked(x)
    for k, clf in enumerate(classifiers):
        assert torch.allclose(logits[:, k], clf(x[:, k]), atol=1e-5)
    for clf, back in zip(classifiers, stacked.unstack()):
        for key, value in clf.state_dict().items():
            assert torch.equal(value, back.state_dict()[key])


def test_training_improves_accuracy_and_is_seeded():
    images, labels = _synthetic_task(600, 2, seed=0)
    test_images, test_labels = _synthetic_task(300, 2, seed=1)
    torch.manual_seed(123)
    before = classifier_accuracy([DigitClassifier(), DigitClassifier()], test_images, test_labels)
    state = torch.get_rng_state()
    trained = train_digit_classifiers(images, labels, epochs=2, batch_size=50, lr=3e-3, seed=0, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # global random state untouched
    after = classifier_accuracy(trained, test_images, test_labels)
    assert after.shape == (2,)
    assert bool((after > 0.8).all()) and bool((after > before + 0.5).all()), (before, after)
    again = train_digit_classifiers(images[:100], labels[:100], epochs=1, batch_size=50, seed=0, progress=False)
    same = train_digit_classifiers(images[:100], labels[:100], epochs=1, batch_size=50, seed=0, progress=False)
    for a, b in zip(again, same):
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in MOPOE_SHAPES)


def test_training_rejects_bad_input():
    images, labels = _synthetic_task(20, 2, seed=0)
    with pytest.raises(ValueError, match=r"\(N, M, 3, 28, 28\)"):
        train_digit_classifiers(images[:, 0], labels, progress=False)
    with pytest.raises(ValueError, match="shape"):
        train_digit_classifiers(images, labels[:5], progress=False)
    with pytest.raises(ValueError, match="0..9"):
        train_digit_classifiers(images, labels + 10, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_digit_classifiers(images, labels, epochs=0, progress=False)


def test_save_load_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    classifiers = [DigitClassifier().eval() for _ in range(3)]
    path = tmp_path / "sub" / "digit_classifiers.pt"
    metadata = {"seed": 0, "epochs": 3, "accuracy": torch.tensor([0.5, 0.25, 1.0]), "note": "test"}
    save_classifiers(classifiers, path, metadata)
    assert not path.with_name(path.name + ".tmp").exists()
    loaded, meta = load_classifiers(path)
    assert meta == {"seed": 0, "epochs": 3, "accuracy": [0.5, 0.25, 1.0], "note": "test"}
    x = torch.rand(9, 3, 3, 28, 28)
    assert torch.equal(predict_digits(loaded, x), predict_digits(classifiers, x))
    for a, b in zip(classifiers, loaded):
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in MOPOE_SHAPES)

    with pytest.raises(FileNotFoundError):
        load_classifiers(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        load_classifiers(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save(classifiers[0].state_dict(), foreign)  # a MoPoE-style state dict
    with pytest.raises(ValueError, match="load_mopoe_classifiers"):
        load_classifiers(foreign)
    with pytest.raises(ValueError, match="metadata"):
        save_classifiers(classifiers, tmp_path / "x.pt", {"bad": object()})
    with pytest.raises(ValueError, match="DigitClassifier"):
        save_classifiers([nn.Linear(2, 2)], tmp_path / "x.pt", {})


# --------------------------------------------------------------------------------------------
# FID Inception weights


def _no_weights_anywhere(monkeypatch, tmp_path):
    pfi = pytest.importorskip("pytorch_fid.inception", reason="FID needs the pytorch-fid package")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(fid_module, "_hub_cache_file", lambda: tmp_path / "empty_cache" / "weights.pth")
    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)


def _assert_says_what_to_pass(message):
    for needed in ("weights_path=", "--inception-weights", INCEPTION_WEIGHTS_ENV,
                   "pt_inception-2015-12-05-6726825d.pth", "github.com/mseitzer/pytorch-fid"):
        assert needed in message


def test_inception_without_weights_says_what_to_pass(monkeypatch, tmp_path):
    _no_weights_anywhere(monkeypatch, tmp_path)
    with pytest.raises(InceptionWeightsUnavailable) as info:
        InceptionFeatureExtractor(download=False)
    _assert_says_what_to_pass(str(info.value))
    with pytest.raises(InceptionWeightsUnavailable) as info:
        InceptionFeatureExtractor(weights_path=tmp_path / "missing.pth")
    assert "missing.pth" in str(info.value)
    _assert_says_what_to_pass(str(info.value))
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "from_env.pth"))
    with pytest.raises(InceptionWeightsUnavailable, match=INCEPTION_WEIGHTS_ENV):
        InceptionFeatureExtractor()
    assert issubclass(InceptionWeightsUnavailable, RuntimeError)


def test_inception_failed_download_says_what_to_pass(monkeypatch, tmp_path):
    _no_weights_anywhere(monkeypatch, tmp_path)
    with pytest.raises(InceptionWeightsUnavailable) as info:
        InceptionFeatureExtractor()  # builds the network, then the (patched) download fails
    assert "no network in this test" in str(info.value)
    _assert_says_what_to_pass(str(info.value))


def _fid_inception_architecture_with_random_weights():
    """The FID Inception network of pytorch-fid, built here (test only) with random weights and
    random batch-norm statistics, to exercise the loading path without the real file."""
    import torchvision

    pfi = pytest.importorskip("pytorch_fid.inception", reason="FID needs the pytorch-fid package")

    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


@pytest.fixture(scope="module")
def random_fid_inception_file(tmp_path_factory):
    """A weights file for the FID architecture, with random weights (built in this test only)."""
    torch.manual_seed(0)
    state = _fid_inception_architecture_with_random_weights()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path, state


def test_inception_loads_exactly_the_given_weights(monkeypatch, tmp_path, random_fid_inception_file):
    _no_weights_anywhere(monkeypatch, tmp_path)  # any download attempt would fail loudly
    path, state = random_fid_inception_file
    extractor = InceptionFeatureExtractor(weights_path=path, batch_size=2)
    assert extractor.source == str(path)
    net = extractor.network
    assert not net.training
    assert torch.equal(net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(net.blocks[2][7].branch7x7dbl_5.conv.weight, state["Mixed_6e.branch7x7dbl_5.conv.weight"])
    assert torch.equal(net.blocks[3][2].branch_pool.bn.running_mean, state["Mixed_7c.branch_pool.bn.running_mean"])

    rgb, grey = _rgb(1, 5), _rgb(1, 6)[:, :1]
    feats = extractor(torch.cat([rgb, grey.expand(-1, 3, -1, -1)]))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and feats.std() > 0
    assert torch.allclose(extractor(rgb), feats[:1], atol=1e-5)  # deterministic, batch-independent
    assert torch.allclose(extractor(grey), feats[1:], atol=1e-5)  # 1 channel = repeated to RGB


def test_inception_weights_file_that_is_not_a_state_dict(tmp_path):
    pytest.importorskip("pytorch_fid.inception", reason="FID needs the pytorch-fid package")
    path = tmp_path / "not_weights.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a state dict"):
        InceptionFeatureExtractor(weights_path=path)
    path.write_bytes(b"garbage")
    with pytest.raises(InceptionWeightsUnavailable, match="cannot read"):
        InceptionFeatureExtractor(weights_path=path)


def test_inception_weights_of_another_architecture(tmp_path, random_fid_inception_file):
    _, state = random_fid_inception_file
    wrong = tmp_path / "wrong.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, wrong)
    with pytest.raises(ValueError, match=r"(?s)do not fit.*Missing key.*Mixed_7c"):
        InceptionFeatureExtractor(weights_path=wrong)
