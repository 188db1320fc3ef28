"""Missing-at-random presence masks: the documented law (a truncated binomial absent count, a
uniform absent set given the count), seeding, constraints, the storage convention."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from pyro_mcvae.data import absent_count_law, apply_mask, expected_absent_fraction, missing_mask

N = 200_000


def brute_force_law(m, r, p):
    """Conditional law of iid Bernoulli(r) absences given >= p present, by enumerating patterns."""
    probs = {}
    for pattern in itertools.product([0, 1], repeat=m):  # 1 = absent
        k = sum(pattern)
        if m - k >= p:
            probs[pattern] = r ** k * (1 - r) ** (m - k)
    z = sum(probs.values())
    return {pat: v / z for pat, v in probs.items()}


@pytest.mark.parametrize("m,r,p", [(4, 0.5, 1), (5, 0.25, 1), (3, 0.7, 2), (2, 0.5, 1)])
def test_law_matches_the_conditioned_independent_law(m, r, p):
    law = brute_force_law(m, r, p)
    count = np.zeros(m - p + 1)
    for pattern, v in law.items():
        count[sum(pattern)] += v
    np.testing.assert_allclose(absent_count_law(m, r, p).numpy(), count, rtol=1e-12)
    want = sum(v * sum(pat) for pat, v in law.items()) / m
    assert expected_absent_fraction(m, r, p) == pytest.approx(want, rel=1e-12)
    if p == 1:  # closed form quoted in the module docstring
        assert expected_absent_fraction(m, r) == pytest.approx((m * r - m * r ** m) / (m * (1 - r ** m)))
    assert expected_absent_fraction(4, 0.5) == pytest.approx(0.4667, abs=1e-4)
    assert expected_absent_fraction(5, 0.5) == pytest.approx(0.4839, abs=1e-4)


@pytest.mark.parametrize("m,r,p", [(4, 0.5, 1), (5, 0.25, 1), (3, 0.7, 2)])
def test_200k_draws_follow_the_documented_law(m, r, p):
    mask = missing_mask(N, m, r, seed=123, min_present=p)
    assert mask.shape == (N, m) and mask.dtype == torch.bool
    assert bool((mask.sum(-1) >= p).all())
    absent = (~mask).double()
    # Per-entry absent rate: E[K] / M within 4 standard errors (SE of the row mean of K / M).
    law = absent_count_law(m, r, p).numpy()
    k = np.arange(len(law))
    mean_k, var_k = (law * k).sum(), (law * k ** 2).sum() - (law * k).sum() ** 2
    se = math.sqrt(var_k / N) / m
    assert abs(float(absent.mean()) - mean_k / m) < 4 * se, (float(absent.mean()), mean_k / m, se)
    # Each component alone: rate E[K] / M (exchangeable), SE of a Bernoulli mean.
    q = mean_k / m
    per_column = absent.mean(0).numpy()
    assert np.all(np.abs(per_column - q) < 4 * math.sqrt(q * (1 - q) / N)), per_column
    # The absent count: chi-square goodness of fit to the truncated binomial.
    observed = np.bincount(absent.sum(-1).long().numpy(), minlength=len(law))
    assert len(observed) == len(law)
    assert scipy.stats.chisquare(observed, law * N).pvalue > 1e-4
    # The full pattern law (2^M cells) against the enumeration.
    patterns = brute_force_law(m, r, p)
    codes = (absent.long() * (2 ** torch.arange(m - 1, -1, -1))).sum(-1).numpy()
    counts = np.bincount(codes, minlength=2 ** m)
    expected = np.zeros(2 ** m)
    for pat, v in patterns.items():
        expected[int("".join(map(str, pat)), 2)] = v * N
    assert counts[expected == 0].sum() == 0
    keep = expected > 0
    assert scipy.stats.chisquare(counts[keep], expected[keep]).pvalue > 1e-4


def test_no_row_is_all_absent_even_at_high_ratio():
    mask = missing_mask(50_000, 3, 0.95, seed=0)
    assert bool(mask.any(-1).all())
    assert 0.5 < float((~mask).double().mean()) < 2 / 3  # close to the cap (M - 1) / M


def test_min_present_is_respected():
    mask = missing_mask(20_000, 5, 0.9, seed=1, min_present=3)
    assert int(mask.sum(-1).min()) == 3
    assert bool(missing_mask(100, 4, 0.8, seed=1, min_present=4).all())  # nothing may go


def test_seeded_and_deterministic():
    a = missing_mask(1000, 4, 0.5, seed=7)
    torch.manual_seed(0)
    b = missing_mask(1000, 4, 0.5, seed=7)
    torch.manual_seed(99)
    c = missing_mask(1000, 4, 0.5, seed=7)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, missing_mask(1000, 4, 0.5, seed=8))
    state = torch.get_rng_state()
    missing_mask(10, 4, 0.5, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # the global stream is untouched


def test_ratio_zero_keeps_everything():
    assert bool(missing_mask(10_000, 4, 0.0, seed=0).all())
    assert expected_absent_fraction(4, 0.0) == 0.0
    assert missing_mask(0, 3, 0.5, seed=0).shape == (0, 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(missing_ratio=1.0), "missing_ratio"), (dict(missing_ratio=-0.1), "missing_ratio"),
    (dict(missing_ratio=float("nan")), "missing_ratio"),
    (dict(min_present=0), "min_present"), (dict(min_present=5), "min_present"),
    (dict(num_components=0), "num_components"), (dict(num_samples=-1), "num_samples"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(num_samples=10, num_components=4, missing_ratio=0.5, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        missing_mask(**args)


def test_apply_mask_zeroes_absent_entries_in_every_container():
    mask = missing_mask(30, 3, 0.5, seed=2)
    x = torch.rand(30, 3, 2) + 1.0
    out = apply_mask(x, mask)
    assert torch.equal(out == 0, (~mask)[:, :, None].expand_as(x)) and torch.equal(x[mask], out[mask])
    assert float(x.min()) >= 1.0  # the input is unchanged
    np.testing.assert_array_equal(apply_mask(x.numpy(), mask), out.numpy())
    parts = apply_mask([x[:, k] for k in range(3)], mask, fill=-1.0)
    for k in range(3):
        assert torch.equal(parts[k][~mask[:, k]], torch.full((int((~mask[:, k]).sum()), 2), -1.0))
    images = torch.full((30, 3, 1, 4, 4), 200, dtype=torch.uint8)
    assert torch.equal(apply_mask(images, mask).flatten(2).amax(-1) == 200, mask)
    with pytest.raises(ValueError, match="does not match"):
        apply_mask(torch.rand(30, 4, 2), mask)
    with pytest.raises(ValueError, match="finite"):
        apply_mask(x, mask, fill=float("nan"))
