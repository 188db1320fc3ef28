"""Saving and loading: a checkpoint records the model it holds (method, config, component sizes,
version), ``load_model`` rebuilds every registered method from it alone in a fresh process, and a
run directory has one identity: loading or resuming with other settings, or ``resume=False`` on
an existing run, is refused with the settings named and nothing saved changed."""

import subprocess
import sys
import textwrap

import pytest
import torch

from pyro_mcvae import MCVAE, TrainConfig, build_model, fit, load_model, save_model
from pyro_mcvae.experiments import restore
from pyro_mcvae.infer import RunConflictError, load_checkpoint, seed_everything
from pyro_mcvae.models import SelfSamplingPrior, method_names, register
from pyro_mcvae.models.registry import _METHODS

DIMS = [2, 3, 2]
LIKELIHOODS = ["normal", "bernoulli", "laplace"]
# Tiny settings of the methods that need them to stay fast (the NN-MRF's chains).
EXTRA = {"nnmrf": dict(num_chains=4, hmc_warmup=4, potential_hidden=(4,)), "mmvaeplus": dict(private_dim=1)}


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2, generator=g), (torch.rand(n, 3, generator=g) > 0.5).float(),
            torch.randn(n, 2, generator=g)]


def tiny(name, **fields):
    seed_everything(0)
    return build_model(name, DIMS, **{"hidden": (4,), "likelihood": LIKELIHOODS, **EXTRA.get(name, {}), **fields})


def draws(model, xs):
    """What a model generates under a fixed seed: prior samples and reconstructions."""
    seed_everything(5)
    return {"sample": model.sample(4), "reconstruct": model.reconstruct([x[:4] for x in xs])}


def snapshot(folder):
    """Every file below ``folder`` with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


RELOAD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from pyro_mcvae import load_model
    from pyro_mcvae.infer import seed_everything
    xs = torch.load(sys.argv[1])
    out = {}
    for name, run_dir in zip(sys.argv[3::2], sys.argv[4::2]):
        model = load_model(run_dir)  # the run directory alone: no settings, no model
        seed_everything(5)
        out[name] = {"sample": model.sample(4), "reconstruct": model.reconstruct([x[:4] for x in xs]),
                     "method": model.method}
    torch.save(out, sys.argv[2])
""")


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Every registered method trained here (two steps), then loaded in one fresh process."""
    root = tmp_path_factory.mktemp("runs")
    xs, here, args = data(), {}, []
    for name in method_names():
        model = tiny(name)
        fit(model, xs, TrainConfig(epochs=1, batch_size=16), out_dir=root / name, progress=False)
        loaded = load_model(root / name)
        here[name] = {"trained": None if isinstance(model.prior, SelfSamplingPrior) else draws(model.eval(), xs),
                      "loaded": draws(loaded, xs)}
        args += [name, str(root / name)]
    torch.save(xs, root / "data.pt")
    subprocess.run([sys.executable, "-c", RELOAD, str(root / "data.pt"), str(root / "out.pt"), *args],
                   check=True, capture_output=True, text=True, timeout=300)
    return here, torch.load(root / "out.pt")


def assert_same(a, b):
    for key in ("sample", "reconstruct"):
        assert len(a[key]) == len(b[key]) == len(DIMS)
        for x, y in zip(a[key], b[key]):
            assert torch.equal(x, y), key


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_reloads_from_its_run_directory_in_a_fresh_process(reloaded, name):
    here, fresh = reloaded
    assert fresh[name]["method"] == name
    assert_same(fresh[name], here[name]["loaded"])  # the same numbers in another process
    if here[name]["trained"] is not None:  # the trained model itself (an MCMC prior's sampler restarts)
        assert_same(here[name]["loaded"], here[name]["trained"])


def trained_gmrf(tmp_path, **fields):
    run = tmp_path / "run"
    fit(tiny("gmrf", **fields), data(), TrainConfig(epochs=2, batch_size=16, lr=2e-3), out_dir=run, progress=False)
    return run


def test_loading_or_resuming_with_other_model_settings_is_refused_naming_them(tmp_path):
    run = trained_gmrf(tmp_path)  # the precision prior (the default), the likelihoods of LIKELIHOODS
    record = load_checkpoint(run / "checkpoint.pt")["model_record"]
    assert record["method"] == "gmrf" and record["component_dims"] == DIMS
    assert record["config"]["prior"] == "precision" and record["config"]["likelihood"] == LIKELIHOODS
    before = snapshot(run)
    # Same parameter shapes: before the record, both loaded silently.
    with pytest.raises(RunConflictError, match="prior: 'precision' in the checkpoint, 'covariance' here"):
        restore(tiny("gmrf", prior="covariance"), run)
    normal = ["normal", "bernoulli", "normal"]
    with pytest.raises(RunConflictError, match=r"likelihood: \['normal', 'bernoulli', 'laplace'\] in the checkpoint"):
        restore(tiny("gmrf", likelihood=normal), run)
    for other in (dict(prior="covariance"), dict(likelihood=normal)):
        with pytest.raises(RunConflictError, match=f"different model.*{next(iter(other))}"):
            fit(tiny("gmrf", **other), data(), TrainConfig(epochs=3, batch_size=16, lr=2e-3), out_dir=run,
                progress=False)
    assert snapshot(run) == before
    assert load_model(run).config.prior == "precision"
    restore(tiny("gmrf"), run)  # the same settings load


def test_resuming_with_other_training_settings_is_refused_and_changes_nothing(tmp_path):
    run = trained_gmrf(tmp_path)
    before = snapshot(run)
    for other in (dict(lr=2e-2), dict(seed=1), dict(beta="linear:10"), dict(batch_size=8)):
        settings = dict(epochs=2, batch_size=16, lr=2e-3) | other
        with pytest.raises(RunConflictError, match=f"other training settings.*{next(iter(other))}"):
            fit(tiny("gmrf"), data(), TrainConfig(**settings), out_dir=run, progress=False)
    with pytest.raises(RunConflictError, match="training samples: 32 in the checkpoint, 24 here"):
        fit(tiny("gmrf"), [x[:24] for x in data()], TrainConfig(epochs=2, batch_size=16, lr=2e-3), out_dir=run,
            progress=False)
    assert snapshot(run) == before
    # Where and how a run executes may change, and a run may go on to more epochs.
    again = fit(tiny("gmrf"), data(), TrainConfig(epochs=3, batch_size=16, lr=2e-3, checkpoint_every=5,
                                                  validate=True, device="cpu"), out_dir=run, progress=False)
    assert again.steps == 6
    # Unless the rate decays to lr_final: the decay is spread over all the epochs.
    decayed = dict(batch_size=16, lr=2e-3, lr_final=1e-3)
    fit(tiny("gmrf"), data(), TrainConfig(epochs=1, **decayed), out_dir=tmp_path / "decay", progress=False)
    with pytest.raises(RunConflictError, match="epochs: 1 in the checkpoint, 2 here"):
        fit(tiny("gmrf"), data(), TrainConfig(epochs=2, **decayed), out_dir=tmp_path / "decay", progress=False)


def test_resume_false_on_an_existing_run_is_refused_unless_overwrite(tmp_path):
    run = trained_gmrf(tmp_path)
    before = snapshot(run)
    with pytest.raises(RunConflictError, match="already holds a training run") as err:
        fit(tiny("gmrf"), data(), TrainConfig(epochs=2, batch_size=16, lr=2e-3), out_dir=run, progress=False,
            resume=False)
    assert "resume=False" not in str(err.value).split("does not replace it")[1]  # suggests no overwriting call
    assert snapshot(run) == before
    # Said explicitly: the old run is replaced by a fresh one (other settings allowed).
    result = fit(tiny("gmrf", prior="covariance"), data(), TrainConfig(epochs=1, batch_size=16), out_dir=run,
                 progress=False, overwrite=True)
    assert result.steps == 2 and len((run / "log.csv").read_text().splitlines()) == 2
    assert load_model(run).config.prior == "covariance"


def test_save_model_and_load_model_round_trip(tmp_path):
    model = tiny("mmvae")
    path = save_model(model, tmp_path / "mmvae.pt")
    loaded = load_model(path)
    assert loaded.method == "mmvae" and loaded.config == model.config and not loaded.training
    assert_same(draws(loaded, data()), draws(model.eval(), data()))
    with pytest.raises(RunConflictError, match="exists"):
        save_model(model, path)
    save_model(model, path, overwrite=True)


class HandBuilt(MCVAE):
    """A model assembled without the registry (the GMRF's parts, another class)."""

    def _decoder_input(self, z):
        return z.reshape(*z.shape[:-1], self.num_components, self.latent_dim)


def test_what_cannot_be_rebuilt_is_refused_clearly(tmp_path):
    parts = tiny("gmrf")
    model = HandBuilt(DIMS, 2, parts.prior, parts.guide, parts.decoder, list(parts.likelihoods))
    with pytest.raises(ValueError, match="not built through the registry"):
        save_model(model, tmp_path / "hand.pt")
    fit(model, data(), TrainConfig(epochs=1, batch_size=16), out_dir=tmp_path / "hand", progress=False)  # resumable
    with pytest.raises(ValueError, match="does not record which model"):
        load_model(tmp_path / "hand")
    # A method of one's own must be registered again before loading.
    gmrf = _METHODS["gmrf"]
    register("mine", gmrf.config, gmrf.builder)
    try:
        save_model(build_model("mine", DIMS, hidden=(4,)), tmp_path / "mine.pt")
    finally:
        _METHODS.pop("mine")
    with pytest.raises(ValueError, match="unknown method 'mine'.*register"):
        load_model(tmp_path / "mine.pt")
    # A folder of several runs: name one.
    for part in ("a", "b"):
        fit(tiny("mvae"), data(), TrainConfig(epochs=1, batch_size=16), out_dir=tmp_path / "two" / part,
            progress=False)
    with pytest.raises(ValueError, match="holds 2 runs"):
        load_model(tmp_path / "two")
    assert load_model(tmp_path / "two" / "a").method == "mvae"
