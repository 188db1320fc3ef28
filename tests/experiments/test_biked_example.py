"""The bicycle-assembly example runs end to end for one epoch on a tiny procedural set. The runs
go through the example script in this process (``helpers.run_example``: the same command line
without a second interpreter's start-up); ``test_biked_example_rejects_bad_data_dir`` runs it as
its own process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "biked.py"


def test_biked_example_one_epoch(tmp_path):
    out = tmp_path / "out"
    proc = run_example(EXAMPLE, ["--quick", "--model", "gmrf", "mmvae", "--epochs", "1", "--n-train", "32",
                                 "--n-test", "16", "--width", "4", "--batch-size", "32", "--fid", "off",
                                 "--regressor-epochs", "1", "--save-samples", "6", "--out", out, "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| gmrf |" in proc.stdout and "| mmvae |" in proc.stdout and "Real test assemblies" in proc.stdout
    record = json.loads((out / "results.json").read_text())
    for name in ("gmrf", "mmvae"):
        r = record[name]
        assert {"command", "versions", "settings", "training", "unconditional", "conditional"} <= set(r)
        assert r["settings"]["latent_dim"] == (4 if name == "gmrf" else 20)
        assert r["conditional"]["com_w1"]["value"] >= 0
        assert set(r["conditional"]["ssim"]["per_component"]) == {"saddle", "frame", "crank", "wheels", "handlebars"}
        # The given frame is passed through: its SSIM against the real frame is exactly 1.
        assert abs(r["conditional"]["ssim"]["per_component"]["frame"] - 1.0) < 1e-9
        assert {"crank", "rear_wheel", "front_wheel"} <= set(r["conditional"]["validity"])
    assert (out / "figure.png").stat().st_size > 5_000
    assert (out / "gmrf" / "train" / "checkpoint.pt").is_file()
    samples = torch.load(out / "mmvae" / "samples.pt")
    assert samples["unconditional"].shape == (6, 5, 64, 64) and set(samples["conditional"]) == set(range(5))
    assert torch.equal(samples["conditional"][1][:, 1], samples["test"][:, 1])  # the given frame


def test_biked_example_trains_on_incomplete_assemblies(tmp_path):
    """--missing-ratio: components absent at random (never all), the mask reaches the trainer,
    the run lives in train-missing<R>; the test designs stay complete."""
    out = tmp_path / "out"
    args = ["--quick", "--model", "gmrf", "--epochs", "1", "--n-train", "64", "--n-test", "16", "--width", "4",
            "--batch-size", "32", "--fid", "off", "--missing-ratio", "0.5", "--out", out, "--no-progress"]
    proc = run_example(EXAMPLE, args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    missing = json.loads((out / "results.json").read_text())["gmrf"]["training"]["missing"]
    assert missing["missing_ratio"] == 0.5 and missing["n_train"] == 64 and missing["min_present"] == 1
    assert missing["expected_absent_fraction"] == pytest.approx(0.4839, abs=1e-4)  # M = 5: (0.5 - 0.5^5) / (1 - 0.5^5)
    assert 0.3 < missing["absent_fraction"] < 0.65 and missing["complete_tuples"] < 64
    assert (out / "gmrf" / "train-missing0.5" / "checkpoint.pt").is_file() and not (out / "gmrf" / "train").exists()
    proc = run_example(EXAMPLE, [*args[:-4], "1.0", *args[-3:]])
    assert proc.returncode == 2 and "--missing-ratio" in proc.stderr


def test_biked_example_rejects_bad_arguments(tmp_path):
    for flag in (["--latent-dim", "0"], ["--save-samples", "-1"], ["--n-train", "0"]):
        proc = run_example(EXAMPLE, ["--quick", *flag, "--out", tmp_path])
        assert proc.returncode == 2 and flag[0] in proc.stderr, proc.stderr


def test_biked_example_rejects_bad_data_dir(tmp_path):
    """As its own process: one line on stderr, no traceback."""
    cmd = [sys.executable, str(EXAMPLE), "--quick", "--data-dir", str(tmp_path / "none"),
           "--out", str(tmp_path / "out"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "none" in proc.stderr


@pytest.mark.parametrize("preset,arch", [("cpu", "resnet"), ("cpu", "mlp"), ("gpu", None)])
def test_biked_presets_budget_and_structure_curve(tmp_path, preset, arch):
    """The cpu preset's code path at a tiny size, on either network family, and the gpu preset's
    (its ResNets, on the CPU here and narrow): a wall-clock budget, beta from the command line,
    and the structure curve (CSV and PNG)."""
    out = tmp_path / preset
    nets = {"mlp": ["--arch", "mlp", "--hidden", "32"], "resnet": ["--arch", "resnet", "--width", "4"],
            None: ["--width", "4"]}[arch]
    # a budget of 1.2 s (the first step ends past it: one step, two curve rows) and regressors of one epoch
    proc = run_example(EXAMPLE, ["--preset", preset, "--device", "cpu", "--model", "gmrf", "--n-train", "64",
                                 "--n-test", "16", *nets, "--batch-size", "32", "--minutes", "0.02", "--curve-every",
                                 "1", "--curve-tuples", "16", "--beta", "0.5", "--fid", "off", "--regressor-epochs", "1",
                                 "--out", out, "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "gmrf" / "results.json").read_text())
    settings = record["settings"]
    assert settings["preset"] == preset and settings["minutes"] == 0.02
    assert float(settings["beta"]) == 0.5
    assert settings["arch"] == (arch or "resnet") and settings["width"] == (8 if arch == "mlp" else 4)
    assert settings["prior_form"] == "standardized" and settings["subset_posteriors"] == 1
    if arch == "mlp":
        assert settings["hidden"] == [32]
    assert record["training"]["minutes_budget"] == 0.02 and record["training"]["steps"] >= 1
    rows = (out / "gmrf" / "curve.csv").read_text().strip().splitlines()
    assert rows[0] == "step,seconds,eval_com_w1_unconditional,eval_com_w1_conditional,eval_ssim_bike"
    assert rows[1].startswith("0,")
    assert Path(record["training"]["curve"]).stat().st_size > 2_000


def test_bike_gpu_preset_settings_and_bf16():
    """``auto`` is the gpu preset on CUDA: the paper's width-32 ResNets under a 14-minute budget
    (GMRF and MMVAE+ within 35 minutes on one H100), bf16 autocast on CUDA only."""
    from pyro_mcvae.experiments.base import bf16_wanted
    from pyro_mcvae.experiments.bikes import BikeRun

    run = BikeRun(model="gmrf", device="cuda")
    assert run.resolved_preset() == "gpu"
    assert (run.value("arch"), run.value("width"), run.value("minutes"), run.value("n_train")) == ("resnet", 32, 14.0,
                                                                                                   20000)
    assert 2 * run.value("minutes") <= 35 - 5  # two models, with five minutes for regressors and evaluation
    assert bf16_wanted(run, "cuda:0") and not bf16_wanted(run, "cpu")
    assert not bf16_wanted(BikeRun(model="gmrf", preset="cpu"), "cuda") and bf16_wanted(BikeRun(amp=True), "cpu")
    assert not bf16_wanted(BikeRun(quick=True, device="cuda"), "cuda")
    assert BikeRun(model="gmrf", device="cpu").resolved_preset() == "cpu"


def test_bike_gmrf_training_options_reach_the_model():
    """The presets' GMRF (quick/full: the paper's; cpu: beta 1, standardised prior, a subset term),
    --prior-form, --subset-posteriors and --subset-max-size over them, and the objective's
    subset-posterior terms; invalid values are refused."""
    from pyro_mcvae.experiments.bikes import BikeRun, build_bike_model
    from pyro_mcvae.infer.objectives import SubsetELBO, objective_for

    paper = BikeRun(model="gmrf", arch="mlp", hidden=[8], preset="full")  # the paper's GMRF
    assert paper.value("beta") == 1e-3 and BikeRun(model="mmvae", preset="full").value("beta") == 1.0
    plain = build_bike_model(paper)
    assert not isinstance(objective_for(plain), SubsetELBO) and not plain.prior.standardized
    # the cpu preset's GMRF: beta 1, the standardised prior, one subset term on one given component
    run = BikeRun(model="gmrf", arch="mlp", hidden=[8], preset="cpu")
    assert run.value("beta") == 1.0 and run.value("subset_posteriors") == 1 and run.value("subset_max_size") == 1
    run.check()
    model = build_bike_model(run)
    rows, k, pool = model.subset_terms()
    assert k == 1 and pool.shape == (5, 5) and bool((pool.sum(1) == 1).all())  # one given component
    assert model.subset_per_example() and model.prior.standardized
    assert isinstance(objective_for(model), SubsetELBO)
    # explicit options win over the preset
    override = build_bike_model(BikeRun(model="gmrf", arch="mlp", hidden=[8], preset="cpu", subset_posteriors=0,
                                        prior_form="paper"))
    assert not isinstance(objective_for(override), SubsetELBO) and not override.prior.standardized
    for bad in ({"subset_posteriors": -1}, {"subset_max_size": 5}, {"subset_max_size": 0}):
        with pytest.raises(ValueError):
            BikeRun(model="gmrf", **bad).check()
