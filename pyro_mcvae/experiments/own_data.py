"""``dataset = "files"``: train, evaluate and sample any registered method on your own components.

A config (or ``pyro-mcvae train --npz FILE --images DIR ... --model NAME --likelihood ...``)::

    dataset = "files"
    out = "runs/mine"
    [data]
    npz = "my.npz"              # one array (N, ...) per component (optional if images are given)
    arrays = ["a", "b"]         # which arrays of the .npz, in this order (default: all, in file order)
    images = ["dirA", "dirB"]   # a folder of images per component, paired by sorted file name
    mask = "mask.npy"           # bool (N, M), True where present (components: arrays, then folders)
    test_fraction = 0.2         # seeded split (split_seed, default: seed)
    [model]
    method = "gmrf"             # any registered method (default gmrf) and its config fields
    likelihood = ["normal", "bernoulli", "normal"]
    [train]
    epochs = 50
    [evaluate]
    likelihood_samples = 100    # K of the importance-sampled likelihoods (0: none)
    max_rows = 1000             # test rows evaluated (complete rows only)

Reading and the split: :mod:`pyro_mcvae.data.component_files`. ``train`` writes ``<out>/data.json`` (the
inputs' SHA-256, components, split settings) and ``<out>/split.npz`` (the train and test row
indices) beside ``<out>/train/``; a later ``train`` on other files or another split into the same
``out`` is refused, naming what differs, and ``evaluate`` / ``sample`` refuse files that changed.
``evaluate`` writes ``metrics.json`` (:func:`~pyro_mcvae.evaluate.evaluate_components`, with
provenance), ``evaluation.npz`` (test rows, reconstructions, each component generated from the
others, prior draws; images in their shape) and a figure per image component in ``figures/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyro
import torch

from .._io import atomic_npz
from .files import ConfigError, model_settings, train_settings
from .runner import resolve_device, restore, train_or_resume

__all__ = ["DATA_KEYS", "OwnDataFiles"]

DATA_KEYS = ("npz", "arrays", "images", "mask", "test_fraction", "split_seed")
EVALUATE_KEYS = ("likelihood_samples", "max_rows", "conditional_samples", "figure_rows")


class _Split:
    """Components read from files and their seeded split."""

    def __init__(self, config: dict):
        from ..data.component_files import read_component_files, split_rows

        section = dict(config["data"])
        unknown = sorted(set(section) - set(DATA_KEYS))
        if unknown:
            raise ConfigError(f"config [data]: unknown setting(s) {unknown} for dataset 'files'; known: {list(DATA_KEYS)}")
        images = section.get("images", [])
        images = [images] if isinstance(images, str) else list(images)
        self.files = read_component_files(section.get("npz"), images, section.get("mask"), section.get("arrays"))
        self.settings = {"test_fraction": section.get("test_fraction", 0.2),
                         "seed": int(section.get("split_seed", config["seed"]))}
        self.train, self.test = split_rows(self.files.num_rows, self.settings["test_fraction"], self.settings["seed"])

    def record(self) -> dict:
        """What ``<out>/data.json`` holds: the identity of the data a run was trained on."""
        f = self.files
        mask = f.mask
        return {"inputs_sha256": f.digests, "paths": f.sources, "num_rows": f.num_rows,
                "components": [{"name": n, "size": s, "shape": list(shape), "image": im}
                               for n, s, shape, im in zip(f.names, f.sizes, f.shapes, f.images)],
                "absent_fraction": 0.0 if mask is None else float(1 - mask.mean()),
                "split": self.settings | {"num_train": len(self.train), "num_test": len(self.test)}}

    def rows(self, which: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        data = [torch.from_numpy(x[which]) for x in self.files.data]
        mask = None if self.files.mask is None else torch.from_numpy(self.files.mask[which])
        return data, mask


def _differences(saved: dict, now: dict) -> list[str]:
    keys = ("inputs_sha256", "num_rows", "components", "split")
    return [f"{k}: {saved.get(k)!r} in the run, {now.get(k)!r} here" for k in keys if saved.get(k) != now.get(k)]


class OwnDataFiles:
    """The ``train / evaluate / sample`` commands of ``dataset = "files"``."""

    samples_file = "samples.npz"

    def model(self, config: dict, split: _Split):
        from ..models import build_model

        kwargs = model_settings(config)
        try:
            return build_model(kwargs.pop("method", "gmrf"), split.files.sizes, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config [model]: {err}") from None

    def _check_data(self, config: dict, split: _Split, trained: bool) -> None:
        """Refuse data other than those ``<out>`` was trained on (``trained``: a checkpoint is there)."""
        path = Path(config["out"]) / "data.json"
        if not (trained and path.is_file()):
            return
        differences = _differences(json.loads(path.read_text()), split.record())
        if differences:
            from ..infer import RunConflictError

            raise RunConflictError(f"{config['out']} was trained on other data or another split ("
                                   + "; ".join(differences) + "): use another out, or --restart to replace the run "
                                   "(nothing was changed)")

    def _write_record(self, config: dict, split: _Split) -> None:
        out = Path(config["out"])
        text = json.dumps(split.record(), indent=2)
        path = out / "data.json"
        if not path.is_file() or path.read_text() != text:  # a rerun on the same data changes nothing
            path.write_text(text)
            atomic_npz({"train": split.train, "test": split.test}, out / "split.npz")

    def train(self, config: dict, restart: bool = False) -> dict:
        from ..infer import seed_everything
        from ..infer.checkpoint import CHECKPOINT_NAME

        device = resolve_device(config["device"])
        split = _Split(config)
        run_dir = Path(config["out"]) / "train"
        self._check_data(config, split, trained=not restart and (run_dir / CHECKPOINT_NAME).is_file())
        train_config = train_settings(config, device)
        seed_everything(train_config.seed)  # the same initial weights every time
        model = self.model(config, split)
        data, mask = split.rows(split.train)
        self._write_record(config, split)
        result, trained = train_or_resume(model, data, train_config, run_dir, restart=restart, mask=mask)
        record = {"steps": result.steps, "final_loss": result.losses[-1], "checkpoint": str(result.checkpoint),
                  "train_config": trained["train_config"], "model_config": trained["model_config"]}
        (Path(config["out"]) / "training.json").write_text(json.dumps(record, indent=2))
        return record

    def trained(self, config: dict, device):
        """The data with their split, and the model trained on them (refused if they changed)."""
        split = _Split(config)
        self._check_data(config, split, trained=True)
        model = restore(self.model(config, split), Path(config["out"]) / "train", device,
                        hint="run `pyro-mcvae train` with this config first")
        return split, model

    def evaluate(self, config: dict) -> dict:
        from ..evaluate import evaluate_components
        from ..provenance import provenance

        settings = dict(config["evaluate"])
        unknown = sorted(set(settings) - set(EVALUATE_KEYS))
        if unknown:
            raise ConfigError(f"config [evaluate]: unknown setting(s) {unknown}; known: {list(EVALUATE_KEYS)}")
        device = resolve_device(config["device"])
        split, model = self.trained(config, device)
        test, complete = _complete_rows(split, split.test, int(settings.get("max_rows", 1000)))
        train, train_mask = split.rows(split.train)
        means = [x[m].mean(0) if m is not None else x.mean(0)
                 for x, m in zip(train, _columns(train_mask, len(train)))]
        pyro.set_rng_seed(config["seed"])
        metrics, generated = evaluate_components(
            model, [x.to(device) for x in test], means, int(settings.get("likelihood_samples", 100)),
            int(settings.get("conditional_samples", 10)), seed=config["seed"])
        out = Path(config["out"])
        files = split.files
        arrays = {"test": [x.numpy() for x in test], **generated}
        atomic_npz({f"{key}_{name}": parts[k].reshape(-1, *files.shapes[k])
                    for key, parts in arrays.items() for k, name in enumerate(files.names)}, out / "evaluation.npz")
        figures = _figures(arrays, files, out / "figures", int(settings.get("figure_rows", 8)))
        metrics = {"components": files.names, "num_test_rows": len(split.test),
                   "num_complete_test_rows": complete, "figures": [str(p) for p in figures]} | metrics
        record = provenance(device) | {"seed": config["seed"], "config": config, "data": split.record(),
                                       "metrics": metrics}
        (out / "metrics.json").write_text(json.dumps(record, indent=2, default=float))
        return record

    def sample(self, config: dict, num: int, output: Path) -> Path:
        """``num`` prior draws, and each component generated from the others on up to ``num``
        complete test rows (beside those rows), images in their shape, as ``.npz``."""
        device = resolve_device(config["device"])
        split, model = self.trained(config, device)
        pyro.set_rng_seed(config["seed"])
        names, shapes = split.files.names, split.files.shapes
        with torch.no_grad():
            arrays = {"unconditional": [p.cpu().numpy() for p in model.sample(num)]}
            test, _ = _complete_rows(split, split.test, num, require=False)
            if test[0].shape[0] and len(test) > 1:
                test = [x.to(device) for x in test]
                m = len(test)
                arrays["given_others"] = [model.condition({j: test[j] for j in range(m) if j != k})[k][0].cpu().numpy()
                                          for k in range(m)]
                arrays["test"] = [x.cpu().numpy() for x in test]
        return atomic_npz({f"{key}_{name}": parts[k].reshape(-1, *shapes[k])
                           for key, parts in arrays.items() for k, name in enumerate(names)}, output)


def _columns(mask, m: int) -> list:
    return [None] * m if mask is None else list(mask.unbind(1))


def _complete_rows(split: _Split, rows: np.ndarray, limit: int, require: bool = True):
    """The first ``limit`` of ``rows`` whose every component is present (tensors), and how many
    complete rows there are."""
    if split.files.mask is not None:
        rows = rows[split.files.mask[rows].all(1)]
    if require and len(rows) == 0:
        raise ValueError("no test row has every component present (test_fraction 0, or the mask leaves none "
                         "complete): raise [data] test_fraction to evaluate")
    data, _ = split.rows(rows[:max(int(limit), 0)])
    return data, len(rows)


def _figures(arrays: dict, files, folder: Path, rows: int) -> list[Path]:
    """Per image component, a grid: test images, reconstructions, generated from the others,
    prior draws (``rows`` of each)."""
    from ..plots import image_grid, save_figure

    paths = []
    labels = {"test": "test", "reconstruction": "reconstructed", "given_others": "from the others",
              "unconditional": "prior draws"}
    for k, name in enumerate(files.names):
        if not files.images[k]:
            continue
        keys = [key for key in labels if key in arrays]
        grid = np.stack([arrays[key][k][:rows].reshape(-1, *files.shapes[k]) for key in keys])
        fig = image_grid(grid, [labels[key] for key in keys], title=f"component {k}: {name}")
        paths.append(save_figure(fig, folder / f"{k}_{name}.png"))
    return paths
