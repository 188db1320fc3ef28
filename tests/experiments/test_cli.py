"""The pyro-mcvae command line: train, evaluate and sample from a TOML config; clear errors."""

import json

import pytest
import torch

from pyro_mcvae.cli import ConfigError, load_config, main

CONFIG = """
dataset = "copula"
out = "{out}"
seed = 3
device = "cpu"
[data]
n_train = 300
n_test = 100
[model]
guide = "{guide}"
latent_dim = 2
hidden = [8, 8]
[train]
epochs = 1
batch_size = 100
[evaluate]
population_n = 500
"""


def _write(tmp_path, guide="gmrf"):
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(out=tmp_path / "out", guide=guide))
    return path


@pytest.mark.parametrize("guide", ["gmrf", "mvae"])
def test_train_evaluate_sample(tmp_path, guide, capsys):
    cfg = _write(tmp_path, guide)
    assert main(["train", "--config", str(cfg)]) == 0
    assert (tmp_path / "out" / "train" / "checkpoint.pt").is_file()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model"]["guide"] == guide
    assert main(["evaluate", "--config", str(cfg)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["metrics"]["unconditional"]["joint_w1_mean"] > 0
    assert "command" in metrics and "versions" in metrics
    # likelihoods and a latent sampler from the [evaluate] section (here through --set)
    assert main(["evaluate", "--config", str(cfg), "--set", "evaluate.likelihood_samples=20",
                 "--set", "evaluate.likelihood_tuples=10", "--set", "evaluate.sampler_components=[2]"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["likelihood"]["joint"]["num_data"] == 10 and metrics["likelihood"]["joint"]["num_samples"] == 20
    assert metrics["latent_sampler"]["2"]["sample"]["joint_w1_mean"] > 0
    assert main(["sample", "--config", str(cfg), "--num", "7", "--output", str(tmp_path / "s.pt")]) == 0
    samples = torch.load(tmp_path / "s.pt")
    assert main(["sample", "--config", str(cfg), "--num", "7", "--output", str(tmp_path / "again.pt")]) == 0
    again = torch.load(tmp_path / "again.pt")  # seeded: the same config gives the same samples
    assert torch.equal(samples["unconditional"], again["unconditional"])
    assert all(torch.equal(samples["conditional"][k], again["conditional"][k]) for k in range(4))
    assert samples["unconditional"].shape == (7, 4, 2)
    assert set(samples["conditional"]) == {0, 1, 2, 3}
    # The conditioned component holds the given data.
    assert torch.equal(samples["conditional"][1][:, 1], samples["test"][:, 1])


def test_set_overrides_and_resume(tmp_path):
    cfg = _write(tmp_path)
    assert main(["train", "--config", str(cfg)]) == 0
    log = (tmp_path / "out" / "train" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 2  # header + one epoch
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=2"]) == 0
    log = (tmp_path / "out" / "train" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 3  # resumed: one more epoch, not two


def test_train_rerun_with_other_settings_is_refused_unless_restart(tmp_path, capsys):
    cfg = _write(tmp_path)
    assert main(["train", "--config", str(cfg)]) == 0
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--set", "train.lr=0.01", "--set", "model.likelihood='laplace'"]) == 2
    err = capsys.readouterr().err
    assert "likelihood: 'normal' in the checkpoint, 'laplace' here" in err and "lr: 0.001 in the checkpoint, 0.01" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files  # config.json included
    assert main(["train", "--config", str(cfg), "--set", "train.lr=0.01", "--restart"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["train"]["lr"] == 0.01
    from pyro_mcvae import load_model

    assert load_model(tmp_path / "out").config.likelihood == "normal"  # the one run below out/


def test_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("dataset = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text('dataset = "cifar"')
    with pytest.raises(ConfigError, match="dataset must be one of"):
        load_config(bad)
    bad.write_text('dataset = "copula"\nepochs = 3')
    with pytest.raises(ConfigError, match="unknown top-level keys"):
        load_config(bad)
    cfg = _write(tmp_path)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(cfg, ["epochs"])
    assert main(["evaluate", "--config", str(cfg)]) == 2  # nothing trained yet
    assert "run `pyro-mcvae train`" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--set", "model.no_such_option=1"]) == 2
    assert "[model]" in capsys.readouterr().err


def test_polymnist_config_rejects_unknown_setting(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text('dataset = "polymnist"\n[model]\nmodel = "gmrf"\nwidht = 8\n')
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown PolyMNIST setting 'widht'" in capsys.readouterr().err


def test_shipped_configs_parse():
    from pyro_mcvae.cli import _image_run

    root = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "configs"
    copula = load_config(root / "copula_gmrf.toml")
    assert copula["model"]["guide"] == "gmrf" and copula["train"]["epochs"] == 200
    poly = _image_run(load_config(root / "polymnist_gmrf.toml", ["train.epochs=2"]))
    assert poly.model == "gmrf" and poly.epochs == 2 and poly.offdiag_keep == 0.25
    assert poly.resolved_preset() == "paper" and poly.value("arch") == "resnet"
    bikes = _image_run(load_config(root / "bikes_gmrf.toml", ["model.model=mvae"]))
    assert type(bikes).__name__ == "BikeRun" and bikes.model == "mvae" and bikes.condition_on == "frame"
    # the file's width and epochs are the full protocol's, which its preset names
    assert bikes.resolved_preset() == "full" and bikes.value("arch") == "resnet" and bikes.value("width") == 32


BIKES = """
dataset = "bikes"
out = "{out}"
seed = 1
device = "cpu"
[data]
n_train = 64
n_test = 12
regressor_epochs = 1
[model]
model = "gmrf"
width = 4
[train]
epochs = 1
batch_size = 32
[evaluate]
fid = "off"
progress = false
"""


def test_bikes_train_evaluate_sample(tmp_path, capsys):
    cfg = tmp_path / "bikes.toml"
    cfg.write_text(BIKES.format(out=tmp_path / "out"))
    # Evaluating before training is a clear error, not a traceback.
    assert main(["evaluate", "--config", str(cfg)]) == 2
    assert "train it first" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg)]) == 0
    model_dir = tmp_path / "out" / "gmrf"
    assert (model_dir / "train" / "checkpoint.pt").is_file() and (model_dir / "training.json").is_file()
    assert main(["evaluate", "--config", str(cfg)]) == 0
    first = json.loads((model_dir / "results.json").read_text())
    assert first["conditional"]["com_w1"]["value"] >= 0 and "validity" in first["conditional"]
    assert first["settings"]["latent_dim"] == 4 and first["data"]["n_test"] == 12
    # Evaluation is seeded: a second evaluation gives the same numbers.
    assert main(["evaluate", "--config", str(cfg)]) == 0
    second = json.loads((model_dir / "results.json").read_text())
    assert second["unconditional"]["com_w1"] == first["unconditional"]["com_w1"]
    assert main(["sample", "--config", str(cfg), "--num", "5", "--output", str(tmp_path / "s.pt")]) == 0
    samples = torch.load(tmp_path / "s.pt")
    assert samples["unconditional"].shape == (5, 5, 64, 64) and set(samples["conditional"]) == set(range(5))
    assert samples["components"] == ["saddle", "frame", "crank", "wheels", "handlebars"]
    # Generated from the crank: the crank slot holds the given image, the rest are generated.
    assert torch.equal(samples["conditional"][2][:, 2], samples["test"][:, 2])
    assert 0.0 <= float(samples["conditional"][2].min()) and float(samples["conditional"][2].max()) <= 1.0


def test_curves_draws_several_runs_and_refuses_bad_input(tmp_path, capsys):
    from PIL import Image

    for name, slope in (("a", 0.1), ("b", 0.2)):
        (tmp_path / name).mkdir()
        rows = ["step,seconds,eval_coherence_1,eval_unconditional"]
        rows += [f"{s},{s * 0.3},{0.1 + slope * s / 1000},0.0" for s in (0, 500, 1000)]
        (tmp_path / name / "curve.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "both.png"
    assert main(["curves", f"run a={tmp_path / 'a'}", f"b={tmp_path / 'b' / 'curve.csv'}", "--out", str(out),
                 "--chance", "0.1", "--title", "two runs", "--ylabel", "coherence"]) == 0
    with Image.open(out) as image:
        assert image.size[0] > 500 and image.size[1] > 200
    assert main(["curves", f"c={tmp_path / 'missing'}", "--out", str(tmp_path / "x.png")]) == 2
    assert "no learning curve" in capsys.readouterr().err
    assert main(["curves", str(tmp_path / "a"), "--out", str(tmp_path / "x.png")]) == 2
    assert "LABEL=RUN" in capsys.readouterr().err
    assert main(["curves", f"a={tmp_path / 'a'}", "--column", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
