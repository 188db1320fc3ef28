"""Results over seeds (pyro_mcvae.experiments.seeds) with the assemblies' metrics and variants
(pyro_mcvae.experiments.bikes, examples/biked_seeds.py) on hand-made records whose answers are known."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_example
from pyro_mcvae.experiments.bikes import BIKE_VARIANTS, CPU, SEED_METRICS
from pyro_mcvae.experiments.seeds import runs_by_seed, seed_summary, seed_table

variant_label = BIKE_VARIANTS.label

ROOT = Path(__file__).resolve().parents[2]


def _record(w1_uncond, ssim_bike, crank=0.01):
    validity = {"crank": {"median": crank}, "rear_wheel": {"median": 0.02}, "front_wheel": {"median": 0.04}}
    return {"unconditional": {"com_w1": {"value": w1_uncond}, "validity": validity},
            "conditional": {"com_w1": {"value": 0.05}, "validity": validity,
                            "ssim": {"generated_mean": 0.9, "assembly": ssim_bike}}}


def _settings(model, seed, **changes):
    """A record's settings as examples/biked.py's cpu preset writes them, with ``changes``."""
    return {"settings": {"model": model, "seed": seed, "preset": "cpu", "quick": False,
                         **{k: CPU[k] for k in ("beta", "arch", "minutes", "prior_form", "subset_posteriors",
                                                "subset_max_size")}, **changes}}


# three seeds: the GMRF far ahead on unconditional W1, ahead within the spread on bike SSIM
RUNS = [
    {"gmrf": _record(0.10, 0.80), "mmvae": _record(0.30, 0.79), "mvae": _record(0.50, 0.70), "_samples": None},
    {"gmrf": _record(0.12, 0.70), "mmvae": _record(0.32, 0.79), "mvae": _record(0.52, 0.70)},
    {"gmrf": _record(0.14, 0.90), "mmvae": _record(0.28, 0.79), "mvae": _record(0.48, 0.70)},
]


def test_seed_summary_statistics_and_verdicts():
    s = seed_summary(RUNS, SEED_METRICS)
    assert s["seeds"] == 3 and s["models"] == ["gmrf", "mmvae", "mvae"]
    w1 = s["metrics"]["COM W1 uncond."]
    assert w1["models"]["gmrf"]["mean"] == pytest.approx(0.12)
    assert w1["models"]["gmrf"]["sd"] == pytest.approx(np.std([0.10, 0.12, 0.14], ddof=1))
    assert w1["best"] == "gmrf"
    ref = w1["verdicts"]["gmrf"]
    assert ref["best_other"] == "mmvae" and ref["margin"] == pytest.approx(0.30 - 0.12)
    assert ref["seeds_won"] == 3 and ref["separated"]
    bike = s["metrics"]["SSIM bike (cond.)"]
    assert bike["lower_is_better"] is False and bike["best"] == "gmrf"
    ref = bike["verdicts"]["gmrf"]
    assert ref["margin"] == pytest.approx(0.80 - 0.79) and not ref["separated"]
    assert ref["seeds_won"] == 2  # seed 1 (0.70) loses to MMVAE's 0.79
    wheel = s["metrics"]["wheel-dropout (cond.)"]
    assert wheel["models"]["mvae"]["mean"] == pytest.approx(0.03) and wheel["models"]["mvae"]["sd"] == 0.0
    assert wheel["verdicts"]["gmrf"]["margin"] == pytest.approx(0.0) and not wheel["verdicts"]["gmrf"]["separated"]
    assert len(s["metrics"]) == len(SEED_METRICS)


def test_seed_table_marks_the_best_and_states_the_verdicts():
    table = seed_table(seed_summary(RUNS, SEED_METRICS))
    assert "3 seeds;" in table
    assert "**0.120 ± 0.020**" in table  # GMRF's unconditional W1, the best mean, in bold
    assert "- COM W1 uncond.: gmrf best, beyond the seed spread" in table
    assert "- SSIM bike (cond.): gmrf best, within the seed spread" in table


def test_seed_summary_one_seed_models_in_every_run_and_errors():
    one = seed_summary(RUNS[:1], SEED_METRICS)
    assert one["metrics"]["COM W1 uncond."]["models"]["gmrf"]["sd"] == 0.0
    partial = [RUNS[0], {"gmrf": RUNS[1]["gmrf"]}]
    assert seed_summary(partial, SEED_METRICS)["models"] == ["gmrf"]
    # without the reference model: no verdict, the statistics still
    s = seed_summary([{k: v for k, v in run.items() if k != "gmrf"} for run in RUNS], SEED_METRICS)
    assert s["metrics"]["COM W1 uncond."]["verdicts"] == {} and s["metrics"]["COM W1 uncond."]["best"] == "mmvae"
    # real BIKED folders have no validity: those metrics are left out
    no_validity = [{m: {**r, "conditional": {k: v for k, v in r["conditional"].items() if k != "validity"}}
                    for m, r in run.items() if not m.startswith("_")} for run in RUNS]
    assert "crank-BB (cond.)" not in seed_summary(no_validity, SEED_METRICS)["metrics"]
    with pytest.raises(ValueError, match="no runs"):
        seed_summary([], SEED_METRICS)
    with pytest.raises(ValueError, match="no model"):
        seed_summary([{"gmrf": RUNS[0]["gmrf"]}, {"mmvae": RUNS[0]["mmvae"]}], SEED_METRICS)


def test_variant_label_names_what_differs_from_the_preset():
    assert variant_label(_settings("gmrf", 0)) == "gmrf"
    assert variant_label(_settings("gmrf", 0, beta="1")) == "gmrf"  # --beta's text, as recorded
    paper = "gmrf (beta 0.001, prior_form paper, subset_posteriors 0)"
    assert variant_label(_settings("gmrf", 0, beta=0.001, prior_form="paper", subset_posteriors=0)) == paper
    # a record written before --prior-form and --subset-posteriors existed ran the paper's GMRF
    legacy = _settings("gmrf", 0, beta=0.001)
    for name in ("prior_form", "subset_posteriors", "subset_max_size"):
        del legacy["settings"][name]
    assert variant_label(legacy) == paper
    assert variant_label(_settings("gmrf", 0, subset_max_size=4)) == "gmrf (subset_max_size 4)"
    # baselines: the GMRF's own settings are not theirs to differ in
    assert variant_label(_settings("mmvae", 0, prior_form="paper")) == "mmvae"
    assert variant_label(_settings("mmvaeplus", 0, beta=2.5, minutes=4.0)) == "mmvaeplus (beta 2.5, minutes 4.0)"
    # --quick: compared with the quick preset (the GMRF's beta there is the paper's 1e-3)
    quick = {"settings": {"model": "gmrf", "seed": 0, "quick": True, "preset": "auto", "beta": 0.001,
                          "arch": "resnet", "minutes": None, "prior_form": "paper", "subset_posteriors": 0}}
    assert variant_label(quick) == "gmrf"
    quick["settings"]["beta"] = 1.0
    assert variant_label(quick) == "gmrf (beta 1.0)"


def test_runs_by_seed_groups_by_the_records_seed_and_rejects_doubles():
    a, b, c = (dict(_record(0.1, 0.9), **_settings(m, seed)) for m, seed in (("gmrf", 2), ("mmvae", 0), ("gmrf", 0)))
    paper = dict(_record(0.2, 0.8), **_settings("gmrf", 0, beta=0.001, prior_form="paper", subset_posteriors=0))
    runs = runs_by_seed([a, b, c, paper], BIKE_VARIANTS)
    assert [sorted(r) for r in runs] == [["gmrf", "gmrf (beta 0.001, prior_form paper, subset_posteriors 0)", "mmvae"],
                                         ["gmrf"]]
    assert runs[1]["gmrf"] is a and runs[0]["gmrf"] is c
    with pytest.raises(ValueError, match="two records of 'gmrf' for seed 0"):
        runs_by_seed([c, dict(c)], BIKE_VARIANTS)
    with pytest.raises(ValueError, match="without settings"):
        runs_by_seed([_record(0.1, 0.9)], BIKE_VARIANTS)


def test_seed_summary_gives_every_gmrf_variant_a_verdict_against_the_baselines_only():
    paper = "gmrf (beta 0.001)"
    runs = [dict(run, **{paper: _record(0.05 + 0.01 * i, 0.6)}) for i, run in enumerate(RUNS)]
    s = seed_summary(runs, SEED_METRICS)
    w1 = s["metrics"]["COM W1 uncond."]
    assert w1["best"] == paper and set(w1["verdicts"]) == {"gmrf", paper}
    # the paper variant is not the preset GMRF's rival, nor the reverse
    assert w1["verdicts"]["gmrf"]["best_other"] == "mmvae" and w1["verdicts"][paper]["best_other"] == "mmvae"
    assert w1["verdicts"][paper]["margin"] == pytest.approx(0.30 - 0.06)
    bike = s["metrics"]["SSIM bike (cond.)"]["verdicts"][paper]
    assert bike["margin"] == pytest.approx(0.6 - 0.79) and bike["seeds_won"] == 0
    table = seed_table(s)
    assert f"- SSIM bike (cond.): {paper} not best" in table and "- SSIM bike (cond.): gmrf best" in table


def test_biked_seeds_script(tmp_path):
    # seed 0 as one combined file, seeds 1 and 2 as each model's own file in a folder (as separate
    # commands into one folder leave them), the paper's GMRF of every seed in files of its own
    sources = []
    for i, run in enumerate(RUNS):
        models = {k: dict(v, **_settings(k, i)) for k, v in run.items() if not k.startswith("_")}
        d = tmp_path / f"seed{i}"
        d.mkdir()
        if i == 0:
            (d / "results.json").write_text(json.dumps(models))
        else:
            for name, record in models.items():
                (d / name).mkdir()
                (d / name / "results.json").write_text(json.dumps(record))
        paper = tmp_path / f"paper{i}.json"
        paper.write_text(json.dumps(dict(_record(0.4, 0.5), **_settings("gmrf", i, beta=0.001))))
        sources += [str(d), str(paper)]
    out = tmp_path / "seeds.md"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "biked_seeds.py"), *sources, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "3 seeds;" in text and "- COM W1 uncond.: gmrf best, beyond the seed spread" in text
    assert "| gmrf (beta 0.001) | 0.400 ± 0.000 |" in text
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["sources"] == sources and summary["models"] == ["gmrf", "gmrf (beta 0.001)", "mmvae", "mvae"]
    for missing, message in ((tmp_path / "none", "does not exist"), (tmp_path / "empty", "no results.json")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        bad = run_example(ROOT / "examples" / "biked_seeds.py", [missing])  # in this process
        assert bad.returncode == 2 and message in bad.stderr


def test_a_row_without_a_metric_reads_na_and_one_seed_has_no_spread_verdict():
    # MVAE's records lack the validity (as records written before a metric existed do)
    runs = [{m: ({**r, "conditional": {k: v for k, v in r["conditional"].items() if k != "validity"}}
                 if m == "mvae" else r) for m, r in run.items()} for run in RUNS]
    s = seed_summary(runs, SEED_METRICS)
    crank = s["metrics"]["crank-BB (cond.)"]
    assert set(crank["models"]) == {"gmrf", "mmvae"} and crank["verdicts"]["gmrf"]["best_other"] == "mmvae"
    row = next(line for line in seed_table(s).splitlines() if line.startswith("| mvae |"))
    assert row.split(" | ")[5] == "n/a"  # crank-BB (cond.), the fifth metric
    one = seed_table(seed_summary(RUNS[:1], SEED_METRICS))
    assert one.startswith("One seed.") and "±" not in one
    assert "- COM W1 uncond.: gmrf best (one seed: no spread to judge by)" in one
    assert not seed_summary(RUNS[:1], SEED_METRICS)["metrics"]["COM W1 uncond."]["verdicts"]["gmrf"]["separated"]
