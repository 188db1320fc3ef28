"""The experiment layer: every registered experiment's settings become command-line options, the
runner resumes and reuses finished runs, records provenance, and is deterministic per seed."""

import argparse
import dataclasses
import json

import pytest

from pyro_mcvae.experiments import (add_config_arguments, config_from_args, experiment_names, get_experiment,
                                    parse_config, run_experiment)

TINY = ["--epochs", "1", "--n-train", "256", "--n-test", "64", "--population-n", "500", "--hidden", "8",
        "--batch-size", "128", "--jobs", "1", "--no-progress", "--likelihood-samples", "20",
        "--likelihood-tuples", "16", "--sampler-components", "2"]


def test_registry_lists_the_benchmarks():
    assert {"copula", "heavy_tails", "nnmrf"} <= set(experiment_names())
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("cifar")


@pytest.mark.parametrize("name", experiment_names())
def test_every_config_field_is_a_command_line_option(name):
    experiment = get_experiment(name)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, experiment.Config)
    dests = {action.dest for action in parser._actions}
    fields = dataclasses.fields(experiment.Config)
    assert {f.name for f in fields} <= dests
    assert all(f.metadata.get("help") for f in fields), "every setting has help text"
    # The defaults round-trip: parsing nothing gives the dataclass defaults.
    assert config_from_args(experiment.Config, parser.parse_args([])) == experiment.Config()


def test_an_optional_boolean_is_left_to_the_preset_unless_switched_on_or_off():
    from pyro_mcvae.experiments.base import option

    @dataclasses.dataclass
    class Settings:
        singles: bool | None = option(None, "on, off, or the preset's")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Settings)
    assert [config_from_args(Settings, parser.parse_args(argv)).singles
            for argv in ([], ["--singles"], ["--no-singles"])] == [None, True, False]


def test_generated_options_types_and_validation():
    copula = get_experiment("copula")
    config = parse_config(copula, ["--model", "all", "--hidden", "16", "8", "--prior-eps", "0.5", "--no-progress"])
    assert config.model == ["gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus"]
    assert config.hidden == [16, 8] and config.prior_eps == 0.5 and config.no_progress is True
    assert config.jobs >= 1
    with pytest.raises(SystemExit):
        parse_config(copula, ["--epochs", "0"])
    with pytest.raises(SystemExit):
        parse_config(copula, ["--model", "nonsense"])


def _run(name, out, extra=()):
    experiment = get_experiment(name)
    return run_experiment(experiment, parse_config(experiment, [*TINY, "--out", str(out), *extra]))


def test_results_carry_provenance_and_resume_reuses_finished_runs(tmp_path, monkeypatch):
    first = _run("copula", tmp_path, ["--model", "gmrf"])
    record = json.loads((tmp_path / "results.json").read_text())
    assert {"command", "versions", "device", "settings", "seeds", "results"} <= set(record)
    assert record["results"]["gmrf"][0]["seed"] == 0 and record["device"]["type"] == "cpu"
    assert (tmp_path / "table.md").is_file() and (tmp_path / "gmrf" / "seed0" / "checkpoint.pt").is_file()

    # Running again reuses the finished run: no training step is taken.
    from pyro_mcvae.infer import trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(trainer.Trainer, "_step", no_training)
    second = _run("copula", tmp_path, ["--model", "gmrf"])
    a, b = first["results"]["gmrf"][0], second["results"]["gmrf"][0]
    assert a["final_loss"] == b["final_loss"] and a["steps"] == b["steps"]
    assert a["sample"]["unconditional"]["joint_w1"] == b["sample"]["unconditional"]["joint_w1"]


def test_same_seed_same_numbers(tmp_path):
    one = _run("heavy_tails", tmp_path / "one", ["--model", "gmrf", "--reference-n", "5000"])
    two = _run("heavy_tails", tmp_path / "two", ["--model", "gmrf", "--reference-n", "5000"])
    a, b = one["results"]["gmrf"][0], two["results"]["gmrf"][0]
    assert a["final_loss"] == b["final_loss"]
    assert a["unconditional"] == b["unconditional"] and a["quantile_errors"] == b["quantile_errors"]
    # (JSON text: a Monte Carlo error is NaN where some tuple has too few effective draws)
    assert json.dumps(a["likelihood"]["joint"]) == json.dumps(b["likelihood"]["joint"])
    assert a["latent_sampler"][2]["mean"] == b["latent_sampler"][2]["mean"]
    assert a["likelihood"]["joint"]["num_data"] == 16 and "| mixture of 2 |" in (tmp_path / "one" / "table.md").read_text()


def test_cli_run_command(tmp_path, capsys):
    from pyro_mcvae.cli import main

    assert main(["run", "copula", *TINY, "--model", "mvae", "--out", str(tmp_path)]) == 0
    assert "| mvae |" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["results"]["mvae"][0]["elbo"] == "meanfield"


def _files(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_rerun_with_other_settings_is_refused_and_restart_trains_again(tmp_path, capsys, monkeypatch):
    from pyro_mcvae.cli import main

    monkeypatch.setattr(type(get_experiment("copula")), "figures", lambda *args: [])  # their drawing is slow
    args = ["run", "copula", *TINY, "--likelihood-samples", "0", "--sampler-components", "0", "--model", "gmrf",
            "mvae", "--out", str(tmp_path)]
    assert main(args) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["results"]["gmrf"][0]["train_config"]["lr"] == 0.002
    assert record["results"]["gmrf"][0]["model_config"]["config"]["prior"] == "precision"
    before = _files(tmp_path)
    capsys.readouterr()
    # Other settings into the finished runs: one line naming every run and setting, nothing changed.
    assert main([*args, "--lr", "0.02"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "lr: 0.002 in the checkpoint, 0.02 here" in err and "gmrf" in err and "mvae" in err and "--restart" in err
    assert main([*args, "--latent-dim", "3"]) == 2
    assert "block_dim: 2 in the checkpoint, 3 here" in capsys.readouterr().err
    assert _files(tmp_path) == before
    # Asked for explicitly: trained again, and results.json records what the checkpoint holds.
    assert main([*args, "--model", "gmrf", "--lr", "0.02", "--restart"]) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["results"]["gmrf"][0]["train_config"]["lr"] == 0.02
    assert load_checkpoint_settings(tmp_path / "gmrf" / "seed0")["lr"] == 0.02


def load_checkpoint_settings(run_dir):
    from pyro_mcvae.infer import load_checkpoint

    return load_checkpoint(run_dir / "checkpoint.pt")["config"]
