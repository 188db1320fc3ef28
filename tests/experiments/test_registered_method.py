"""A method registered after import (the toy of docs/architecture.md, "add a model in 50 lines")
runs through every registered experiment's quick mode, on tiny data, without editing any of them;
its checkpoint rebuilds with ``load_model`` alone."""

import json
import time

import pytest
import torch

from helpers import toy_registered
from pyro_mcvae import load_model
from pyro_mcvae.data import write_polymnist
from pyro_mcvae.experiments import experiment_names, get_experiment, parse_config, run_experiment
from pyro_mcvae.infer.checkpoint import load_checkpoint

VECTOR = ["--epochs", "1", "--n-train", "128", "--n-test", "32", "--population-n", "200", "--hidden", "8",
          "--batch-size", "64", "--jobs", "1", "--no-progress", "--likelihood-samples", "8",
          "--likelihood-tuples", "8", "--sampler-components", "2"]
IMAGES = ["--quick", "--epochs", "1", "--width", "4", "--batch-size", "32", "--fid", "off", "--no-progress",
          "--device", "cpu"]


def quick_args(name: str, tmp_path) -> list[str]:
    """Each experiment's quick mode at a tiny size (an experiment added later must add its own)."""
    if name == "polymnist":
        return [*IMAGES, "--modalities", "2", "--data-dir", str(tiny_polymnist(tmp_path / "data")),
                "--mopoe-classifiers", "", "--likelihood-tuples", "4", "--sampler-tuples", "16"]
    if name == "bikes":
        return [*IMAGES, "--n-train", "32", "--n-test", "8", "--regressor-epochs", "1", "--levels", "2"]
    reference = {"heavy_tails": ["--reference-n", "2000"], "nongaussian": ["--reference-n", "500", "--window", "0.3", "1"]}
    return {"copula": VECTOR, "nnmrf": VECTOR}.get(name) or [*VECTOR, *reference[name]]


def tiny_polymnist(root, n_train=32, n_test=8):
    """Random two-modality tuples written as a PolyMNIST folder (no MNIST, no backgrounds)."""
    g = torch.Generator().manual_seed(0)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g)
        splits[split] = (torch.randint(0, 256, (n, 2, 3, 28, 28), generator=g, dtype=torch.uint8), labels)
    write_polymnist(root, splits, layout="pt", progress=False)
    return root


@pytest.fixture
def one_thread():
    """Tiny networks: one thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_method_registered_after_import_runs_in_every_experiments_quick_mode(tmp_path, one_thread):
    names = experiment_names()
    assert {"copula", "heavy_tails", "nnmrf", "nongaussian", "polymnist", "bikes"} <= set(names)
    seconds = {}
    with toy_registered("toy_after_import") as toy:
        for name in names:
            experiment, out = get_experiment(name), tmp_path / name
            t0 = time.perf_counter()
            config = parse_config(experiment, [*quick_args(name, tmp_path), "--model", toy, "--out", str(out)])
            results = experiment.results_of(run_experiment(experiment, config))
            seconds[name] = round(time.perf_counter() - t0, 1)
            print(name, seconds[name], flush=True)
            assert list(results) == [toy], name
            assert toy in (out / "table.md").read_text(), name
            saved = json.loads((out / "results.json").read_text())
            assert toy in json.dumps(saved), name
            # The checkpoint records the method, its whole config and the sizes: load_model alone
            # rebuilds it (the experiment's networks included) with the trained weights.
            (checkpoint,) = (out / toy).rglob("checkpoint.pt")
            model = load_model(checkpoint.parent)
            assert model.method == toy and type(model.config).__name__ == "ToyConfig", name
            assert model.config.block_dim == 2, name  # the method's default: no experiment option sets it
            weights = load_checkpoint(checkpoint)["model"]
            assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items()), name
    print(seconds)


@pytest.mark.parametrize("name", experiment_names())
def test_a_name_no_method_has_is_refused_naming_the_registered_ones(name, capsys):
    with pytest.raises(SystemExit):
        parse_config(get_experiment(name), ["--model", "never_registered"])
    err = capsys.readouterr().err
    assert "never_registered" in err and "mmvaeplus" in err, err
