"""``pyro-mcvae``: train, evaluate and sample any model on any of our datasets from a config file.

Usage::

    pyro-mcvae run EXPERIMENT [options]     # copula, heavy_tails, nnmrf, nongaussian; `run EXPERIMENT -h` lists
                                            # the options (generated from the experiment's Config)
    pyro-mcvae train    --config run.toml [--set train.epochs=5 ...]
    pyro-mcvae train    --npz my.npz [--images DIR ...] [--mask mask.npy] --model gmrf
                        --likelihood normal,bernoulli,normal --out runs/mine    # your own data
    pyro-mcvae evaluate --config run.toml      (or --run OUT: the config a train wrote there)
    pyro-mcvae sample   --config run.toml [--num 100] [--output samples.pt]
    pyro-mcvae curves LABEL=RUN [LABEL=RUN ...] --out curves.png [--column eval_coherence_1]
                                            # learning curves of several runs in one figure

A config is a TOML file::

    dataset = "copula"          # "copula", "heavy_tails", "polymnist", "bikes" or "files" (your own
                                # data: pyro_mcvae.experiments.own_data)
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

``train`` writes ``<out>/train/checkpoint.pt`` (rerunning resumes an interrupted run and reuses a
finished one; a run there of other settings is refused, naming them, unless ``--restart``) and a
copy of the config; ``evaluate`` reads the checkpoint and writes ``<out>/metrics.json``;
``sample`` writes unconditional draws and draws conditioned on each single component of the test
set. ``pyro_mcvae.load_model("<out>/train")`` rebuilds the trained model from its checkpoint alone.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from .experiments.errors import OneLineParser, run_command
from .experiments.files import SECTIONS, ConfigError, file_commands

if TYPE_CHECKING:  # torch loads with the command that needs it
    import torch


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
    return finish_config(config, overrides)


def run_config(run_dir, overrides=()) -> dict:
    """The config ``pyro-mcvae train`` wrote into the run directory ``run_dir`` (its
    ``config.json``), with ``out`` set to ``run_dir`` and the overrides applied."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no config.json: give the --out of a `pyro-mcvae train` run, or --config")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    return finish_config(config | {"out": str(run_dir)}, overrides)


def files_config(args) -> dict:
    """The config of ``pyro-mcvae train --npz ... --images ...`` (your own data; data paths made
    absolute, so ``evaluate --run OUT`` works from any directory)."""
    if args.out is None:
        raise ConfigError("--out DIR is required with --npz / --images (where the run goes)")
    data = {"test_fraction": 0.2 if args.test_fraction is None else args.test_fraction}
    if args.npz is not None:
        data["npz"] = str(Path(args.npz).absolute())
    if args.images:
        data["images"] = [str(Path(d).absolute()) for d in args.images]
    if args.mask is not None:
        data["mask"] = str(Path(args.mask).absolute())
    if args.arrays:
        data["arrays"] = [a.strip() for a in args.arrays.split(",")]
    model = {"method": args.model or "gmrf"}
    if args.likelihood:
        kinds = [k.strip() for k in args.likelihood.split(",")]
        model["likelihood"] = kinds[0] if len(kinds) == 1 else kinds
    train = {} if args.epochs is None else {"epochs": args.epochs}
    return {"dataset": "files", "out": args.out, "seed": 0 if args.seed is None else args.seed,
            "device": args.device or "auto",
            "data": data, "model": model, "train": train}


def finish_config(config: dict, overrides=()) -> dict:
    """A config read from a file (or built from options) with ``section.key=value`` overrides
    applied (values in TOML syntax), checked, and its defaults filled in."""
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
    file_commands(dataset)  # a known dataset
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


def _image_run(config: dict):
    """The run settings (``PolyMNISTRun`` / ``BikeRun``) an image dataset's config describes."""
    return file_commands(config["dataset"]).settings(config)


def cmd_train(config: dict, restart: bool = False) -> dict:
    """Train (or resume) the run of ``config`` and write the config beside it; a run of other
    settings already in ``out`` is refused before anything is written, ``config.json`` included."""
    from .infer import RunConflictError

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        record = file_commands(config["dataset"]).train(config, restart=restart)
    except RunConflictError:
        raise  # the directory holds another run: left as it was
    except BaseException:
        (out / "config.json").write_text(json.dumps(config, indent=2))  # this config's interrupted run
        raise
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return record


def cmd_evaluate(config: dict) -> dict:
    return file_commands(config["dataset"]).evaluate(config)


def cmd_sample(config: dict, num: int, output: str | None) -> Path:
    """Generated samples of the trained model; the same config gives the same file (seeded)."""
    commands = file_commands(config["dataset"])
    output = Path(output) if output else Path(config["out"]) / commands.samples_file
    return commands.sample(config, num, output)


def cmd_curves(specs, column: str, out: str, title: str = "", chance: float | None = None,
               ylabel: str | None = None) -> Path:
    """``label=RUN`` pairs (``RUN``: a ``curve.csv`` or the folder holding one) drawn into one
    figure at ``out`` (:func:`~pyro_mcvae.plots.curve_comparison_figure`)."""
    from ._io import read_number_csv
    from .plots import curve_comparison_figure, save_figure

    runs = {}
    for spec in specs:
        label, sep, where = spec.rpartition("=")
        if not sep or not label:
            raise ValueError(f"curves: expected LABEL=RUN (a curve.csv or its folder), got {spec!r}")
        path = Path(where)
        path = path / "curve.csv" if path.is_dir() else path
        rows = read_number_csv(path)
        if not rows:
            raise FileNotFoundError(f"curves: no learning curve at {path} (missing or empty)")
        runs[label] = rows
    return save_figure(curve_comparison_figure(runs, column, title, chance, ylabel), out)


def cmd_run(name: str, argv) -> int:
    """``pyro-mcvae run EXPERIMENT [options]``: the options come from the experiment's Config."""
    from .experiments import command_line, get_experiment

    return command_line(get_experiment(name), argv, prog=f"pyro-mcvae run {name}")


def main(argv=None) -> int:
    parser = OneLineParser(prog="pyro-mcvae", description="Multi-component VAEs with MRF latents.")
    sub = parser.add_subparsers(dest="command", required=True)
    from .experiments import experiment_names

    run = sub.add_parser("run", help="run a registered experiment (every model and seed, results and figures)",
                         add_help=False)
    run.add_argument("experiment", choices=experiment_names())
    for name, help_text in (("train", "train (resumes an interrupted run)"),
                            ("evaluate", "score a trained model on the test split"),
                            ("sample", "write generated samples to a .pt file")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="TOML config file")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (TOML syntax), e.g. train.epochs=5")
        if name == "train":
            _own_data_options(p)
        else:
            p.add_argument("--run", metavar="OUT", help="instead of --config: the output directory of a "
                                                        "`pyro-mcvae train` run (its config.json)")
        if name == "train":
            p.add_argument("--restart", action="store_true",
                           help="train from the start, replacing the run in <out>/train (without it an interrupted "
                                "run resumes, a finished one is reused and one of other settings is refused)")
        if name == "sample":
            p.add_argument("--num", type=int, default=100)
            p.add_argument("--output", help="default: <out>/samples.pt")
    curves = sub.add_parser("curves", help="draw the learning curves of several runs into one PNG")
    curves.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a curve.csv or its folder")
    curves.add_argument("--out", required=True, help="the PNG to write")
    curves.add_argument("--column", default="eval_coherence_1", help="the curve column (default: %(default)s)")
    curves.add_argument("--title", default="")
    curves.add_argument("--chance", type=float, default=None, help="a dashed reference line")
    curves.add_argument("--ylabel", default=None, help="the vertical axis' label (default: the column)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and argv[1:] in ([], ["-h"], ["--help"]):
        from .experiments import get_experiment

        print("usage: pyro-mcvae run EXPERIMENT [options]   (pyro-mcvae run EXPERIMENT -h: its options)\n")
        for name in experiment_names():
            print(f"  {name:12s} {get_experiment(name).description}")
        return 0 if argv[1:] else 2
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        return cmd_run(args.experiment, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "sample" and args.num < 1:
        parser.error("--num must be >= 1")
    # One mechanism for every subcommand (``run`` goes through command_line, which uses it too):
    # a user error or Ctrl-C ends with one line on stderr and exit status 2.
    return run_command(lambda: _file_command(args), "pyro-mcvae")


def _own_data_options(p) -> None:
    """``train``'s options for your own data (instead of ``--config``)."""
    g = p.add_argument_group("your own data (instead of --config; more settings with --set)")
    g.add_argument("--npz", "--data", dest="npz", metavar="FILE.npz",
                   help="one array (N, ...) per component (np.savez(FILE, a=x_a, b=x_b, ...))")
    g.add_argument("--arrays", metavar="A,B,...", help="which arrays of the .npz, in this order (default: all)")
    g.add_argument("--images", nargs="+", metavar="DIR",
                   help="a folder of images per component, rows paired by sorted file name")
    g.add_argument("--mask", metavar="MASK.npy", help="bool (N, M), True where present (arrays first, then folders)")
    g.add_argument("--test-fraction", type=float, help="held-out rows, seeded (default 0.2)")
    g.add_argument("--model", help="a registered method (default gmrf)")
    g.add_argument("--likelihood", metavar="KIND[,KIND...]",
                   help="normal, laplace or bernoulli: one for all components or one per component")
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--device", help="cpu, cuda or auto (default)")
    g.add_argument("--out", help="the run's directory (required with --npz / --images)")


_OWN_DATA_ONLY = ("arrays", "mask", "test_fraction", "model", "likelihood", "epochs", "seed", "device", "out")


def _config(args) -> dict:
    """The config a ``train``, ``evaluate`` or ``sample`` command names: ``--config``, your own
    data's options (``train``) or a run directory (``--run``)."""
    own = args.command == "train" and (args.npz is not None or bool(args.images))
    named = [flag for flag, given in (("--config", args.config is not None), ("--npz/--images", own),
                                      ("--run", getattr(args, "run", None) is not None)) if given]
    if len(named) > 1:
        raise ConfigError(f"give one of {' and '.join(named)}, not both")
    if own:
        return finish_config(files_config(args), args.set)
    if args.command == "train":
        stray = [f"--{name.replace('_', '-')}" for name in _OWN_DATA_ONLY if getattr(args, name) is not None]
        if stray:
            raise ConfigError(f"{', '.join(stray)} go with --npz / --images; with --config set values in the file "
                              "or with --set SECTION.KEY=VALUE")
    if getattr(args, "run", None) is not None:
        return run_config(args.run, args.set)
    if args.config is None:
        raise ConfigError("train needs --config run.toml, or your data: --npz FILE and/or --images DIR ... with --out"
                          if args.command == "train" else f"{args.command} needs --config run.toml or --run OUT")
    return load_config(args.config, args.set)


def _file_command(args) -> None:
    """``train``, ``evaluate`` and ``sample`` on a config file, and ``curves``."""
    if args.command == "curves":
        print(f"wrote {cmd_curves(args.runs, args.column, args.out, args.title, args.chance, args.ylabel)}")
        return
    config = _config(args)
    if args.command == "train":
        record = cmd_train(config, args.restart)
        print(json.dumps({k: v for k, v in record.items() if k in ("steps", "final_loss", "training")},
                         indent=2, default=str))
    elif args.command == "evaluate":
        cmd_evaluate(config)
        print(f"wrote metrics to {config['out']}")
    else:
        print(f"wrote {cmd_sample(config, args.num, args.output)}")


if __name__ == "__main__":
    sys.exit(main())
