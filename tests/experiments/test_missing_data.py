"""Incomplete training data in the vector benchmarks (``--missing-ratio``): the mask, what the
runner hands the trainer, results.json, and the models that cannot train on it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_example
from pyro_mcvae.data import expected_absent_fraction, make_copula_splits, missing_mask
from pyro_mcvae.experiments import runner
from pyro_mcvae.experiments.base import MASK_SEED_OFFSET, get_experiment, parse_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--n-train", "256", "--n-test", "100", "--population-n", "1000", "--no-progress",
        "--likelihood-samples", "20", "--likelihood-tuples", "16", "--sampler-components", "2"]


def test_training_data_are_masked_seeded_and_the_mask_reaches_the_trainer(tmp_path, monkeypatch):
    experiment = get_experiment("copula")
    config = parse_config(experiment, ["--missing-ratio", "0.5", "--data-seed", "3", "--out", str(tmp_path), *TINY])
    data = experiment.data(config)
    mask = missing_mask(256, 4, 0.5, seed=3 + MASK_SEED_OFFSET)
    assert torch.equal(experiment.train_mask(data), mask)
    full = make_copula_splits(256, 100, seed=3).train
    np.testing.assert_array_equal(data.train[mask.numpy()], full[mask.numpy()])
    assert not data.train[~mask.numpy()].any()  # absent entries zeroed
    np.testing.assert_array_equal(data.test, make_copula_splits(256, 100, seed=3).test)  # test complete
    assert data.missing["absent_fraction"] == pytest.approx(float((~mask).double().mean()))
    assert data.missing["expected_absent_fraction"] == pytest.approx(expected_absent_fraction(4, 0.5), abs=1e-6)

    seen = {}

    def fake_fit(model, xs, train_config, **options):
        seen.update(options, xs=xs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "fit", fake_fit)
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_one(experiment, config, data, "gmrf", 0)
    assert torch.equal(seen["mask"], mask) and seen["out_dir"].name == "seed0-missing0.5"
    config0 = parse_config(experiment, ["--out", str(tmp_path), *TINY])
    data0 = experiment.data(config0)
    assert experiment.train_mask(data0) is None and data0.missing == {"missing_ratio": 0.0, "absent_fraction": 0.0}
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_one(experiment, config0, data0, "gmrf", 0)
    assert seen["mask"] is None and seen["out_dir"].name == "seed0"


def _copula(args):
    """The copula example in this process (``helpers.run_example``)."""
    return run_example(ROOT / "examples" / "copula.py", args)


def test_copula_example_trains_gmrf_and_a_baseline_on_incomplete_data(tmp_path):
    out = tmp_path / "copula"
    proc = _copula(["--model", "gmrf", "mmvaeplus", "--missing-ratio", "0.5", "--jobs", "1", "--out", str(out),
                    *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trained on incomplete data: missing ratio 0.5" in proc.stdout
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["missing_ratio"] == 0.5
    missing = record["missing"]
    assert missing["missing_ratio"] == 0.5 and missing["n_train"] == 256 and missing["min_present"] == 1
    assert 0.3 < missing["absent_fraction"] < 0.6 and len(missing["absent_fraction_by_component"]) == 4
    assert missing["expected_absent_fraction"] == pytest.approx(0.466667, abs=1e-6)
    for model in ("gmrf", "mmvaeplus"):
        run = record["results"][model][0]
        assert run["steps"] == 1 and np.isfinite(run["final_loss"])
        assert run["sample"]["unconditional"]["joint_w1_mean"] > 0
        assert set(run["sample"]["conditional"]["by_source"]) == {"0", "1", "2", "3"}
        assert (out / model / "seed0-missing0.5" / "checkpoint.pt").is_file()
        assert np.isfinite(run["likelihood"]["joint"]["mean"]) and run["latent_sampler"]["2"]["sample"]["joint_w1_mean"] > 0


@pytest.mark.parametrize("args,match", [
    (["--model", "nnmrf", "--missing-ratio", "0.25"], "model 'nnmrf' cannot train on incomplete data"),
    (["--missing-ratio", "1.0"], "--missing-ratio must be in"),
])
def test_copula_example_rejects_what_cannot_run(tmp_path, args, match):
    proc = _copula([*args, "--out", str(tmp_path), *TINY])
    assert proc.returncode == 2 and match in proc.stderr, proc.stderr[-2000:]


def test_heavy_tails_rejects_the_almrf_on_incomplete_data(tmp_path):
    experiment = get_experiment("heavy_tails")
    with pytest.raises(SystemExit):
        parse_config(experiment, ["--model", "almrf", "--missing-ratio", "0.5", "--out", str(tmp_path)])
    config = parse_config(experiment, ["--model", "gmrf", "--missing-ratio", "0.5", "--out", str(tmp_path)])
    assert config.missing_ratio == 0.5


def test_missing_ratio_sweep_writes_one_table_and_figure(tmp_path):
    """examples/missing_ratio.py: one benchmark run per ratio in OUT/ratio<R>, then the table of
    quality against the ratio and its figure."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "examples" / "missing_ratio.py"), "--ratios", "0", "0.5", "--model", "gmrf",
           "--out", str(out), "--jobs", "1", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "table.md").read_text()
    assert "| gmrf | 0 | 1 |" in table and "| gmrf | 0.5 | 1 |" in table and "log p(x_rest given x_k)" in table
    assert json.loads((out / "ratio0.5" / "results.json").read_text())["settings"]["missing_ratio"] == 0.5
    assert (out / "ratio0" / "gmrf" / "seed0" / "checkpoint.pt").is_file()
    assert (out / "ratio0.5" / "gmrf" / "seed0-missing0.5" / "checkpoint.pt").is_file()
    assert (out / "missing_ratio.png").stat().st_size > 10_000
