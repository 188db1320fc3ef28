"""PolyMNIST over seeds and settings (pyro_mcvae.experiments.polymnist.SEED_METRICS and
POLYMNIST_VARIANTS, examples/polymnist_seeds.py) on hand-made records whose answers are known."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from pyro_mcvae.experiments.polymnist import POLYMNIST_VARIANTS, SEED_METRICS
from pyro_mcvae.experiments.seeds import runs_by_seed, seed_summary

ROOT = Path(__file__).resolve().parents[2]
label = POLYMNIST_VARIANTS.label

# the settings examples/polymnist.py records for the GMRF on the cpu preset, given no options
CPU_GMRF = {"model": "gmrf", "seed": 0, "preset": "cpu", "quick": False, "beta": 0.001, "lr": 0.001, "batch_size": 128,
            "arch": "mlp", "hidden": [512, 512], "width": 16, "minutes": None, "steps": 2000, "latent_dim": 32,
            "likelihood_scale": 0.75, "num_train": None, "elbo": None, "particles": 1, "missing_ratio": 0.0,
            "offdiag_keep": 0.25, "prior_form": "standardized", "prior_lr": None, "prior_init_shared": 16,
            "subset_posteriors": 0, "subset_max_size": 1, "subset_per_example": True, "subset_singles": True,
            "private_dim": None}
#: the same for the baselines (their own number of steps)
CPU_BASELINE = {**CPU_GMRF, "steps": 3500, "beta": 1.0}


def _settings(**changes):
    return {"settings": {**CPU_GMRF, **changes}}


def test_polymnist_variant_labels():
    assert label(_settings()) == "gmrf"
    assert label(_settings(beta=1.0)) == "gmrf (beta 1.0)"  # the preset's GMRF before 2026-11-27
    # the cpu preset's 22-minute budget before its fixed number of steps (2026-12-07)
    before_steps = _settings(minutes=22.0)
    del before_steps["settings"]["steps"]
    assert label(before_steps) == "gmrf (minutes 22.0, steps None)"
    assert label(_settings(coupled_dims=8)) == "gmrf (coupled_dims 8)"
    assert label(_settings(beta="0.001")) == "gmrf"  # --beta's text as recorded
    # the preset's block before 2026-12-08: 16 per modality, 8 starting coupled
    assert label(_settings(latent_dim=16, prior_init_shared=8)) == "gmrf (latent_dim 16, prior_init_shared 8)"
    # the preset before every modality was given alone (2026-12-07), and a record of it from
    # before subset_singles existed
    before = "gmrf (steps 3500, subset_posteriors 1, subset_singles False)"
    assert label(_settings(steps=3500, subset_posteriors=1, subset_singles=False)) == before
    older = _settings(steps=3500, subset_posteriors=1)
    del older["settings"]["subset_singles"]
    assert label(older) == before
    # the paper's objective: the subset terms' own settings no longer count
    assert label(_settings(subset_singles=False, subset_max_size=None)) == "gmrf (subset_singles False)"
    # a record from before the subset terms and --subset-per-example existed
    old = _settings()
    for name in ("subset_posteriors", "subset_max_size", "subset_per_example", "subset_singles"):
        del old["settings"][name]
    assert label(old) == "gmrf (subset_singles False)"
    assert (label(_settings(subset_posteriors=1, subset_per_example=False))
            == "gmrf (subset_posteriors 1, subset_per_example False)")
    # baselines: their own latent sizes are the preset's; the GMRF's settings are not theirs
    base = {k: v for k, v in CPU_BASELINE.items() if k not in ("prior_form",)}
    assert label({"settings": {**base, "model": "mmvaeplus", "latent_dim": 32}}) == "mmvaeplus"
    assert label({"settings": {**base, "model": "mmvaeplus", "latent_dim": 32, "beta": 2.5}}) == "mmvaeplus (beta 2.5)"
    mopoe = {**base, "model": "mopoe", "latent_dim": 512, "subset_posteriors": 0}
    assert label({"settings": {**mopoe, "mopoe_strata": "one"}}) == "mopoe"
    # a record from before --mopoe-strata drew every subset's latent
    assert label({"settings": mopoe}) == "mopoe (mopoe_strata every)"
    assert label({"settings": {**base, "model": "mvae", "latent_dim": 64}}) == "mvae (latent_dim 64)"
    # the network: hidden sizes count for MLPs, the width for ResNets
    assert label(_settings(width=64)) == "gmrf"
    assert label(_settings(hidden=[256])) == "gmrf (hidden [256])"
    gpu = _settings(preset="gpu", arch="resnet", hidden=None, width=64, minutes=15.0, steps=None, subset_posteriors=1,
                    subset_singles=False, latent_dim=16, prior_init_shared=8)
    assert label(gpu) == "gmrf"
    gpu["settings"]["width"] = 32
    assert label(gpu) == "gmrf (width 32)"
    quick = _settings(quick=True, preset="quick", arch="resnet", hidden=None, width=8, minutes=None, steps=None,
                      latent_dim=4,
                      prior_form="paper", prior_init_shared=0, subset_posteriors=0, subset_max_size=None,
                      subset_singles=False, beta=1.0)
    assert label(quick) == "gmrf"


def _result(cond, uncond, fd=100.0, logp=None, mixture=None):
    record = {"metrics": {"mopoe": {"conditional_coherence": {"mean": cond, "by_size": {"1": cond - 0.05}},
                                    "unconditional_coherence": uncond, "ssim": {"mean": 0.2}, "fid": None},
                          "ours": {"digit_fd": {"unconditional": fd, "conditional": fd - 1}}}}
    if logp is not None:
        record["likelihood"] = {"joint": {"mean": logp}}
    if mixture is not None:
        record["latent_sampler"] = {"unconditional_coherence": {"mopoe": mixture}}
    return record


def test_polymnist_metrics_over_seeds():
    records = [dict(_result(0.40 + 0.02 * s, 0.07, logp=-6400.0), **_settings(seed=s)) for s in (0, 1)]
    records += [dict(_result(0.30 + 0.02 * s, 0.01), **_settings(seed=s, beta=1.0)) for s in (0, 1)]
    records += [dict(_result(0.80, 0.30 + 0.01 * s, fd=90.0, mixture=0.7),
                     settings={**CPU_BASELINE, "model": "mmvaeplus", "latent_dim": 32, "seed": s})
                for s in (0, 1)]
    s = seed_summary(runs_by_seed(records, POLYMNIST_VARIANTS), SEED_METRICS)
    assert s["models"] == ["gmrf", "gmrf (beta 1.0)", "mmvaeplus"]
    cond = s["metrics"]["cond. coherence"]
    assert cond["models"]["gmrf"]["mean"] == pytest.approx(0.41) and cond["best"] == "mmvaeplus"
    assert cond["verdicts"]["gmrf (beta 1.0)"]["margin"] == pytest.approx(0.31 - 0.80)
    assert s["metrics"]["1 given"]["models"]["mmvaeplus"]["mean"] == pytest.approx(0.75)
    assert s["metrics"]["digit-FD cond."]["best"] == "mmvaeplus" and s["metrics"]["digit-FD cond."]["lower_is_better"]
    assert "FID uncond." not in s["metrics"]  # no Inception weights: no column
    assert set(s["metrics"]["log p(x)"]["models"]) == {"gmrf"}
    assert set(s["metrics"]["uncond. (latent mixture)"]["models"]) == {"mmvaeplus"}


def test_polymnist_seeds_script(tmp_path, monkeypatch, capsys):
    files = []
    for seed in (0, 1):
        for model, cond in (("gmrf", 0.4), ("mmvae", 0.7)):
            path = tmp_path / f"{model}{seed}.json"
            path.write_text(json.dumps(dict(_result(cond + 0.01 * seed, 0.1),
                                            settings={**(CPU_GMRF if model == "gmrf" else CPU_BASELINE),
                                                      "model": model, "seed": seed, "latent_dim":
                                                      32 if model == "gmrf" else 512,
                                                      "beta": 0.001 if model == "gmrf" else 1.0})))
            files.append(str(path))
    out = tmp_path / "table.md"
    # the example in this process, as `python examples/polymnist_seeds.py FILES --out table.md` runs it
    monkeypatch.setattr(sys, "argv", ["polymnist_seeds.py", *files, "--out", str(out)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "examples" / "polymnist_seeds.py"), run_name="__main__")
    assert done.value.code == 0
    assert "| mmvae | **0.705 ± 0.007** |" in capsys.readouterr().out
    text = out.read_text()
    assert "| gmrf | 0.405 ± 0.007 |" in text and "- cond. coherence: gmrf not best" in text
    assert json.loads(out.with_suffix(".json").read_text())["sources"] == files
