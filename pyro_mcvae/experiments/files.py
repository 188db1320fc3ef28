"""The ``pyro-mcvae train / evaluate / sample --config run.toml`` commands of each dataset.

A config file names a ``dataset``; :func:`file_commands` gives the object that trains, evaluates
and samples it (the command line does not branch on the name). The vector datasets read
``[data]`` (the ``make_*_splits`` arguments), ``[model]`` (``method = NAME`` and that method's
config fields, or ``MCVAE.build`` keywords), ``[train]`` (``TrainConfig`` fields) and
``[evaluate]``; the image datasets read their run settings (``PolyMNISTRun``, ``BikeRun``) from
every section. ``dataset = "files"`` reads your own components from files
(:mod:`~pyro_mcvae.experiments.own_data`). Training, restoring and devices go through the runner.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyro
import torch

from .._io import atomic_torch_save
from .runner import resolve_device, restore, train_or_resume

__all__ = ["ConfigError", "OWN_DATA", "SECTIONS", "dataset_names", "file_commands", "model_settings",
           "train_settings"]

SECTIONS = ("data", "model", "train", "evaluate", "sample")


class ConfigError(ValueError):
    """A config file that cannot be read or names an unknown setting."""


def _strip_samples(value):
    if isinstance(value, dict):
        return {str(k): _strip_samples(v) for k, v in value.items() if k != "samples"}
    return value


def model_settings(config: dict) -> dict:
    """The ``[model]`` section as builder keywords (TOML lists of sizes as tuples)."""
    kwargs = dict(config["model"])
    for key in ("hidden", "potential_hidden"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def train_settings(config: dict, device):
    """The ``TrainConfig`` of ``[train]`` (seed: the config's unless set there) on ``device``."""
    from ..infer import TrainConfig

    settings = dict(config["train"])
    settings.setdefault("seed", config["seed"])
    try:
        return TrainConfig(**settings | {"device": str(device)})
    except TypeError as err:
        raise ConfigError(f"config [train]: {err}") from None


class VectorFiles:
    """Config-file commands of a vector dataset (tuples ``(N, M, D)``)."""

    samples_file = "samples.pt"

    def __init__(self, make_splits: str, evaluate: str, uses_reference: bool = False):
        self.make_splits, self.evaluate_name, self.uses_reference = make_splits, evaluate, uses_reference

    def dataset(self, config: dict):
        from .. import data

        kwargs = dict(config["data"])
        kwargs.setdefault("seed", config["seed"])
        try:
            return getattr(data, self.make_splits)(**kwargs)
        except TypeError as err:
            raise ConfigError(f"config [data]: {err}") from None

    def model(self, config: dict, dataset):
        """``[model] method = NAME`` and that method's config fields (any registered method), or
        ``MCVAE.build``'s keywords (``guide = NAME``, ``latent_dim``, ...)."""
        from ..models import MCVAE, build_model

        kwargs = model_settings(config)
        dims = [dataset.train.shape[-1]] * dataset.train.shape[1]
        try:
            if "method" in kwargs:
                return build_model(kwargs.pop("method"), dims, **kwargs)
            return MCVAE.build(dims, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config [model]: {err}") from None

    def trained(self, config: dict, dataset, device):
        return restore(self.model(config, dataset), Path(config["out"]) / "train", device,
                       hint="run `pyro-mcvae train` with this config first")

    def train(self, config: dict, restart: bool = False) -> dict:
        """Train (resume, or reuse) the run in ``<out>/train``; a run there of other settings is
        refused, naming them; ``restart`` trains afresh over it."""
        from ..infer import seed_everything

        device = resolve_device(config["device"])
        dataset = self.dataset(config)
        train_config = train_settings(config, device)
        seed_everything(train_config.seed)  # the same initial weights every time
        model = self.model(config, dataset)
        result, trained = train_or_resume(model, torch.as_tensor(dataset.train), train_config,
                                          Path(config["out"]) / "train", restart=restart)
        record = {"steps": result.steps, "final_loss": result.losses[-1], "checkpoint": str(result.checkpoint),
                  "train_config": trained["train_config"], "model_config": trained["model_config"]}
        (Path(config["out"]) / "training.json").write_text(json.dumps(record, indent=2))
        return record

    def evaluate(self, config: dict) -> dict:
        from .. import evaluate
        from ..provenance import provenance

        device = resolve_device(config["device"])
        dataset = self.dataset(config)
        model = self.trained(config, dataset, device)
        reference = (dataset.reference,) if self.uses_reference else ()
        settings = dict(config["evaluate"])
        # [evaluate] likelihood_samples = K (likelihood_tuples = n), sampler_components = [1, 10]
        k, n = settings.pop("likelihood_samples", 0), settings.pop("likelihood_tuples", 200)
        components = settings.pop("sampler_components", [])
        try:
            metrics = getattr(evaluate, self.evaluate_name)(model, dataset, *reference, device, **settings)
        except TypeError as err:
            raise ConfigError(f"config [evaluate]: {err}") from None
        if k:
            test = torch.as_tensor(dataset.test[:n], dtype=torch.get_default_dtype(), device=device)
            metrics["likelihood"] = evaluate.likelihood_scores(model, test, int(k), seed=config["seed"])
        if components:
            train = torch.as_tensor(dataset.train, dtype=torch.get_default_dtype(), device=device)
            metrics["latent_sampler"] = evaluate.latent_sampler_scores(model, train, dataset.test, list(components),
                                                                       seed=config["seed"])
        record = provenance(device) | {"config": config, "metrics": _strip_samples(metrics)}
        (Path(config["out"]) / "metrics.json").write_text(json.dumps(record, indent=2, default=float))
        return record

    def sample(self, config: dict, num: int, output: Path) -> Path:
        device = resolve_device(config["device"])
        pyro.set_rng_seed(config["seed"])
        dataset = self.dataset(config)
        model = self.trained(config, dataset, device)
        test = torch.as_tensor(dataset.test[:num], device=device)
        with torch.no_grad():
            record = {"unconditional": torch.stack(model.sample(num), 1).cpu(),
                      "conditional": {k: torch.stack([p[0] for p in model.condition({k: test[:, k]})], 1).cpu()
                                      for k in range(test.shape[1])},
                      "test": test.cpu()}
        return atomic_torch_save(record, output)


class ImageFiles:
    """Config-file commands of an image experiment: every section sets fields of its run
    settings dataclass ``run_class``; ``run(settings, stages=...)`` trains and/or evaluates,
    ``load_trained(settings, device)``, ``test_images(settings)`` and
    ``save_samples(path, model, test, num, device)`` write the samples file."""

    samples_file = "samples.pt"

    def __init__(self, run_class, label: str, run, load_trained, test_images, save_samples):
        self.run_class, self.label = run_class, label
        self.run, self.load_trained, self.test_images, self.save_samples = run, load_trained, test_images, save_samples

    def settings(self, config: dict):
        """The run settings dataclass from the config (the sections share its flat namespace)."""
        settings = {"seed": config["seed"], "device": config["device"], "out": config["out"]}
        names = {f.name for f in dataclasses.fields(self.run_class)}
        for section in SECTIONS:
            for key, value in config[section].items():
                if key not in names:
                    raise ConfigError(f"config [{section}]: unknown {self.label} setting {key!r}; "
                                      f"known: {sorted(names)}")
                settings[key] = value
        return self.run_class(**settings)

    def _stages(self, config: dict, stages, restart: bool = False) -> dict:
        settings = self.settings(config)
        if restart:  # the run settings' own switch (--restart of the image benchmarks)
            settings = dataclasses.replace(settings, resume=False)
        record = self.run(settings, stages=stages)
        record.pop("_samples", None)
        return record

    def train(self, config: dict, restart: bool = False) -> dict:
        return self._stages(config, ("train",), restart)

    def evaluate(self, config: dict) -> dict:
        return self._stages(config, ("evaluate",))

    def sample(self, config: dict, num: int, output: Path) -> Path:
        device = resolve_device(config["device"])
        pyro.set_rng_seed(config["seed"])
        run = self.settings(config)
        model = self.load_trained(run, device)
        return self.save_samples(output, model, self.test_images(run), num, device)


#: ``dataset = "files"``: your own components from files (:mod:`pyro_mcvae.experiments.own_data`).
OWN_DATA = "files"


def dataset_names() -> tuple:
    """What a config file can name as its ``dataset``: the experiments with config-file
    commands, and ``"files"`` (your own data)."""
    from .base import experiment_names, get_experiment

    return (OWN_DATA, *(n for n in experiment_names() if get_experiment(n).config_file is not None))


def file_commands(dataset: str):
    """The config-file commands of the experiment named ``dataset`` (or of your own data)."""
    from .base import experiment_names, get_experiment

    if dataset == OWN_DATA:
        from .own_data import OwnDataFiles

        return OwnDataFiles()
    experiment = get_experiment(dataset) if dataset in experiment_names() else None
    if experiment is None or experiment.config_file is None:
        raise ConfigError(f"config: dataset must be one of {dataset_names()}, got {dataset!r}")
    return experiment.config_file
