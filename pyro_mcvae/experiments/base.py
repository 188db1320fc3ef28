"""The experiment interface, its registry, the settings every run shares, and the command-line
options generated from a settings dataclass.

An :class:`Experiment` says what is particular to a benchmark: its settings (``Config``, a
dataclass whose fields carry their help text), its data, its model table (registry method names
plus the benchmark's settings, :class:`ModelSpec`), how a trained model is scored, and the table
and figures of a run. Everything else (device, seeds, train-or-resume, restore, provenance, the
process pool) is the runner's (:mod:`.runner`), written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MASK_SEED_OFFSET", "Experiment", "ModelSpec", "RunConfig", "add_config_arguments", "build_method",
           "config_from_args", "experiment_names", "flat_components", "get_experiment", "inception_network", "mean_std",
           "model_dir", "incomplete_training_set", "option", "register_experiment", "to_float", "train_dir", "training_mask"]

#: The training mask of ``--missing-ratio`` is drawn with seed ``<data or run seed> + MASK_SEED_OFFSET``.
MASK_SEED_OFFSET = 7_919


def option(default, help: str = "", **metadata):
    """A settings field with its command-line help (and optionally ``choices``, ``flag``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class RunConfig:
    """Settings every experiment has: which models, how many seeds, where, on what device."""

    model: list = option(["gmrf"], "models to run (a name of the experiment's model table, or 'all')")
    epochs: int = option(100, "training epochs")
    seeds: int = option(1, "number of training seeds (0..S-1)")
    out: str = option("results/run", "output directory (runs resume there)")
    device: str = option("cpu", "'cpu', 'cuda' or 'auto'")
    jobs: int | None = option(None, "train this many runs at once in separate processes, one thread each "
                                    "(default: one per CPU core, at most one per run)")
    no_progress: bool = option(False, "no progress bars")
    restart: bool = option(False, "train every run again from the start, replacing the runs already in --out "
                                  "(without it a finished run is reused, an interrupted one resumed, and a run "
                                  "trained with other settings is refused, naming them)")

    def check(self) -> None:
        """Normalise and validate (a ``ValueError`` names the bad option)."""
        if self.epochs < 1 or self.seeds < 1 or (self.jobs is not None and self.jobs < 1):
            raise ValueError("--epochs, --seeds and --jobs must be >= 1")
        from pyro_mcvae.infer.trainer import resolve_device

        resolve_device(self.device)  # a clear error for a CUDA request without CUDA


@dataclass(frozen=True)
class ModelSpec:
    """One row of an experiment's model table: a registered method, its settings in this
    experiment (``fields``; ``latent``: the method's latent size, default the run's
    ``latent_dim``) and, where it differs from the method's, the objective's particle count."""

    method: str
    fields: dict = field(default_factory=dict)
    latent: int | None = None
    particles: int = 1


def build_method(name: str, component_dims, settings: dict, latent: int | None = None, fixed: dict | None = None):
    """The registered method ``name`` built through the registry with an experiment's
    ``settings``: each one the method's config has is set (the others are options of other
    methods; the method keeps its defaults where the experiment has no option); ``latent`` (when
    given) sets its latent size (``Method.latent_field``); ``fixed``: settings of this method
    alone (a model table's), each of which must be a field of its config."""
    from ..models import build_model, get_method

    method = get_method(name)
    known = {f.name for f in dataclasses.fields(method.config)}
    fields = {k: v for k, v in settings.items() if k in known}
    if latent is not None:
        fields[method.latent_field] = latent
    return build_model(name, component_dims, **fields | (fixed or {}))


def mean_std(values, digits: int = 1) -> str:
    """``"mean ± std"`` over seeds (just the mean for one seed)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


class Experiment(ABC):
    """A benchmark. Subclasses set ``name``, ``Config`` (a :class:`RunConfig` subclass),
    ``models`` (name -> :class:`ModelSpec`: the benchmark's own settings of some methods) and
    ``all_models`` (what ``--model all`` runs). Any other registered method runs by its name,
    with the run's settings (:meth:`spec`)."""

    name: str = ""
    description: str = ""
    Config: type = RunConfig
    models: dict = {}
    all_models: tuple = ()
    #: ``run_model(experiment, config, data, model_name, seed) -> record``: a benchmark with a
    #: training and evaluation pipeline of its own sets it; ``None``: the runner's ``run_one``.
    run_model = None
    #: The ``pyro-mcvae train / evaluate / sample --config`` commands of the dataset
    #: (:mod:`.files`), or ``None``.
    config_file = None

    def check(self, config) -> None:
        """Normalise and validate ``config`` in place (``ValueError`` on a bad setting)."""
        config.check()
        if "all" in config.model:
            config.model = list(self.all_models or self.models)
        config.model = list(dict.fromkeys(config.model))
        from ..models import method_names

        unknown = [m for m in config.model if m not in self.models and m not in method_names()]
        if unknown:
            raise ValueError(f"--model: unknown model(s) {unknown}; choose from {[*self.models, 'all']} or a "
                             f"registered method ({', '.join(method_names())})")
        if config.jobs is None:
            config.jobs = max(1, min(os.cpu_count() or 1, len(config.model) * config.seeds))

    def seeds(self, config) -> list[int]:
        return list(range(config.seeds))

    def spec(self, model_name: str) -> ModelSpec:
        """The model table's row of ``model_name``, or a registered method of that name with the
        run's settings alone."""
        return self.models.get(model_name) or ModelSpec(model_name)

    def run_dir(self, config, model_name: str, seed: int) -> Path:
        """Where one run's log and checkpoint live."""
        return Path(config.out) / model_name / f"seed{seed}"

    @abstractmethod
    def data(self, config):
        """Everything the runs need besides the model (splits, references, noise floors);
        computed once and handed to every run."""

    def component_dims(self, data) -> list[int]:
        return [data.train.shape[2]] * data.train.shape[1]

    def train_data(self, data):
        import torch

        return torch.as_tensor(data.train)

    def train_mask(self, data):
        """The presence mask of the training data (bool ``(N, M)``, False where a component is
        absent; the trainer's ``mask``), or ``None`` when the data are complete."""
        return None

    def callbacks(self, config, run_dir: Path) -> list:
        """Extra training callbacks of one run (none by default)."""
        return []

    def method_fields(self, config, spec: ModelSpec) -> dict:
        """The run-wide settings this experiment passes to every method that has them."""
        return {}

    def build(self, config, data, model_name: str, seed: int):
        """The model named ``model_name`` through the registry (seeded by the runner)."""
        spec = self.spec(model_name)
        latent = spec.latent if spec.latent is not None else config.latent_dim
        return build_method(spec.method, self.component_dims(data), self.method_fields(config, spec), latent,
                            spec.fields)

    def objective(self, config, model_name: str) -> tuple[str, int]:
        """The objective's name and particle count for a model (``--elbo``/``--particles`` where
        the config has them, else the model table's and the method's own)."""
        from ..models import get_method

        spec = self.spec(model_name)
        elbo = getattr(config, "elbo", None) or get_method(spec.method).objective
        return elbo, getattr(config, "particles", None) or spec.particles

    def train_settings(self, config) -> dict:
        """The :class:`~pyro_mcvae.infer.TrainConfig` fields the config sets (the runner adds
        the objective, seed and device)."""
        names = ("epochs", "batch_size", "lr", "lr_final", "beta", "amp")
        return {n: getattr(config, n) for n in names if hasattr(config, n)}

    @abstractmethod
    def evaluate(self, model, data, config, seed: int) -> dict:
        """Scores of a trained model; generated samples for the figures under ``"_samples"``."""

    def summary(self, config, data) -> dict:
        """What ``results.json`` records of the data and references, next to the results."""
        return {}

    def headline(self, record: dict) -> str:
        """One line of a finished run's score (printed)."""
        return ""

    @abstractmethod
    def table(self, results: dict, data) -> str:
        """Markdown table of ``results`` (model -> per-seed records)."""

    def figures(self, results: dict, data, config, out: Path) -> list[str]:
        return []

    def report(self, results: dict, data, config, out: Path) -> None:
        """Anything printed or written after the table (diagnostics)."""

    def shortcut(self, config) -> bool:
        """Run a mode that replaces the training runs (True when it did)."""
        return False

    def results_file(self, record: dict, results: dict) -> dict:
        """What ``results.json`` holds (default: the runner's record)."""
        return record

    def results_of(self, record: dict) -> dict:
        """The per-model runs (model -> per-seed records) of a record that
        :func:`~pyro_mcvae.experiments.run_experiment` returned or wrote to ``results.json``."""
        return record["_results"] if "_results" in record else record["results"]

    def missing_ratio_summary(self, by_ratio: dict, record: dict):
        """Quality against the missing ratio of the training data (``examples/missing_ratio.py``):
        ``by_ratio`` maps each ratio to its runs (:meth:`results_of`), ``record`` is one ratio's
        record (references such as a noise floor). Returns a markdown table and a figure."""
        raise ValueError(f"the {self.name} benchmark has no missing-ratio summary")


@dataclass
class ImageConfig:
    """Settings every image benchmark's command line adds to its run settings."""

    full: bool = option(False, "the full (paper) settings even without a GPU")

    def resolve_quick(self) -> None:
        """No GPU and neither ``--quick`` nor ``--full``: the quick CPU configuration."""
        import torch

        if not self.quick and not self.full and not torch.cuda.is_available() and self.device in ("auto", "cpu"):
            print("no GPU: running the quick CPU configuration (pass --full for the full settings)")
            self.quick = True

    def check_positive(self, *names) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


class ImageExperiment(Experiment):
    """A benchmark run one model at a time by its own pipeline (``pipeline(run, data)``, writing
    ``<out>/<model>/results.json``); ``results.json`` maps each model to its record. A model is a
    registered method, named as registered; ``all_models``: the methods the benchmark compares."""

    def check(self, config) -> None:
        config.check_settings()
        if "all" in config.model:
            config.model = list(self.all_models)
        config.model = list(dict.fromkeys(config.model))
        from ..models import get_method

        for name in config.model:
            get_method(name)  # registered now (a method registered after import included), or named
        config.resolve_quick()

    def seeds(self, config) -> list[int]:
        return [config.seed]

    def data(self, config):
        return None

    def settings_for(self, config, model_name: str):
        """One model's run settings."""
        return dataclasses.replace(config, model=model_name)

    @staticmethod
    def run_model(experiment, config, data, model_name, seed):
        return experiment.pipeline(experiment.settings_for(config, model_name), data)

    @abstractmethod
    def pipeline(self, run, data) -> dict:
        """Train (resumable) and evaluate one model; its record."""

    def evaluate(self, model, data, config, seed) -> dict:
        raise NotImplementedError(f"{self.name} evaluates inside its pipeline")

    def results_file(self, record: dict, results: dict) -> dict:
        return {n: {k: v for k, v in runs[0].items() if k != "_samples"} for n, runs in results.items()}

    def results_of(self, record: dict) -> dict:
        if "_results" in record:
            return record["_results"]
        return {n: [rec] for n, rec in record.items()}  # results.json: model -> its record


# -- incomplete training data (--missing-ratio) -------------------------------------------------

def training_mask(n: int, m: int, missing_ratio: float, seed: int):
    """The presence mask (bool ``(n, M)``) of ``--missing-ratio`` for the run or data seed
    ``seed`` (drawn with ``seed + MASK_SEED_OFFSET``), or ``None`` at ratio 0: the one
    :func:`incomplete_training_set` applies, for code that must know which tuples trained
    complete."""
    from ..data.missing import missing_mask

    return missing_mask(n, m, missing_ratio, seed=seed + MASK_SEED_OFFSET) if missing_ratio else None


def incomplete_training_set(train, missing_ratio: float, seed: int):
    """``(train, mask, record)``: the training tuples ``(N, M, ...)`` (array or tensor) with absent
    components zeroed (:func:`~pyro_mcvae.data.apply_mask`),
    the presence mask (bool ``(N, M)``; ``None`` at ratio 0, the data then unchanged) and what
    ``results.json`` records of it (ratio, seed, expected and realised absent fractions). The
    mask (:func:`~pyro_mcvae.data.missing_mask`, at least one component present per tuple) is
    drawn with seed ``seed + MASK_SEED_OFFSET``."""
    from ..data.missing import apply_mask, expected_absent_fraction

    n, m = train.shape[:2]
    record = {"missing_ratio": missing_ratio}
    mask = training_mask(n, m, missing_ratio, seed)
    if mask is None:
        return train, None, record | {"absent_fraction": 0.0}
    absent = ~mask
    record |= {"mask_seed": seed + MASK_SEED_OFFSET, "min_present": 1,
               "expected_absent_fraction": round(expected_absent_fraction(m, missing_ratio), 6),
               "absent_fraction": round(float(absent.double().mean()), 6),
               "absent_fraction_by_component": [round(float(a), 6) for a in absent.double().mean(0)],
               "complete_tuples": int(mask.all(-1).sum()), "n_train": n}
    return apply_mask(train, mask), mask, record


# -- shared by the image experiments (PolyMNIST, assemblies) --------------------------------------

def to_float(xs):
    """``uint8`` image batches to floats in [0, 1] (the trainer's ``batch_transform``)."""
    return [x.float().div_(255) for x in xs]


def flat_components(images):
    """``(N, M, C, H, W)`` to ``M`` tensors ``(N, C*H*W)`` (views, same dtype)."""
    return [images[:, k].reshape(images.shape[0], -1) for k in range(images.shape[1])]


def model_dir(run) -> Path:
    """``<out>/<model>`` of an image run: checkpoints, logs, results."""
    return Path(run.out) / run.model


def train_dir(run) -> Path:
    """Checkpoint and log of an image run's training: ``<out>/<model>/train``
    (``train-missing<R>`` on incomplete data, so that a run never resumes one trained on other
    data)."""
    return model_dir(run) / ("train" if not run.missing_ratio else f"train-missing{run.missing_ratio:g}")


def inception_network(fid: str, weights, device):
    """The FID network, or ``(None, reason)`` when ``fid="auto"`` and no weights are found."""
    if fid == "off":
        return None, "FID off (--fid off)"
    from ..metrics.fid import InceptionFeatureExtractor, InceptionWeightsUnavailable

    try:
        return InceptionFeatureExtractor(weights, device=device), None
    except InceptionWeightsUnavailable as err:
        if fid == "on":
            raise
        return None, f"FID not computed: {err}"


_EXPERIMENTS: dict[str, Experiment] = {}
_BUILTIN = ("copula", "heavy_tails", "nnmrf", "nongaussian", "polymnist", "bikes")


def register_experiment(experiment: Experiment, replace: bool = False) -> Experiment:
    if experiment.name in _EXPERIMENTS and not replace:
        raise ValueError(f"an experiment named {experiment.name!r} is already registered")
    _EXPERIMENTS[experiment.name] = experiment
    return experiment


def _load_builtin() -> None:
    import importlib

    for module in _BUILTIN:  # each registers itself
        importlib.import_module(f"{__package__}.{module}")


def get_experiment(name: str) -> Experiment:
    _load_builtin()
    if name not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(experiment_names())}")
    return _EXPERIMENTS[name]


def experiment_names() -> list[str]:
    _load_builtin()
    return list(_EXPERIMENTS)


# -- settings dataclass <-> command line ---------------------------------------------------------

def _unwrap(hint):
    """``(element type, is_list)`` of a field's annotation (``X | None`` -> ``X``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, tuple) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else str), True
    return (hint if hint in (int, float, str, bool) else str), False


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, config_class, defaults: dict | None = None) -> None:
    """One option per field of ``config_class``: ``--field-name`` (``flag`` in the field's
    metadata overrides it), typed by the annotation, lists as ``nargs="+"``, booleans as
    switches (``--name`` for a default False, ``--no-name`` for a default True; both for an
    optional boolean whose default ``None`` leaves the choice to a preset)."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING
                                       else f.default_factory())
        kind, many = _unwrap(hints[f.name])
        help_text = f.metadata.get("help", "")
        if kind is bool and not many:
            if default is None:
                on = _flag(f)
                parser.add_argument(on, dest=f.name, action="store_const", const=True, default=None, help=help_text)
                parser.add_argument("--no-" + on[2:], dest=f.name, action="store_const", const=False,
                                    help=f"the opposite of {on}")
                continue
            if default:
                flag = f.metadata.get("flag") or "--no-" + f.name.replace("_", "-")
                parser.add_argument(flag, dest=f.name, action="store_false", help=help_text)
            else:
                parser.add_argument(_flag(f), dest=f.name, action="store_true", help=help_text)
            continue
        kwargs = dict(dest=f.name, type=kind, default=default, help=help_text + (
            f" (default: {default})" if default not in (None, "") else ""))
        if many:
            kwargs["nargs"] = "+"
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f), **kwargs)


def config_from_args(config_class, args: argparse.Namespace):
    """The settings dataclass from parsed options (lists of the options stay lists)."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})


def parse_config(experiment: Experiment, argv=None, prog: str | None = None, description: str | None = None,
                 defaults: dict | None = None):
    """Parse ``argv`` into the experiment's checked ``Config`` (exit 2 with the reason)."""
    from .errors import OneLineParser

    parser = OneLineParser(prog=prog, description=description or experiment.description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, experiment.Config, defaults)
    config = config_from_args(experiment.Config, parser.parse_args(argv))
    try:
        experiment.check(config)
    except ValueError as err:
        parser.error(str(err))
    return config


def write_curve_png(folder, columns: dict, title: str, chance: float | None = None) -> str | None:
    """``folder/curve.png`` drawn from the ``LearningCurve`` file ``folder/curve.csv``
    (:func:`~pyro_mcvae.plots.learning_curve_figure`); ``None`` when it is absent or empty."""
    from .._io import read_number_csv
    from ..plots import learning_curve_figure, save_figure

    rows = read_number_csv(Path(folder) / "curve.csv")
    if not rows:
        return None
    return str(save_figure(learning_curve_figure(rows, columns, title, chance), Path(folder) / "curve.png"))


def cuda_wanted(device) -> bool:
    """Whether a run on ``device`` trains on CUDA: a CUDA device named, or ``"auto"`` with CUDA
    available (how the image benchmarks' ``auto`` presets decide)."""
    if str(device).startswith("cuda"):
        return True
    if str(device) == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def bf16_wanted(run, device) -> bool:
    """Whether an image run trains under bf16 autocast: asked for (``--amp``), or the ``gpu``
    preset on a CUDA device (torch's per-operation choice: matrix products and convolutions in
    bf16, reductions, logarithms and exponentials in float32)."""
    return bool(run.amp) or (not run.quick and run.resolved_preset() == "gpu" and str(device).startswith("cuda"))
