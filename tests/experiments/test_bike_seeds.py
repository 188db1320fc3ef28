"""Assemblies summarised over seeds (pyro_mcvae.experiments.bikes.seed_summary, seed_table,
examples/biked_seeds.py) on hand-made records whose answers are known."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_mcvae.experiments.bikes import SEED_METRICS, seed_summary, seed_table

ROOT = Path(__file__).resolve().parents[2]


def _record(w1_uncond, ssim_bike, crank=0.01):
    validity = {"crank": {"median": crank}, "rear_wheel": {"median": 0.02}, "front_wheel": {"median": 0.04}}
    return {"unconditional": {"com_w1": {"value": w1_uncond}, "validity": validity},
            "conditional": {"com_w1": {"value": 0.05}, "validity": validity,
                            "ssim": {"generated_mean": 0.9, "assembly": ssim_bike}}}


# three seeds: the GMRF far ahead on unconditional W1, ahead within the spread on bike SSIM
RUNS = [
    {"gmrf": _record(0.10, 0.80), "mmvae": _record(0.30, 0.79), "mvae": _record(0.50, 0.70), "_samples": None},
    {"gmrf": _record(0.12, 0.70), "mmvae": _record(0.32, 0.79), "mvae": _record(0.52, 0.70)},
    {"gmrf": _record(0.14, 0.90), "mmvae": _record(0.28, 0.79), "mvae": _record(0.48, 0.70)},
]


def test_seed_summary_statistics_and_verdicts():
    s = seed_summary(RUNS)
    assert s["seeds"] == 3 and s["models"] == ["gmrf", "mmvae", "mvae"]
    w1 = s["metrics"]["COM W1 uncond."]
    assert w1["models"]["gmrf"]["mean"] == pytest.approx(0.12)
    assert w1["models"]["gmrf"]["sd"] == pytest.approx(np.std([0.10, 0.12, 0.14], ddof=1))
    assert w1["best"] == "gmrf"
    ref = w1["gmrf"]
    assert ref["best_other"] == "mmvae" and ref["margin"] == pytest.approx(0.30 - 0.12)
    assert ref["seeds_won"] == 3 and ref["separated"]
    bike = s["metrics"]["SSIM bike (cond.)"]
    assert bike["lower_is_better"] is False and bike["best"] == "gmrf"
    ref = bike["gmrf"]
    assert ref["margin"] == pytest.approx(0.80 - 0.79) and not ref["separated"]
    assert ref["seeds_won"] == 2  # seed 1 (0.70) loses to MMVAE's 0.79
    wheel = s["metrics"]["wheel-dropout (cond.)"]
    assert wheel["models"]["mvae"]["mean"] == pytest.approx(0.03) and wheel["models"]["mvae"]["sd"] == 0.0
    assert wheel["gmrf"]["margin"] == pytest.approx(0.0) and not wheel["gmrf"]["separated"]
    assert len(s["metrics"]) == len(SEED_METRICS)


def test_seed_table_marks_the_best_and_states_the_verdicts():
    table = seed_table(seed_summary(RUNS))
    assert "3 seed(s)" in table
    assert "**0.120 ± 0.020**" in table  # GMRF's unconditional W1, the best mean, in bold
    assert "- COM W1 uncond.: gmrf best, beyond the seed spread" in table
    assert "- SSIM bike (cond.): gmrf best, within the seed spread" in table


def test_seed_summary_one_seed_models_in_every_run_and_errors():
    one = seed_summary(RUNS[:1])
    assert one["metrics"]["COM W1 uncond."]["models"]["gmrf"]["sd"] == 0.0
    partial = [RUNS[0], {"gmrf": RUNS[1]["gmrf"]}]
    assert seed_summary(partial)["models"] == ["gmrf"]
    # without the reference model: no verdict, the statistics still
    s = seed_summary([{k: v for k, v in run.items() if k != "gmrf"} for run in RUNS])
    assert "gmrf" not in s["metrics"]["COM W1 uncond."] and s["metrics"]["COM W1 uncond."]["best"] == "mmvae"
    # real BIKED folders have no validity: those metrics are left out
    no_validity = [{m: {**r, "conditional": {k: v for k, v in r["conditional"].items() if k != "validity"}}
                    for m, r in run.items() if not m.startswith("_")} for run in RUNS]
    assert "crank-BB (cond.)" not in seed_summary(no_validity)["metrics"]
    with pytest.raises(ValueError, match="no runs"):
        seed_summary([])
    with pytest.raises(ValueError, match="no model"):
        seed_summary([{"gmrf": RUNS[0]["gmrf"]}, {"mmvae": RUNS[0]["mmvae"]}])


def test_biked_seeds_script(tmp_path):
    dirs = []
    for i, run in enumerate(RUNS):
        d = tmp_path / f"seed{i}"
        d.mkdir()
        models = {k: v for k, v in run.items() if not k.startswith("_")}
        if i == 0:  # one combined file, as a single command writes it
            (d / "results.json").write_text(json.dumps(models))
        else:  # each model's own file, as separate commands into one folder leave them
            for name, record in models.items():
                (d / name).mkdir()
                (d / name / "results.json").write_text(json.dumps(record))
        dirs.append(str(d))
    out = tmp_path / "seeds.md"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "biked_seeds.py"), *dirs, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "beyond the seed spread" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == dirs
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "biked_seeds.py"), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no results.json" in bad.stderr
