"""``pyro-mcvae``: train, evaluate and sample any model on any of our datasets from a config file.

    pyro-mcvae train    --config run.toml [--set train.epochs=5 ...]
    pyro-mcvae evaluate --config run.toml
    pyro-mcvae sample   --config run.toml [--num 100] [--output samples.pt]

A config is a TOML file::

    dataset = "copula"          # "copula", "heavy_tails", "polymnist" or "bikes"
    out = "results/my-run"      # checkpoints, logs, metrics, samples
    seed = 0
    device = "auto"             # "cpu", "cuda" or "auto"

    [data]                      # copula / heavy_tails: the make_*_splits arguments
    n_train = 10000             # polymnist: data_dir, mnist_dir, num_train, num_eval, quick, ...
                                # bikes: data_dir (BIKED folders; default procedural), n_train, ...

    [model]                     # copula / heavy_tails: a registered method and its config
    method = "gmrf"             # fields (component_dims come from the data), or MCVAE.build
    block_dim = 2               # arguments (guide = "gmrf", latent_dim = 2); polymnist / bikes:
                                # model, latent_dim, width, ... (the PolyMNISTRun / BikeRun settings)

    [train]                     # TrainConfig fields
    epochs = 50

``train`` writes ``<out>/train/checkpoint.pt`` (rerunning resumes) and a copy of the config;
``evaluate`` reads the checkpoint and writes ``<out>/metrics.json``; ``sample`` writes
unconditional draws and draws conditioned on each single component of the test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pyro
import torch

from ._io import atomic_torch_save

DATASETS = ("copula", "heavy_tails", "polymnist", "bikes")
IMAGE_DATASETS = ("polymnist", "bikes")
SECTIONS = ("data", "model", "train", "evaluate", "sample")


class ConfigError(ValueError):
    """A config file that cannot be read or names an unknown setting."""


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def load_config(path, overrides=()) -> dict:
    """Read a TOML config and apply ``section.key=value`` overrides (values in TOML syntax)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        config = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        *parents, leaf = key.strip().split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[leaf] = _parse_value(value.strip())
    dataset = config.get("dataset")
    if dataset not in DATASETS:
        raise ConfigError(f"config: dataset must be one of {DATASETS}, got {dataset!r}")
    unknown = set(config) - {"dataset", "out", "seed", "device", *SECTIONS}
    if unknown:
        raise ConfigError(f"config: unknown top-level keys {sorted(unknown)}; expected dataset, out, seed, "
                          f"device and the sections {SECTIONS}")
    for section in SECTIONS:
        if not isinstance(config.setdefault(section, {}), dict):
            raise ConfigError(f"config: [{section}] must be a table")
    config.setdefault("out", f"results/{dataset}")
    config.setdefault("seed", 0)
    config.setdefault("device", "auto")
    return config


def _device(name: str) -> torch.device:
    from .experiments.polymnist import resolve_device

    return resolve_device(name)


# -- vector datasets (copula, heavy tails) -------------------------------------------------------

def _vector_dataset(config: dict):
    from .data import make_copula_splits, make_heavy_tail_splits

    make = make_copula_splits if config["dataset"] == "copula" else make_heavy_tail_splits
    data = dict(config["data"])
    data.setdefault("seed", config["seed"])
    try:
        return make(**data)
    except TypeError as err:
        raise ConfigError(f"config [data]: {err}") from None


def _vector_model(config: dict, dataset):
    """``[model] method = NAME`` and that method's config fields (any registered method), or
    ``MCVAE.build``'s keywords (``guide = NAME``, ``latent_dim``, ...)."""
    from .models import MCVAE, build_model

    kwargs = dict(config["model"])
    for key in ("hidden", "potential_hidden"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    dims = [dataset.train.shape[-1]] * dataset.train.shape[1]
    try:
        if "method" in kwargs:
            return build_model(kwargs.pop("method"), dims, **kwargs)
        return MCVAE.build(dims, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config [model]: {err}") from None


def _train_config(config: dict, device):
    from .infer import TrainConfig

    kwargs = dict(config["train"])
    kwargs.setdefault("seed", config["seed"])
    kwargs["device"] = str(device)
    try:
        return TrainConfig(**kwargs)
    except TypeError as err:
        raise ConfigError(f"config [train]: {err}") from None


def _checkpoint(out: Path) -> Path:
    return out / "train" / "checkpoint.pt"


def _load_vector_model(config, dataset, device):
    from .infer import load_checkpoint

    path = _checkpoint(Path(config["out"]))
    if not path.is_file():
        raise ConfigError(f"no trained model at {path}: run `pyro-mcvae train` with this config first")
    model = _vector_model(config, dataset)
    try:
        model.load_state_dict(load_checkpoint(path, map_location=device)["model"])
    except RuntimeError as err:
        raise ConfigError(f"{path} does not match the config's [model]: {err}") from None
    return model.to(device).eval()


def _strip_samples(value):
    if isinstance(value, dict):
        return {str(k): _strip_samples(v) for k, v in value.items() if k != "samples"}
    return value


# -- image datasets (PolyMNIST, bicycle assemblies) ----------------------------------------------

def _image_run(config: dict):
    """The experiment's run settings (:class:`PolyMNISTRun` or :class:`BikeRun`) from the config."""
    if config["dataset"] == "polymnist":
        from .experiments.polymnist import PolyMNISTRun as Run
    else:
        from .experiments.bikes import BikeRun as Run

    # The sections share the run's flat namespace (epochs, elbo, particles in [train], ...).
    settings = {"seed": config["seed"], "device": config["device"], "out": config["out"]}
    names = {f.name for f in fields(Run)}
    for section in SECTIONS:
        for key, value in config[section].items():
            if key not in names:
                label = {"polymnist": "PolyMNIST", "bikes": "bike-assembly"}[config["dataset"]]
                raise ConfigError(f"config [{section}]: unknown {label} setting {key!r}; "
                                  f"known: {sorted(names)}")
            settings[key] = value
    return Run(**settings)


def _run_image(config: dict, stages) -> dict:
    run = _image_run(config)
    if config["dataset"] == "polymnist":
        from .experiments.polymnist import run_polymnist

        return run_polymnist(run, stages=stages)
    from .experiments.bikes import run_bikes

    record = run_bikes(run, stages=stages)
    record.pop("_samples", None)
    return record


# -- commands ------------------------------------------------------------------------------------

def cmd_train(config: dict) -> dict:
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if config["dataset"] in IMAGE_DATASETS:
        return _run_image(config, ("train",))
    from .infer import fit

    device = _device(config["device"])
    dataset = _vector_dataset(config)
    model = _vector_model(config, dataset)
    result = fit(model, torch.as_tensor(dataset.train), _train_config(config, device), out_dir=out / "train")
    record = {"steps": result.steps, "final_loss": result.losses[-1], "checkpoint": str(result.checkpoint)}
    (out / "training.json").write_text(json.dumps(record, indent=2))
    return record


def cmd_evaluate(config: dict) -> dict:
    from .provenance import provenance

    if config["dataset"] in IMAGE_DATASETS:
        return _run_image(config, ("evaluate",))
    from .evaluate import evaluate_copula, evaluate_heavy_tails

    device = _device(config["device"])
    dataset = _vector_dataset(config)
    model = _load_vector_model(config, dataset, device)
    if config["dataset"] == "copula":
        metrics = evaluate_copula(model, dataset, device, **config["evaluate"])
    else:
        metrics = evaluate_heavy_tails(model, dataset, dataset.reference, device, **config["evaluate"])
    record = provenance(device) | {"config": config, "metrics": _strip_samples(metrics)}
    path = Path(config["out"]) / "metrics.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    return record


def cmd_sample(config: dict, num: int, output: str | None) -> Path:
    """Generated samples of the trained model; the same config gives the same file (seeded)."""
    device = _device(config["device"])
    pyro.set_rng_seed(config["seed"])
    output = Path(output) if output else Path(config["out"]) / "samples.pt"
    if config["dataset"] == "polymnist":
        from .experiments.polymnist import load_trained, prepare_polymnist, save_samples

        run = _image_run(config)
        model = load_trained(run, device)
        _, test = prepare_polymnist(run)
        return save_samples(output, model, test, num, device)
    if config["dataset"] == "bikes":
        from .experiments.bikes import load_bike_data, load_trained_bikes, save_bike_samples

        run = _image_run(config)
        model = load_trained_bikes(run, device)
        return save_bike_samples(output, model, load_bike_data(run)["test"], num, device)
    dataset = _vector_dataset(config)
    model = _load_vector_model(config, dataset, device)
    test = torch.as_tensor(dataset.test[:num], device=device)
    with torch.no_grad():
        record = {"unconditional": torch.stack(model.sample(num), 1).cpu(),
                  "conditional": {k: torch.stack([p[0] for p in model.condition({k: test[:, k]})], 1).cpu()
                                  for k in range(test.shape[1])},
                  "test": test.cpu()}
    return atomic_torch_save(record, output)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyro-mcvae", description="Multi-component VAEs with MRF latents.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train (resumes an interrupted run)"),
                            ("evaluate", "score a trained model on the test split"),
                            ("sample", "write generated samples to a .pt file")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="TOML config file")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (TOML syntax), e.g. train.epochs=5")
        if name == "sample":
            p.add_argument("--num", type=int, default=100)
            p.add_argument("--output", help="default: <out>/samples.pt")
    args = parser.parse_args(argv)
    from .metrics.fid import InceptionWeightsUnavailable

    try:
        config = load_config(args.config, args.set)
        if args.command == "train":
            record = cmd_train(config)
            print(json.dumps({k: v for k, v in record.items() if k in ("steps", "final_loss", "training")},
                             indent=2, default=str))
        elif args.command == "evaluate":
            cmd_evaluate(config)
            print(f"wrote metrics to {config['out']}")
        else:
            if args.num < 1:
                parser.error("--num must be >= 1")
            print(f"wrote {cmd_sample(config, args.num, args.output)}")
    except (ValueError, FileNotFoundError, InceptionWeightsUnavailable) as err:
        # ConfigError, missing data or checkpoints, inputs the experiments refuse: one clear line
        print(f"pyro-mcvae: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
