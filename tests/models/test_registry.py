"""The method registry: every built-in method builds and trains through it, bad settings are
refused by name, and a new method registered in a few lines trains through the CLI
(docs/architecture.md, "add a model in 50 lines")."""

import json

import pytest
import torch

from helpers import toy_registered
from pyro_mcvae import MCVAE, TrainConfig, build_model, fit
from pyro_mcvae.models import get_method, method_names, register

BUILTIN = ["gmrf", "diagonal", "almrf", "nnmrf", "mvae", "mmvae", "mopoe", "mmvaeplus"]


def test_builtin_methods_are_registered_with_their_objectives():
    assert set(BUILTIN) <= set(method_names())
    assert get_method("gmrf").objective == "meanfield" and get_method("almrf").objective == "trace"
    assert get_method("mmvaeplus").objective == "dreg" and get_method("mvae").latent_field == "shared_dim"


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_builds_and_trains_by_name(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, [2, 2, 2], hidden=(8,))
    assert model.method == name and model.default_objective == get_method(name).objective
    result = fit(model, torch.rand(64, 3, 2), TrainConfig(epochs=1, batch_size=32, lr=1e-3), progress=False)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert [x.shape for x in model.sample(3)] == [(3, 2)] * 3


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="unknown method 'gmrv'"):
        build_model("gmrv", [2, 2])
    with pytest.raises(ValueError, match=r"GMRFConfig has no field\(s\) \['shared_dim'\]"):
        build_model("gmrf", [2, 2], shared_dim=3)
    with pytest.raises(ValueError, match="takes a MVAEConfig"):
        build_model("mvae", [2, 2], config=get_method("gmrf").config())
    with pytest.raises(ValueError, match=r"GMRFConfig has no field\(s\) \['private_dim'\]"):
        MCVAE.build([2, 2], 2, guide="gmrf", private_dim=3)
    with pytest.raises(ValueError, match="already registered"):
        register("gmrf", get_method("gmrf").config, get_method("gmrf").builder)


def test_mcvae_build_is_build_model_and_refuses_every_keyword_the_config_lacks():
    """MCVAE.build: the method named by ``guide``, ``latent_dim`` its latent field, the other
    keywords its config's fields, nothing renamed or ignored (the keyword shim before this took
    other methods' settings at their old defaults and dropped them, and renamed two)."""
    model = MCVAE.build([2, 3], 3, guide="mvae", hidden=(8,), family="laplace")
    assert model.method == "mvae" and model.config == get_method("mvae").config(hidden=(8,), shared_dim=3,
                                                                               family="laplace")
    assert MCVAE.build([2, 3], 4, hidden=(8,)).config == build_model("gmrf", [2, 3], hidden=(8,), block_dim=4).config
    for guide, key, value in (("gmrf", "family", "normal"), ("gmrf", "private_dim", None), ("mvae", "eps", 0.9),
                              ("mvae", "mvae_random_subsets", 2), ("mopoe", "mixture_density", "stratum"),
                              ("diagonal", "prior", "diagonal"), ("mmvae", "offdiag_keep", 1.0)):
        with pytest.raises(ValueError, match=rf"has no field\(s\) \['{key}'\]; fields: \["):
            MCVAE.build([2, 2], 2, guide=guide, **{key: value})
    with pytest.raises(ValueError, match="give the latent size of 'mvae' as latent_dim, not shared_dim"):
        MCVAE.build([2, 2], 3, guide="mvae", shared_dim=4)


@pytest.mark.parametrize("name", method_names())
def test_every_config_names_all_its_bad_settings_in_one_error(name):
    config = get_method(name).config
    config()  # the defaults are valid
    with pytest.raises(ValueError) as err:
        build_model(name, [2, 2], hidden=(0,), likelihood="poisson", scale=-1.0)
    message = str(err.value)
    assert message.startswith(f"{config.__name__}: bad settings: ")
    assert all(f"{field} must be" in message for field in ("hidden", "likelihood", "scale")), message
    latent = get_method(name).latent_field
    with pytest.raises(ValueError, match=f"{latent} must be a positive integer, got 0"):
        config(**{latent: 0})


def test_the_methods_own_settings_are_checked_when_built():
    from pyro_mcvae.models import GMRFConfig, MMVAEConfig, MMVAEPlusConfig, MVAEConfig, NNMRFConfig

    cases = [(GMRFConfig, dict(eps=1.5, mode="diagonalwise", prior="banana", offdiag_keep=0.0, prior_eps=2.0,
                               subset_posteriors=-1, subset_max_size=0, subset_per_example="yes",
                               graph=[[True, False], [True, True]]),
              ["eps", "mode", "prior", "offdiag_keep", "prior_eps must be None or", "subset_posteriors",
               "subset_max_size must be None or", "subset_per_example", "graph must be symmetric"]),
             (NNMRFConfig, dict(potential_hidden=(0,), hmc_warmup=-1, energy_penalty=-0.1, penalty_form="cubic",
                                num_chains=0, dense_mass=1, readapt_every=-5),
              ["potential_hidden", "hmc_warmup", "energy_penalty", "penalty_form", "num_chains", "dense_mass",
               "readapt_every"]),
             (MVAEConfig, dict(shared_dim=2.5, family="cauchy", subsampled=None, random_subsets=-1),
              ["shared_dim", "family", "subsampled", "random_subsets"]),
             (MMVAEConfig, dict(density="exact", strata="some"), ["density", "strata"]),
             (MMVAEPlusConfig, dict(private_dim=0), ["private_dim must be None or a positive integer"])]
    for config, bad, named in cases:
        with pytest.raises(ValueError) as err:
            config(**bad)
        assert all(n in str(err.value) for n in named), str(err.value)
        assert str(err.value).count(" must be ") == len(bad), str(err.value)  # one phrase per bad field
    with pytest.raises(ValueError, match="ALMRF prior"):
        get_method("almrf").config(prior="standard")
    GMRFConfig(hidden=(8,), likelihood=["normal", "bernoulli"], scale=0.5, graph=torch.eye(2, dtype=torch.bool))


# -- a new method in a few lines (the one in docs/architecture.md, in tests/helpers.py) -----------
@pytest.fixture
def toy_method():
    with toy_registered() as name:
        yield name


def test_a_registered_toy_method_trains_evaluates_and_samples_through_the_cli(toy_method, tmp_path):
    from pyro_mcvae.cli import main

    config = tmp_path / "toy.toml"
    config.write_text(f'''dataset = "copula"
out = "{tmp_path / 'run'}"
device = "cpu"
[data]
n_train = 512
n_test = 256
[model]
method = "toy"
block_dim = 2
hidden = [16]
[train]
epochs = 3
batch_size = 128
lr = 0.003
''')
    assert main(["train", "--config", str(config)]) == 0
    log = (tmp_path / "run" / "train" / "log.csv").read_text().splitlines()
    assert len(log) == 4  # header and three epochs
    losses = [float(row.split(",")[2]) for row in log[1:]]
    assert losses[-1] < losses[0]
    assert main(["evaluate", "--config", str(config)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics  # W1 tables of the copula protocol
    assert main(["sample", "--config", str(config), "--num", "5"]) == 0
