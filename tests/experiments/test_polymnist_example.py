"""PolyMNIST end to end on a tiny generated set: the example, the samples file, the evaluator."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_example
from pyro_mcvae.data import write_polymnist

ROOT = Path(__file__).resolve().parents[2]
M = 3


def _digit_images(labels: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """Tuples whose digit is visible: modality k paints a bar at row 2 * label (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    images = torch.randint(0, 60, (n, m, 3, 28, 28), generator=g, dtype=torch.uint8)
    rows = (2 * labels + 4)[:, None].expand(n, m)
    images[torch.arange(n)[:, None], torch.arange(m), :, rows] = 255
    return images


@pytest.fixture(scope="module")
def tiny_polymnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("polymnist") / "data"
    g = torch.Generator().manual_seed(0)
    train_labels = torch.randint(0, 10, (96,), generator=g)
    test_labels = torch.randint(0, 10, (12,), generator=g)
    write_polymnist(root, {"train": (_digit_images(train_labels, M, 1), train_labels),
                           "test": (_digit_images(test_labels, M, 2), test_labels)},
                    layout="pt", progress=False)
    return root


def _run(args):
    """The example in this process (``helpers.run_example``: the same command line without a
    second interpreter's start-up); ``test_example_fid_on_without_weights_fails_clearly`` runs it
    as its own process."""
    return run_example(ROOT / "examples" / "polymnist.py", args)


def test_example_one_epoch_writes_table_figures_and_samples(tiny_polymnist, tmp_path):
    out, samples = tmp_path / "out", tmp_path / "samples.pt"
    proc = _run(["--quick", "--modalities", "3", "--data-dir", str(tiny_polymnist), "--out", str(out), "--epochs", "1",
                 "--width", "4", "--batch-size", "32", "--fid", "off", "--no-progress",
                 "--mopoe-classifiers", "", "--save-samples", str(samples)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| gmrf | ours |" in proc.stdout
    record = json.loads((out / "gmrf" / "results.json").read_text())
    assert {"command", "versions", "device", "settings", "training", "metrics", "judges"} <= set(record)
    assert record["settings"]["latent_dim"] == 4 and record["settings"]["offdiag_keep"] == 0.25
    metrics = record["metrics"]["ours"]
    # Every proper subset of the three modalities was judged.
    assert len(metrics["conditional_coherence"]["subsets"]) == 2 ** M - 2
    assert set(metrics["conditional_coherence"]["by_size"]) == {"1", "2"}
    for key in ("mean",):
        assert 0 <= metrics["conditional_coherence"][key] <= 1
    assert 0 <= metrics["unconditional_coherence"] <= 1
    assert -1 <= metrics["ssim"]["mean"] <= 1 and metrics["digit_fd"]["unconditional"] >= 0
    assert record["fid_note"].startswith("FID off")
    # log-likelihoods (quick: K 10 on 20 test tuples) and a 2-component latent mixture's generation
    ll = record["likelihood"]
    assert ll["joint"]["num_samples"] == 10 and ll["joint"]["num_data"] == 12  # the quick run evaluates 12
    assert set(ll["conditional"]) == {str(k) for k in range(M)} and ll["joint"]["mean"] < ll["conditional_mean"]["mean"]
    sampler = record["latent_sampler"]
    assert sampler["num_components"] == 2 and 0 <= sampler["unconditional_coherence"]["ours"] <= 1
    assert sampler["fitted_on"] == record["data"]["num_train"] and sampler["digit_fd_unconditional"] >= 0
    assert "2-component latent mixture" in proc.stdout
    # the GMRF also generates from the anchored mixture (one block from its mixture, the rest conditioned)
    assert 0 <= sampler["anchored"]["unconditional_coherence"]["ours"] <= 1
    assert sampler["anchored"]["digit_fd_unconditional"] >= 0 and "from the anchored mixture" in proc.stdout
    judges = ROOT.parent / "shared" / "data" / "polymnist" / "mopoe_classifiers"
    if judges.is_dir():  # the samplers' diagnosis reads the trained run (MoPoE-VAE's judges needed)
        report = tmp_path / "samplers.json"
        diag = run_example(ROOT / "benchmarks" / "polymnist_samplers.py", [
            "--run", out / "gmrf", "--data-dir", tiny_polymnist, "--judges", judges, "--tuples", "12",
            "--fit-tuples", "40", "--components", "2", "--json", report])
        assert diag.returncode == 0, diag.stderr[-3000:]
        res = json.loads(report.read_text())["results"]
        assert len(res["reconstruction_digit_rate"]) == M and 0 <= res["anchored_2_uniform"] <= 1
        assert {f"anchored_2_on_m{k}" for k in range(M)} <= set(res) and len(res["anchored_2_fitted_weights"]) == M
        cross = tmp_path / "cross.json"  # the digit rate from each modality given alone to each generated one
        diag = run_example(ROOT / "benchmarks" / "polymnist_cross_digits.py", [
            "--run", out / "gmrf", "--data-dir", tiny_polymnist, "--judges", judges, "--tuples", "12", "--json", cross])
        assert diag.returncode == 0, diag.stderr[-3000:]
        res = json.loads(cross.read_text())["results"]
        for law in ("conditional_mean", "conditional_draw"):
            matrix = res[law]["matrix"]
            assert len(matrix) == M and all(len(row) == M and all(0 <= v <= 1 for v in row) for row in matrix)
            assert res[law]["one_given"] == pytest.approx(sum(res[law]["one_given_by_modality"]) / M, abs=1e-3)
    for fig in record["figures"]:
        assert Path(fig).stat().st_size > 2_000
    assert (tiny_polymnist / "classifiers-e1.pt").is_file()  # our judges, trained and saved
    saved = torch.load(samples)
    assert saved["unconditional"].shape == (12, M, 3, 28, 28)
    assert set(saved["conditional"]) == set(range(M)) == set(saved["labels"])
    for k in range(M):
        assert saved["conditional"][k].shape == (12, M, 3, 28, 28)
        assert saved["labels"][k].shape == (12,)
        assert 0 <= saved["conditional"][k].min() and saved["conditional"][k].max() <= 1
    # Rerunning resumes the finished run: no training step is repeated.
    proc = _run(["--quick", "--modalities", "3", "--data-dir", str(tiny_polymnist), "--out", str(out), "--epochs", "1",
                 "--width", "4", "--batch-size", "32", "--fid", "off", "--no-progress",
                 "--mopoe-classifiers", ""])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (out / "gmrf" / "train" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 2


def test_example_fid_on_without_weights_fails_clearly(tiny_polymnist, tmp_path, monkeypatch):
    env_home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "polymnist.py"), "--quick", "--modalities", "3", "--data-dir", str(tiny_polymnist),
         "--out", str(tmp_path / "out"), "--epochs", "1", "--width", "4", "--fid", "on", "--no-progress",
         "--mopoe-classifiers", "", "--inception-weights", str(tmp_path / "missing.pth")],
        capture_output=True, text=True, timeout=600,
        env={"HOME": str(env_home), "PATH": "/usr/bin:/bin", "TORCH_HOME": str(env_home / "torch")})
    assert proc.returncode == 2
    assert "missing.pth" in proc.stderr


def test_example_rejects_missing_data(tmp_path):
    proc = _run(["--quick", "--data-dir", str(tmp_path / "none"), "--mnist-dir", str(tmp_path / "no-mnist"),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # The first missing input is named with its flag (the backgrounds where no shared data is found).
    assert "--mnist-dir" in proc.stderr or "--backgrounds-dir" in proc.stderr


def test_example_classifiers_only(tiny_polymnist, tmp_path):
    proc = _run(["--quick", "--modalities", "3", "--data-dir", str(tiny_polymnist), "--mopoe-classifiers", "",
                 "--classifiers", str(tmp_path / "judges.pt"), "--classifiers-only", "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ours classifiers" in proc.stdout and "test accuracy" in proc.stdout
    assert (tmp_path / "judges.pt").is_file()


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_presets_code_path_at_a_tiny_size(tiny_polymnist, tmp_path, preset):
    """The cpu preset (MLPs, step budget, learning curve) and the gpu preset's code path (ResNets,
    time budget, curve; on the CPU here, narrow) run end to end and write the curve."""
    out = tmp_path / preset
    extra = ["--hidden", "32", "--steps", "5"] if preset == "cpu" else ["--width", "4", "--minutes", "0.02"]  # 1.2 s
    proc = _run(["--preset", preset, "--device", "cpu", "--modalities", "3", "--data-dir", str(tiny_polymnist),
                 "--out", str(out), "--curve-every", "2", "--curve-tuples", "8",
                 "--batch-size", "32", "--fid", "off", "--no-progress", "--mopoe-classifiers", "",
                 "--likelihood-samples", "10", *extra])
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "gmrf" / "results.json").read_text())
    settings = record["settings"]
    assert settings["preset"] == preset
    assert settings["arch"] == ("mlp" if preset == "cpu" else "resnet")
    assert settings["prior_form"] == "standardized"
    if preset == "cpu":  # one term per modality given alone (2026-12-07), 32 per block, half coupled (2026-12-08)
        assert settings["subset_posteriors"] == 0 and settings["subset_singles"] is True
        assert settings["latent_dim"] == 32 and settings["prior_init_shared"] == 16
    else:
        assert settings["subset_posteriors"] == 1 and settings["subset_max_size"] == 1
        assert settings["subset_singles"] is False
        assert settings["latent_dim"] == 16 and settings["prior_init_shared"] == 8
    assert settings["subset_per_example"] is True
    training = record["training"]
    if preset == "cpu":  # a number of steps, whatever the machine's speed
        assert settings["minutes"] is None and settings["steps"] == 5
        assert "step budget" in training["stop_reason"] and training["steps"] == 5
    else:
        assert "time budget" in training["stop_reason"] and training["steps"] >= 1
    curve = (out / "gmrf" / "curve.csv").read_text().strip().splitlines()
    assert curve[0] == "step,seconds,eval_coherence_1,eval_unconditional"
    assert curve[1].startswith("0,") and len(curve) >= 2
    assert Path(record["learning_curve"]["png"]).stat().st_size > 2_000


def test_example_trains_and_evaluates_on_incomplete_unlabelled_tuples(tiny_polymnist, tmp_path):
    """Half the modalities missing at random; the model sees images and the mask, never labels
    (the labels only judge coherence afterwards). examples/missing_ratio.py then tables the
    finished run (``--tables-only``) from its results.json."""
    out = tmp_path / "sweep" / "ratio0.5"
    args = ["--quick", "--modalities", "3", "--data-dir", str(tiny_polymnist), "--out", str(out), "--epochs", "1",
            "--width", "4", "--batch-size", "32", "--fid", "off", "--no-progress", "--mopoe-classifiers", "",
            "--missing-ratio", "0.5"]
    proc = _run([*args, "--model", "gmrf", "mmvae"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    for model in ("gmrf", "mmvae"):
        record = json.loads((out / model / "results.json").read_text())
        assert record["settings"]["missing_ratio"] == 0.5
        missing = record["training"]["missing"]
        assert missing["n_train"] == 96 and missing["min_present"] == 1 and missing["complete_tuples"] < 96
        assert 0.2 < missing["absent_fraction"] < 0.65  # expected 0.4286 for M = 3
        assert record["training"]["steps"] == 3 and record["training"]["final_loss"] is not None
        assert 0 <= record["metrics"]["ours"]["conditional_coherence"]["mean"] <= 1
        assert (out / model / "train-missing0.5" / "checkpoint.pt").is_file()
        # the latent sampler is fitted to the tuples the mask left complete, none other
        assert record["latent_sampler"]["fitted_on"] == missing["complete_tuples"]
    proc = _run([*args[:-1], "1.5"])
    assert proc.returncode == 2 and "--missing-ratio" in proc.stderr

    sweep, args = ROOT / "examples" / "missing_ratio.py", ["--experiment", "polymnist", "--out", tmp_path / "sweep",
                                                            "--tables-only"]
    proc = run_example(sweep, [*args, "--ratios", "0.5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "sweep" / "table.md").read_text()
    for model in ("gmrf", "mmvae"):
        record = json.loads((out / model / "results.json").read_text())
        coherence = record["metrics"]["ours"]["conditional_coherence"]  # no MoPoE judges here
        assert (f"| {model} | 0.5 | 3 | ours | {coherence['mean']:.3f} | {coherence['by_size']['1']:.3f} |"
                in table)
    assert (tmp_path / "sweep" / "missing_ratio.png").stat().st_size > 10_000
    proc = run_example(sweep, [*args, "--ratios", "0", "0.5"])
    assert proc.returncode == 2 and "no finished run" in proc.stderr and "ratio0" in proc.stderr


def test_subset_terms_draw_per_tuple_unless_per_batch_is_asked():
    from pyro_mcvae.experiments.base import get_experiment, parse_config
    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model
    from pyro_mcvae.infer.objectives import objective_for

    for argv, per_example in (([], True), (["--subset-per-batch"], False)):
        assert parse_config(get_experiment("polymnist"), argv).subset_per_example is per_example
        run = PolyMNISTRun(hidden=[8], latent_dim=2, subset_per_example=per_example, subset_posteriors=1,
                           subset_singles=False)
        objective = objective_for(build_polymnist_model(run))
        assert objective.per_example is per_example and objective.num_random == 1
    singles = objective_for(build_polymnist_model(PolyMNISTRun(hidden=[8], latent_dim=2)))  # the cpu preset's
    assert singles.num_random == 0 and singles.terms().shape == (1 + 5, 5)


def test_construction_option_reaches_prior_and_posterior():
    """--construction picks the SPD block construction of both GMRFs (the paper's two variants);
    the elementwise one keeps the posterior SPD and the model trainable at a larger block."""
    import torch

    from pyro_mcvae.experiments.base import get_experiment, parse_config
    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model

    assert parse_config(get_experiment("polymnist"), []).construction == "blockwise"
    assert parse_config(get_experiment("polymnist"), ["--construction", "elementwise"]).construction == "elementwise"
    model = build_polymnist_model(PolyMNISTRun(hidden=[8], latent_dim=6, construction="elementwise"))
    assert model.prior.mode == "elementwise" and model.guide.mode == "elementwise"
    xs = [torch.rand(4, 3 * 28 * 28) for _ in range(5)]
    q = model.guide.posterior(xs)
    assert q.event_shape == (30,) and bool((torch.linalg.eigvalsh(q.covariance_matrix) > 0).all())
    assert build_polymnist_model(PolyMNISTRun(hidden=[8], latent_dim=2)).guide.mode == "blockwise"


def test_mopoe_strata_option_picks_the_draw_and_its_density():
    """cpu/gpu presets: MoPoE-VAE draws one latent per tuple from its mixture, scored by the
    mixture; --mopoe-strata every (and the paper preset): one per subset, each by its own."""
    from pyro_mcvae.experiments.base import get_experiment, parse_config
    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model, recorded_settings

    assert parse_config(get_experiment("polymnist"), ["--mopoe-strata", "every"]).mopoe_strata == "every"
    with pytest.raises(SystemExit):
        parse_config(get_experiment("polymnist"), ["--mopoe-strata", "some"])
    for run, strata, density in ((PolyMNISTRun(model="mopoe", preset="cpu"), "one", "mixture"),
                                 (PolyMNISTRun(model="mopoe", preset="gpu"), "one", "mixture"),
                                 (PolyMNISTRun(model="mopoe", preset="paper"), "every", "stratum"),
                                 (PolyMNISTRun(model="mopoe", preset="cpu", mopoe_strata="every"), "every", "stratum")):
        run.hidden, run.width, run.latent_dim = [8], 4, 4
        guide = build_polymnist_model(run).guide
        assert (guide.strata, guide.density) == (strata, density), run.preset
        assert recorded_settings(run)["mopoe_strata"] == strata


def test_gmrf_trains_at_the_papers_beta_in_the_presets():
    """The GMRF's beta is the paper's 1e-3 in the cpu, gpu and paper presets (1 in the quick run);
    the baselines' is 1; --beta overrides both, and the record holds the value trained with."""
    import torch

    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, recorded_settings, train_config

    for preset in ("cpu", "gpu", "paper"):
        assert PolyMNISTRun(preset=preset).resolved_beta() == 0.001
        assert PolyMNISTRun(model="mmvaeplus", preset=preset).resolved_beta() == 1.0
    assert PolyMNISTRun(quick=True).resolved_beta() == 1.0
    assert PolyMNISTRun(beta=0.25).resolved_beta() == 0.25
    assert train_config(PolyMNISTRun(preset="cpu"), torch.device("cpu")).beta == 0.001
    assert recorded_settings(PolyMNISTRun(preset="cpu"))["beta"] == 0.001


def test_the_cpu_preset_gives_each_model_its_own_number_of_steps():
    from pyro_mcvae.experiments.polymnist import PolyMNISTRun

    assert PolyMNISTRun(model="gmrf", preset="cpu").value("steps") == 2000
    assert PolyMNISTRun(model="mmvaeplus", preset="cpu").value("steps") == 3500
    assert PolyMNISTRun(model="gmrf", preset="cpu", steps=7).value("steps") == 7
    assert PolyMNISTRun(model="gmrf", preset="gpu").value("steps") is None
