"""Heavy-tailed benchmark data, the quantile metric and the heavy-tails example."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pyro_mcvae.data import make_heavy_tail_splits, sample_skew_t
from pyro_mcvae.metrics import quantile_errors

ROOT = Path(__file__).resolve().parents[2]


def test_data_are_seeded_and_have_the_stated_law():
    a, b = sample_skew_t(50_000, 1), sample_skew_t(50_000, 1)
    assert a.shape == (50_000, 4, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_skew_t(50_000, 2))
    # Undo the per-component affine map: component k is k + (1 + k/2) y_k.
    k = np.arange(4)[None, :, None]
    y = (a - k) / (1.0 + 0.5 * k)
    # Skewed in opposite directions per coordinate (robust check: quantile asymmetry; the
    # moments of a t with 3 degrees of freedom converge too slowly to test).
    q01, q50, q99 = np.quantile(y, [0.01, 0.5, 0.99], axis=0)
    right, left = q99 - q50, q50 - q01
    assert (right[:, 0] > 1.3 * left[:, 0]).all() and (left[:, 1] > 1.3 * right[:, 1]).all()
    # Heavy tails: far more mass beyond 5 standard deviations than a Gaussian's 6e-7.
    z = (y - y.mean(0)) / y.std(0)
    assert (np.abs(z) > 5).mean() > 1e-3
    # The Gaussian part has the copula benchmark's pattern (coordinate 1 alternates in sign,
    # coordinate 2 is all positive); the mixing variable shared by the components of a coordinate
    # adds positive dependence on top, so pairs with R = -0.8 are much less correlated than pairs
    # with R = +0.8, but not negatively.
    rho = stats.spearmanr(y[:, :, 0]).statistic
    assert rho[0, 2] > rho[0, 1] + 0.4 and rho[1, 3] > rho[1, 2] + 0.4
    assert (stats.spearmanr(y[:, :, 1]).statistic > 0.5).all()


def test_splits_are_independent_and_reproducible():
    d = make_heavy_tail_splits(1000, 200, seed=3)
    assert d.train.shape == (1000, 4, 2) and d.test.shape == d.reference.shape == (200, 4, 2)
    assert not np.array_equal(d.test, d.reference)
    np.testing.assert_array_equal(d.test, make_heavy_tail_splits(1000, 200, seed=3).test)
    with pytest.raises(ValueError, match="df"):
        sample_skew_t(10, 0, df=2.0)


def test_quantile_errors_against_a_direct_computation():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4000, 2, 1))
    gen = 1.5 * rng.standard_normal((4000, 2, 1))  # tails too wide by half
    out = quantile_errors(gen, ref, (0.01, 0.99))
    iqr = np.subtract(*np.quantile(ref, [0.75, 0.25], axis=0))
    for p in (0.01, 0.99):
        want = np.abs(np.quantile(gen, p, axis=0) - np.quantile(ref, p, axis=0)) / iqr
        np.testing.assert_allclose(out["by_level"][p], want)
        assert out["signed_mean"][p] > 0.5  # generated tails reach further out on both sides
    with pytest.raises(ValueError, match="finite"):
        quantile_errors(np.full((5, 2, 1), np.nan), ref)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        quantile_errors(gen, ref, (0.0,))


def test_heavy_tails_example_one_epoch(tmp_path):
    out = tmp_path / "ht"
    cmd = [sys.executable, str(ROOT / "examples" / "heavy_tails.py"), "--epochs", "1", "--n-train", "512",
           "--n-test", "200", "--population-n", "1000", "--out", str(out), "--no-progress",
           "--likelihood-samples", "20", "--likelihood-tuples", "8", "--sampler-components", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert list(record["results"]) == ["gmrf", "almrf"]
    run = record["results"]["almrf"][0]
    assert run["elbo"] == "trace" and set(run["quantile_errors"]["mean"]) == {"0.01", "0.99"}
    assert (out / "quantiles.png").stat().st_size > 20_000
    assert "| almrf |" in (out / "table.md").read_text()
    # the ALMRF's likelihoods (its exact conditional given one component) and its latent sampler
    assert run["likelihood"]["joint"]["mean"] < float("inf") and set(run["likelihood"]["conditional_ratio"]) == {
        "0", "1", "2", "3"}
    assert run["latent_sampler"]["2"]["sample"]["joint_w1_mean"] > 0
    assert "**Log-likelihoods**" in (out / "table.md").read_text()
