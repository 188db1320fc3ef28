"""The non-Gaussian-copula benchmark end to end at a tiny size (one epoch), through the example."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_mcvae.experiments import get_experiment, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_nongaussian_example_one_epoch(tmp_path):
    out = tmp_path / "x"
    cmd = [sys.executable, str(ROOT / "examples" / "nongaussian.py"), "--kind", "x", "--model", "gmrf", "almrf",
           "--epochs", "1", "--n-train", "256", "--n-test", "100", "--population-n", "1000",
           "--reference-n", "2000", "--hidden", "8", "--jobs", "1", "--out", str(out), "--no-progress",
           "--likelihood-samples", "20", "--likelihood-tuples", "8", "--sampler-components", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| gmrf |" in proc.stdout and "| almrf |" in proc.stdout and "noise floor" in proc.stdout
    record = json.loads((out / "results.json").read_text())
    assert record["noise_floor"]["slice"]["w1_mean"] > 0 and record["settings"]["kind"] == "x"
    for name in ("gmrf", "almrf"):
        (run,) = record["results"][name]
        for protocol in ("sample", "mean"):
            scores = run[protocol]
            assert set(scores["unconditional"]["joint_w1"]) == {"1", "2"}
            assert set(scores["conditional"]["by_source"]) == {"0", "1", "2", "3"}
            assert set(scores["slice"]["w1"]) == {"0", "1", "2", "3"} and scores["slice"]["w1_mean"] > 0
    assert (out / "table.md").read_text().startswith("**Protocol `sample`**")
    assert (out / "pairplot_gmrf.png").is_file()


def test_nongaussian_options_and_bad_settings():
    experiment = get_experiment("nongaussian")
    config = parse_config(experiment, ["--model", "all", "--kind", "t", "--window", "0.9", "1.0"])
    assert config.model == ["gmrf", "almrf", "nnmrf"] and config.kind == "t" and config.window == [0.9, 1.0]
    for bad in (["--kind", "z"], ["--window", "0.9", "0.8"], ["--window", "0.5"], ["--rho", "1.0"]):
        with pytest.raises(SystemExit):
            parse_config(experiment, bad)
