"""Every example runs end to end for one epoch (smoke test through the command line: in this
process through ``helpers.run_example``, the baselines' run as its own process with workers; the
NN-MRF example in full only with ``make test-slow``)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import process_state, run_example

ROOT = Path(__file__).resolve().parents[2]


def test_copula_example_one_epoch(tmp_path):
    """Two seeds of the GMRF through the example, in this process and one after the other
    (``--jobs 1``; worker processes: ``test_copula_example_runs_every_baseline_in_parallel_workers``),
    with log-likelihoods of K 20 on 8 test tuples (the default K 1000 on 200 took 70-90 s a seed
    on 2 loaded cores)."""
    out = tmp_path / "copula"
    proc = run_example(ROOT / "examples" / "copula.py", [
        "--model", "gmrf", "--epochs", "1", "--seeds", "2", "--n-train", "512", "--n-test", "200", "--population-n",
        "2000", "--out", out, "--no-progress", "--jobs", "1", "--likelihood-samples", "20", "--likelihood-tuples", "8"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| gmrf |" in proc.stdout and "noise floor" in proc.stdout
    record = json.loads((out / "results.json").read_text())
    assert {"command", "versions", "device", "settings", "noise_floor", "results"} <= set(record)
    runs = record["results"]["gmrf"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        for protocol in ("sample", "mean"):
            scores = r[protocol]
            assert set(scores["unconditional"]["joint_w1"]) == {"1", "2"}
            assert set(scores["conditional"]["by_source"]) == {"0", "1", "2", "3"}
            assert scores["unconditional"]["joint_w1_mean"] > 0 and scores["spearman_population_error"] >= 0
        joint = r["likelihood"]["joint"]
        assert joint["num_samples"] == 20 and joint["num_data"] == 8 and joint["mean"] < 0
        assert set(r["latent_sampler"]) == {"1", "10", "seconds"}  # the default mixture sizes
    assert "**Log-likelihoods**" in proc.stdout and "| true law (exact density) |" in proc.stdout
    assert (out / "pairplot_gmrf.png").stat().st_size > 10_000
    assert (out / "gmrf" / "seed1" / "checkpoint.pt").exists()
    assert (out / "table.md").read_text().startswith("**Protocol `sample`**")


def test_copula_example_rejects_bad_arguments(tmp_path):
    proc = run_example(ROOT / "examples" / "copula.py", ["--epochs", "0", "--out", tmp_path])
    assert proc.returncode == 2 and "--epochs" in proc.stderr


def test_copula_example_runs_every_baseline_in_parallel_workers(tmp_path):
    out = tmp_path / "baselines"
    models = ["mvae", "mmvae", "mopoe", "mmvaeplus"]
    cmd = [sys.executable, str(ROOT / "examples" / "copula.py"), "--model", *models, "--epochs", "1",
           "--n-train", "256", "--n-test", "100", "--population-n", "1000", "--out", str(out),
           "--family", "laplace", "--jobs", "2", "--no-progress", "--likelihood-samples", "20",
           "--likelihood-tuples", "8", "--sampler-components", "1", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert list(record["results"]) == models and record["settings"]["family"] == "laplace"
    for model in models:
        run = record["results"][model][0]
        assert run["elbo"] == ("dreg" if model in ("mmvae", "mmvaeplus") else "meanfield")
        for protocol in ("sample", "mean"):
            assert set(run[protocol]["conditional"]["by_source"]) == {"0", "1", "2", "3"}
        assert (out / f"pairplot_{model}.png").exists()
        # every baseline's log-likelihoods (K 20 on 8 test tuples) and its post-hoc latent samplers
        joint = run["likelihood"]["joint"]
        assert joint["num_samples"] == 20 and joint["num_data"] == 8 and joint["mean"] < 0
        assert set(run["likelihood"]["conditional"]) == {"0", "1", "2", "3"}
        assert set(run["latent_sampler"]) == {"1", "2", "seconds"}
        assert run["latent_sampler"]["2"]["sample"]["joint_w1_mean"] > 0
    assert (out / "pairplots_sample.png").stat().st_size > 50_000
    table = (out / "table.md").read_text()
    assert "Protocol `sample`" in table and "Protocol `mean`" in table and "| mmvaeplus |" in table
    assert "**Log-likelihoods**" in table and "| mixture of 1 | mixture of 2 |" in table


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copula_example_defaults_and_model_lists():
    copula = _load_example("copula")
    args = copula.parse_args([])
    assert args.model == ["gmrf"] and args.jobs == 1 and args.epochs == 200
    args = copula.parse_args(["--model", "all", "--seeds", "3"])
    assert args.model == ["gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus"] and args.jobs >= 1
    assert copula.parse_args(["--model", "mvae", "gmrf", "mvae"]).model == ["mvae", "gmrf"]


NN_MRF_ARGS = ["--epochs", "1", "--n-train", "512", "--n-test", "100", "--population-n", "500", "--no-progress",
               "--jobs", "1", "--chain-transitions", "40", "--chains-every", "1", "--likelihood-samples", "10",
               "--likelihood-tuples", "8", "--sampler-components", "1"]


def _check_saved_chains(out):
    """The NN-MRF run's chains, saved as netCDF after training (``prior_chains.nc``) and at every
    epoch (``chains_epoch0001.nc``), read back by ArviZ alone with the documented groups and
    variables; returns the epoch snapshot."""
    import arviz as az

    for path in (out / "nnmrf" / "seed0" / "prior_chains.nc", out / "nnmrf" / "seed0" / "chains_epoch0001.nc"):
        idata = az.from_netcdf(path)
        assert {"posterior", "sample_stats"} <= set(idata.groups())
        assert {"z", "energy", "sqnorm"} <= set(idata.posterior.data_vars)
        assert {"lp", "energy", "acceptance_rate", "diverging"} <= set(idata.sample_stats.data_vars)
    summary = az.summary(az.from_netcdf(out / "nnmrf" / "seed0" / "prior_chains.nc"), var_names=["energy", "sqnorm"])
    assert list(summary.index) == ["energy", "sqnorm"] and (summary["r_hat"] > 0).all()
    return idata


def test_nn_mrf_experiment_saves_diagnoses_and_draws_the_chains(tmp_path, monkeypatch):
    """What the NN-MRF experiment adds to the copula benchmark, through the runner in this process
    with the example's default models: the NN-MRF's chain diagnostics at the end of training and
    after the fixed-parameter transitions, its chains saved as netCDF (after training and at every
    epoch, ``--chains-every``), ArviZ's trace, rank and energy figures and the diagnostics table;
    the GMRF has no chains. The copula evaluation is left out here (``evaluate`` returns the one
    number the runner's report line reads): ``test_copula_example_one_epoch`` runs it, and
    ``tests/test_mcmc.py`` the NN-MRF's generation by HMC; the example end to end, evaluation
    included, is ``test_nn_mrf_example_one_epoch`` (slow)."""
    from pyro_mcvae.experiments import get_experiment, parse_config
    from pyro_mcvae.experiments.nnmrf import chain_figures, diagnostics_table
    from pyro_mcvae.experiments.runner import run_all

    experiment, out = get_experiment("nnmrf"), tmp_path / "nn"
    config = parse_config(experiment, [*NN_MRF_ARGS, "--chains", "16", "--out", str(out)])  # ArviZ draws 16 faster
    assert config.model == ["gmrf", "nnmrf"]  # the example's default
    evaluated = []

    def evaluate(model, data, config, seed):
        evaluated.append(model.method)
        return {"sample": {"unconditional": {"joint_w1_mean": 0.0}}}

    monkeypatch.setattr(experiment, "evaluate", evaluate)
    with process_state():  # the runner seeds the random states
        results = run_all(experiment, config, experiment.data(config))
    assert evaluated == ["gmrf", "nnmrf"] and list(results) == ["gmrf", "nnmrf"]
    run = results["nnmrf"][0]
    diag = run["prior_chain_diagnostics"]
    assert {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "acceptance_rate"} <= set(diag)
    # 40 transitions after training, after a fresh warm-up that forgets the draws of training
    assert run["prior_chain_diagnostics_fixed"]["draws_per_chain"] == 40 and run["prior_chain_transitions"] == 40
    assert "prior_chains" not in results["gmrf"][0] and "prior_chain_diagnostics" not in results["gmrf"][0]
    table = diagnostics_table(results)
    assert "| nnmrf | 0 | 16 x 40 | 40 more, parameters fixed |" in table and "| gmrf |" not in table
    assert "| nnmrf | 0 | 16 x 4 | end of training |" in table
    paths = chain_figures(results, out)
    assert len(paths) == 3
    for kind in ("trace", "rank", "energy"):
        assert (out / f"nnmrf_chains_{kind}.png").stat().st_size > 10_000
    idata = _check_saved_chains(out)
    assert idata.posterior["z"].shape == (16, 4, 8)  # the epoch's snapshot: --chains 16, 4 draws, M d = 8
    # the example script itself parses the same options (and refuses a bad one)
    proc = run_example(ROOT / "examples" / "nn_mrf.py", [*NN_MRF_ARGS[2:], "--epochs", "0", "--out", out])
    assert proc.returncode == 2 and "--epochs" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_nn_mrf_example_one_epoch(tmp_path):
    """One epoch of both models through the example, evaluation and figures included; the NN-MRF's
    chains are saved as netCDF (after training and at every epoch) that ArviZ alone reads back with
    the documented groups and variables. Slow (17 s on 2 idle cores, 89-117 s on 2 busy ones: most
    of it the NN-MRF's conditional generation by HMC, many small operations, and the figures;
    measured 2026-12-07): the default suite covers the same
    through ``test_nn_mrf_experiment_saves_diagnoses_and_draws_the_chains`` (the runner, chains,
    diagnostics, figures), ``test_copula_example_one_epoch`` (the copula evaluation and figures),
    ``tests/test_mcmc.py`` (the NN-MRF's generation by HMC) and ``tests/metrics/test_likelihood.py``
    (no likelihood for an energy prior)."""
    out = tmp_path / "nn"
    cmd = [sys.executable, str(ROOT / "examples" / "nn_mrf.py"), *NN_MRF_ARGS, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert list(record["results"]) == ["gmrf", "nnmrf"]
    run = record["results"]["nnmrf"][0]
    diag = run["prior_chain_diagnostics"]
    assert {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "acceptance_rate"} <= set(diag)
    # 40 transitions after training, after a fresh warm-up that forgets the draws of training
    assert run["prior_chain_diagnostics_fixed"]["draws_per_chain"] == 40 and run["prior_chain_transitions"] == 40
    assert "skipped" in run["likelihood"] and "prior_chains" not in record["results"]["gmrf"][0]
    assert "| nnmrf | 0 |" in proc.stdout and "40 more, parameters fixed" in proc.stdout
    for kind in ("trace", "rank", "energy"):
        assert (out / f"nnmrf_chains_{kind}.png").stat().st_size > 10_000
    idata = _check_saved_chains(out)
    assert idata.posterior["z"].shape == (64, 4, 8)  # the epoch's snapshot: 64 chains, 4 draws, M d = 8
