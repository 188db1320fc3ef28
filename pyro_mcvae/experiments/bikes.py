"""Bicycle assemblies end to end: data (procedural or BIKED-style folders), model, training,
structural metrics (centres of mass, SSIM, FID, assembly validity), table and figure.

``examples/biked.py`` runs :func:`run_bikes` once per model and draws the comparison figure.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyro
import torch

from .._io import atomic_torch_save
from ..data.bikes import COMPONENTS, load_component_images, make_bike_splits
from ..evaluate import generate_images
from ..infer import TrainConfig
from ..metrics.assembly import (
    KeypointRegressor,
    assembly_fid,
    assembly_ssim,
    assembly_validity,
    com_wasserstein_report,
    overlay,
    train_keypoint_regressor,
)
from ..models import MCVAE, get_method
from ..models.registry import default_latent
from ..nets import MLPNets, ResNetNets
from ..plots import image_grid, save_figure
from ..provenance import provenance
from .base import (ImageConfig, ImageExperiment, bf16_wanted, build_method, cuda_wanted, flat_components, incomplete_training_set, option, register_experiment, inception_network,
                   model_dir, to_float, train_dir, write_curve_png)
from .files import ImageFiles
from .runner import resolve_device, restore, train_or_resume
from .seeds import Metric, Variants

__all__ = ["BikeRun", "BIKE_LATENT", "MODELS", "build_bike_model", "load_bike_data", "train_bikes", "evaluate_bikes",
           "load_trained_bikes", "save_bike_samples", "run_bikes", "bikes_table", "comparison_figure", "SEED_METRICS",
           "BIKE_VARIANTS"]

IMAGE_SHAPE = (1, 64, 64)
#: Latent sizes of the methods the benchmark compares (``--model all``). GMRF: 4 per component
#: (the paper). Baselines: our choice, the same total size (M x 4 = 20) shared; MMVAE+ 16 shared +
#: 4 private per component. Any other registered method runs at its config's default latent size
#: unless ``--latent-dim`` says otherwise.
BIKE_LATENT = {"gmrf": 4, "mvae": 20, "mmvae": 20, "mopoe": 20, "mmvaeplus": 16}
MODELS = tuple(BIKE_LATENT)
BIKE_PRIVATE = 4
#: This benchmark's settings of one method alone (MMVAE, whose config has the same field, keeps
#: its default): MoPoE-VAE's per-subset terms, each draw scored by its own subset.
METHOD_FIELDS = {"mopoe": {"density": "stratum"}}
#: KL weight when neither ``--beta`` nor the preset gives one (quick and full): the GMRF paper's
#: choice for its method on BIKED (best of its grid {2.5e-3, 1e-3, 5e-4, 1e-4}); 1 for the
#: baselines (their grid is {5, 2.5, 1}).
BIKE_BETA = {"gmrf": 1e-3}
QUICK = {"epochs": 3, "n_train": 2000, "n_test": 300, "width": 8, "regressor_epochs": 3, "minutes": None,
         "curve_every": 0, "beta": None, "arch": "resnet", "hidden": [512, 512],
         "prior_form": "paper", "subset_posteriors": 0, "subset_max_size": None}
FULL = {"epochs": 100, "n_train": 20000, "n_test": 2000, "width": 32, "regressor_epochs": 5, "minutes": None,
        "curve_every": 0, "beta": None, "arch": "resnet", "hidden": [512, 512],
        "prior_form": "paper", "subset_posteriors": 0, "subset_max_size": None}
#: ``--preset cpu`` (the default without a GPU): all 20,000 designs, MLPs (512, 512) on the
#: flattened components (on 2 cores they learn the assemblies far faster per minute than the
#: narrow ResNets: docs/results/assemblies.md), an 8-minute wall-clock budget per model with a
#: structure curve (centre-of-mass W1 and conditional SSIM every ``curve_every`` steps);
#: ``epochs`` is only a ceiling. The GMRF as in PolyMNIST's cpu preset: beta 1, the standardised
#: prior and one subset-posterior term per design on one given component (departures from the
#: paper, measured in docs/results/assemblies.md: at the paper's beta 1e-3 and objective its
#: unconditional centre-of-mass W1 was 0.110, with these 0.024); ``--beta 0.001 --prior-form paper
#: --subset-posteriors 0`` gives the paper's GMRF.
CPU = {"epochs": 1000, "n_train": 20000, "n_test": 2000, "width": 8, "regressor_epochs": 3, "minutes": 8.0,
       "curve_every": 250, "beta": 1.0, "arch": "mlp", "hidden": [512, 512],
       "prior_form": "standardized", "subset_posteriors": 1, "subset_max_size": 1}
#: ``--preset gpu`` (the default with CUDA): the paper's networks (ResNets of width 32) on all
#: 20,000 designs under a 14-minute budget per model, so that the GMRF and MMVAE+ (the paper's two
#: leading models) train, with the regressors and the evaluations, within 35 minutes on one H100;
#: bf16 autocast on CUDA, the data on the device (the trainer's ``data_device="auto"``), the
#: structure curve; the GMRF with the cpu preset's departures (beta 1, the standardised prior, one
#: subset term per design), as in PolyMNIST's gpu preset.
GPU = {**CPU, "width": 32, "regressor_epochs": 5, "minutes": 14.0, "arch": "resnet"}
PRESETS = {"quick": QUICK, "full": FULL, "cpu": CPU, "gpu": GPU}
#: Frame key points (bottom bracket, rear dropout, front fork end) and wheel centres.
FRAME_POINTS = ("bottom_bracket", "rear_wheel_centre", "front_wheel_centre")
WHEEL_POINTS = ("rear_wheel_centre", "front_wheel_centre")


@dataclass
class BikeRun:
    """Settings of one assembly run; ``None`` means the full value, or the quick one."""

    model: str = option("gmrf", f"the model: a registered method (the benchmark compares {', '.join(MODELS)})")
    epochs: int | None = option(None, "training epochs (full: 100; quick: 3)")
    batch_size: int = option(64, "minibatch size")
    lr: float = option(1e-3, "learning rate")
    beta: object = option(None, "KL weight: a number, 'linear:STEPS' or 'cyclical:PERIOD' (cpu preset: 1; "
                                        "quick/full: GMRF 1e-3, the paper's, baselines 1)")
    latent_dim: int | None = option(None, "latent size (default: GMRF 4 per component, baselines 20)")
    arch: str | None = option(None, "'resnet' or 'mlp' (the flattened images; default: the preset's)",
                              choices=["mlp", "resnet"])
    hidden: list[int] | None = option(None, "MLP hidden sizes (with --arch mlp; presets: 512 512)")
    width: int | None = option(None, "ResNet base channels (full: 32; quick: 8)")
    levels: int = option(3, "ResNet levels")
    prior_form: str | None = option(None, "GMRF prior: 'paper' (the block construction on the precision) or "
                                             "'standardized' (docs/results/polymnist.md; cpu preset)",
                                    choices=["paper", "standardized"])
    subset_posteriors: int | None = option(None, "GMRF: subset-posterior ELBO terms per step, one subset per "
                                                 "training design (0: the paper's objective; cpu preset: 1)")
    subset_max_size: int | None = option(None, "GMRF: subsets of at most this many components (1: one given "
                                               "component, the cpu preset's; else M - 1)")
    n_train: int | None = option(None, "training assemblies (full: 20,000; quick: 2,000)")
    n_test: int | None = option(None, "test assemblies (full: 2,000; quick: 300)")
    regressor_epochs: int | None = option(None, "epochs of the key-point regressors (full: 5; quick: 3)")
    condition_on: str = option("frame", "the component the conditional generations are given", choices=list(COMPONENTS))
    data_dir: str | None = option(None, "BIKED-style folders, one per component (default: procedural bikes)")
    data_seed: int = option(0, "seed of the procedural data and the split")
    seed: int = option(0, "training seed")
    device: str = option("auto", "'cpu', 'cuda' or 'auto'")
    amp: bool = option(False, "bf16 mixed precision (CUDA)")
    fid: str = option("auto", "'auto': FID when the Inception weights are found; 'on': required; 'off'",
                      choices=["auto", "on", "off"])
    inception_weights: str | None = option(None, "pt_inception-2015-12-05-6726825d.pth for FID")
    quick: bool = option(False, "2,000 bikes, narrow networks, 3 epochs")
    preset: str = option("auto", "'cpu': 20,000 designs, MLPs, an 8-minute budget per model and a structure curve; "
                                 "'gpu': the paper's ResNets, a 14-minute budget per model, bf16 on CUDA; "
                                 "'full': the full settings (100 epochs); 'auto': 'gpu' with CUDA, else 'cpu'",
                         choices=["auto", "cpu", "gpu", "full"])
    minutes: float | None = option(None, "training budget per model in wall-clock minutes (cpu: 8; 0: none)")
    curve_every: int | None = option(None, "steps between structure-curve evaluations (cpu: 250; 0: none)")
    curve_tuples: int = option(500, "test designs of each structure-curve evaluation")
    missing_ratio: float = option(0.0, "incomplete training data: each component of each training design is absent "
                                       "with this probability, given that at least one is present (seeded from "
                                       "--seed); the model trains with the mask, the test designs stay complete")
    out: str = option("results/biked", "output directory (runs resume there)")
    progress: bool = option(True, "no progress bars")
    resume: bool = option(True, "ignore existing checkpoints", flag="--restart")

    def value(self, name: str):
        v = getattr(self, name)
        if v is None:
            v = PRESETS[self.resolved_preset()][name]
        if v is None and name == "beta":
            return BIKE_BETA.get(self.model, 1.0)
        return v

    def resolved_preset(self) -> str:
        """``quick`` with ``--quick``; ``auto`` is ``gpu`` on CUDA, else ``cpu``."""
        if self.quick:
            return "quick"
        if self.preset != "auto":
            return self.preset
        return "gpu" if cuda_wanted(self.device) else "cpu"

    def check(self) -> None:
        get_method(self.model)  # a registered method, or an error naming them
        if self.condition_on not in COMPONENTS:
            raise ValueError(f"condition_on must be one of {COMPONENTS}, got {self.condition_on!r}")
        if not 0.0 <= self.missing_ratio < 1.0:
            raise ValueError(f"missing_ratio must be in [0, 1), got {self.missing_ratio}")
        if self.subset_posteriors is not None and self.subset_posteriors < 0:
            raise ValueError(f"subset_posteriors must be >= 0, got {self.subset_posteriors}")
        if self.subset_max_size is not None and not 1 <= self.subset_max_size < len(COMPONENTS):
            raise ValueError(f"subset_max_size must be in [1, {len(COMPONENTS) - 1}], got {self.subset_max_size}")
        if self.hidden is not None and (not self.hidden or any(h < 1 for h in self.hidden)):
            raise ValueError(f"hidden must be positive layer sizes, got {self.hidden}")


def recorded_settings(run: BikeRun) -> dict:
    """The settings a results record holds: the options, with the preset's values filled in."""
    return asdict(run) | {"latent_dim": latent_size(run), "preset": run.resolved_preset(),
                          **{k: run.value(k) for k in ("epochs", "width", "arch", "hidden", "n_train", "n_test",
                                                       "minutes", "curve_every", "beta", "prior_form",
                                                       "subset_posteriors", "subset_max_size")},
                          "elbo": get_method(run.model).objective}


def load_bike_data(run: BikeRun) -> dict:
    """Train and test images uint8 ``(N, 5, 64, 64)`` (ink high), and the key points in unit
    coordinates ``{name: (N, 2)}`` where the geometry is known (procedural data)."""
    if run.data_dir is None:
        splits = make_bike_splits(run.value("n_train"), run.value("n_test"), seed=run.data_seed)
        out = {"source": "procedural", "train": splits.train.images, "test": splits.test.images}
        for split, data in (("train", splits.train), ("test", splits.test)):
            g = data.geometry
            out[f"{split}_points"] = {name: (getattr(g, name) + 0.5) / IMAGE_SHAPE[-1]
                                      for name in set(FRAME_POINTS) | set(WHEEL_POINTS)}
        return out
    data = load_component_images(run.data_dir, COMPONENTS, size=IMAGE_SHAPE[-1], progress=run.progress)
    images = (data.images * 255).round().to(torch.uint8)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(run.data_seed))
    n_test = min(run.value("n_test"), len(images) // 5)
    return {"source": str(run.data_dir), "train": images[perm[n_test:]], "test": images[perm[:n_test]]}


def test_images(run: BikeRun) -> torch.Tensor:
    """The test assemblies of a run (the samples of ``pyro-mcvae sample`` come from them)."""
    return load_bike_data(run)["test"]


def latent_size(run: BikeRun) -> int:
    return run.latent_dim or BIKE_LATENT.get(run.model) or default_latent(run.model)


def model_settings(run: BikeRun) -> dict:
    """The run's settings as config fields: every method gets those its config has (the GMRF
    prior's and subset terms' to the GMRF, ``private_dim`` to MMVAE+, the networks and the
    Bernoulli likelihood to all)."""
    if run.value("arch") == "mlp":
        nets = MLPNets(tuple(run.value("hidden")))
    else:
        nets = ResNetNets(IMAGE_SHAPE, width=run.value("width"), levels=run.levels)
    return dict(hidden=nets, likelihood="bernoulli", prior_standardized=run.value("prior_form") == "standardized",
                subset_posteriors=run.value("subset_posteriors"), subset_max_size=run.value("subset_max_size"),
                subset_per_example=True, private_dim=BIKE_PRIVATE)


def build_bike_model(run: BikeRun) -> MCVAE:
    """The registered method ``run.model`` through the registry, its config filled from the
    run's settings (:func:`model_settings`, :data:`METHOD_FIELDS`; a setting its config lacks
    keeps its default)."""
    return build_method(run.model, [int(np.prod(IMAGE_SHAPE))] * len(COMPONENTS), model_settings(run),
                        latent_size(run), METHOD_FIELDS.get(run.model))


def _regressors(run: BikeRun, data: dict, device) -> tuple | None:
    """Key-point regressors learnt from the real training frames and wheels (procedural data
    only), cached in ``<out>/regressors.pt``."""
    if "train_points" not in data:
        return None
    path = Path(run.out) / f"regressors-n{len(data['train'])}-e{run.value('regressor_epochs')}.pt"
    frame_reg, wheel_reg = KeypointRegressor(len(FRAME_POINTS)), KeypointRegressor(len(WHEEL_POINTS))
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        frame_reg.load_state_dict(state["frame"])
        wheel_reg.load_state_dict(state["wheels"])
        return frame_reg.eval(), wheel_reg.eval()
    images = data["train"].float().div(255)
    frame_pts = np.stack([data["train_points"][p] for p in FRAME_POINTS], 1)
    wheel_pts = np.stack([data["train_points"][p] for p in WHEEL_POINTS], 1)
    epochs = run.value("regressor_epochs")
    frame_reg = train_keypoint_regressor(images[:, 1], torch.as_tensor(frame_pts, dtype=torch.float32),
                                         epochs=epochs, seed=run.seed, device=device, progress=run.progress)
    wheel_reg = train_keypoint_regressor(images[:, 3], torch.as_tensor(wheel_pts, dtype=torch.float32),
                                         epochs=epochs, seed=run.seed + 1, device=device, progress=run.progress)
    atomic_torch_save({"frame": frame_reg.state_dict(), "wheels": wheel_reg.state_dict()}, path)
    return frame_reg.cpu().eval(), wheel_reg.cpu().eval()


def _validity(images: torch.Tensor, regs) -> dict:
    v = assembly_validity(images[:, 1], images[:, 2], images[:, 3], *regs, threshold=0.05)
    return {k: ({kk: vv for kk, vv in val.items() if kk != "distances"} if isinstance(val, dict) else val)
            for k, val in v.items()}


def _structure(real: torch.Tensor, generated: torch.Tensor, regs, given: int | None) -> dict:
    out = {"com_w1": com_wasserstein_report(real, generated, threshold=0.05)}
    if given is not None:  # paired with the real designs: SSIM per component and of the bike
        s = assembly_ssim(real, generated, component_names=list(COMPONENTS))
        s["generated_mean"] = float(np.mean([v for k, v in s["per_component"].items()
                                             if k != COMPONENTS[given]]))
        out["ssim"] = s
    if regs is not None:
        out["validity"] = _validity(generated, regs)
    return out


def train_config(run: BikeRun, device) -> TrainConfig:
    return TrainConfig(epochs=run.value("epochs"), batch_size=run.batch_size, lr=run.lr, beta=run.value("beta"),
                       elbo=get_method(run.model).objective, seed=run.seed, device=str(device),
                       amp=bf16_wanted(run, device))


#: Columns of the structure curve (``curve.csv``) and their labels.
CURVE_COLUMNS = {"eval_com_w1_unconditional": "centre-of-mass W1, unconditional",
                 "eval_com_w1_conditional": "centre-of-mass W1, given the frame",
                 "eval_ssim_bike": "SSIM of the bike, given the frame"}


def structure_curve_fn(run: BikeRun, test: torch.Tensor, device):
    """The structure curve's evaluation on the first ``curve_tuples`` test designs: centre-of-mass
    W1 of unconditional and conditional generations, and the conditional bike's SSIM."""
    images = test[:run.curve_tuples].float().div(255)[:, :, None]
    real = images[:, :, 0]
    given = COMPONENTS.index(run.condition_on)

    def evaluate(model, epoch):
        gen = generate_images(model, images, subsets=[(given,)], device=device)
        cond, uncond = gen["conditional"][(given,)][:, :, 0], gen["unconditional"][:, :, 0]
        return {"com_w1_unconditional": com_wasserstein_report(real, uncond, threshold=0.05)["value"],
                "com_w1_conditional": com_wasserstein_report(real, cond, threshold=0.05)["value"],
                "ssim_bike": assembly_ssim(real, cond, component_names=list(COMPONENTS))["assembly"]}

    return evaluate


def write_structure_curve(run: BikeRun) -> str | None:
    """``<out>/<model>/curve.png`` from ``curve.csv``."""
    return write_curve_png(model_dir(run), CURVE_COLUMNS,
                           f"{run.model}: structure during training ({run.curve_tuples} test designs)")


def train_bikes(run: BikeRun, data: dict, device) -> tuple[MCVAE, dict]:
    """Build and train the model (checkpoints in ``<out>/<model>/train``; an existing checkpoint
    resumes, a finished one only loads); with ``minutes`` a wall-clock budget, with
    ``curve_every`` the structure curve (``curve.csv``, ``curve.png``). Returns the model and the
    training record."""
    from ..infer.callbacks import LearningCurve, TimeBudget

    model = build_bike_model(run)
    config = train_config(run, device)
    callbacks, minutes, every = [], run.value("minutes"), run.value("curve_every")
    if minutes:
        callbacks.append(TimeBudget(60.0 * minutes, progress=run.progress, desc=f"{run.model} ({minutes:g} min budget)"))
    if every:
        callbacks.append(LearningCurve(structure_curve_fn(run, data["test"], device), model_dir(run) / "curve.csv",
                                       every_steps=every))
    # Incomplete data: absent components zeroed, the mask handed to the trainer.
    images, mask, missing = incomplete_training_set(data["train"], run.missing_ratio, run.seed)
    _, trained = train_or_resume(model, flat_components(images), config, train_dir(run),
                                 progress=run.progress and not minutes, resume=run.resume, batch_transform=to_float,
                                 callbacks=callbacks, mask=mask)
    curve = write_structure_curve(run) if every else None
    # the log's timings cover resumed runs
    return model, {"steps": trained["steps"], "final_loss": trained["final_loss"], "curve": curve,
                   "minutes_budget": minutes, "missing": missing,
                   "seconds": round(trained["train_seconds"], 1), "ms_per_step": round(trained["ms_per_step"], 1)}


def load_trained_bikes(run: BikeRun, device) -> MCVAE:
    """The model of a finished (or interrupted) training run, from its checkpoint."""
    return restore(build_bike_model(run), train_dir(run), device)


def save_bike_samples(path, model, test: torch.Tensor, num: int, device) -> Path:
    """Write generated assemblies to ``path``: ``{"unconditional": (N, 5, 64, 64), "conditional":
    {k: (N, 5, 64, 64)} (generated from component k of the first N test designs, slot k holds the
    given image), "test": (N, 5, 64, 64), "components": names}``, values in [0, 1], ink high."""
    num = min(int(num), len(test))
    images = test[:num].float().div(255)[:, :, None]
    m = images.shape[1]
    gen = generate_images(model, images, [(k,) for k in range(m)], num_unconditional=num, device=device)
    record = {"unconditional": gen["unconditional"][:, :, 0],
              "conditional": {k: gen["conditional"][(k,)][:, :, 0] for k in range(m)},
              "test": images[:, :, 0], "components": list(COMPONENTS)}
    return atomic_torch_save(record, path)


def evaluate_bikes(run: BikeRun, model: MCVAE, data: dict, device) -> dict:
    """Structural metrics of unconditional generations and of generations from
    ``run.condition_on`` (centre-of-mass W1, SSIM, validity on procedural data, FID with weights);
    the conditional samples are returned under ``"_samples"``. Seeded by ``run.seed``, so the
    numbers are the same whether training ran in this process or not."""
    pyro.set_rng_seed(run.seed)
    model.eval()
    test = data["test"].float().div(255)[:, :, None]  # (N, 5, 1, 64, 64)
    given = COMPONENTS.index(run.condition_on)
    gen = generate_images(model, test, subsets=[(given,)], device=device)
    cond = gen["conditional"][(given,)][:, :, 0]  # (N, 5, 64, 64)
    uncond = gen["unconditional"][:, :, 0]
    regs = _regressors(run, data, device)
    real = test[:, :, 0]
    record = {"unconditional": _structure(real, uncond, regs, None),
              "conditional": _structure(real, cond, regs, given)}
    if regs is not None:
        record["real_validity"] = _validity(real, regs)
    if run.fid != "off":
        inception, note = inception_network(run.fid, run.inception_weights, device)
        record["fid_note"] = note
        if inception is not None:
            record["unconditional"]["fid"] = assembly_fid(real, uncond, inception, component_names=list(COMPONENTS))
            record["conditional"]["fid"] = assembly_fid(real, cond, inception, component_names=list(COMPONENTS))
    record["_samples"] = {"conditional": cond, "unconditional": uncond}
    return record


def run_bikes(run: BikeRun, data: dict | None = None, stages=("train", "evaluate")) -> dict:
    """Train (resumable) and/or evaluate one model; writes ``<out>/<model>/results.json`` (or
    ``training.json`` without evaluation) and returns the record, with the test set's generated
    assemblies under ``"_samples"`` after evaluation. Evaluation alone loads the checkpoint."""
    run.check()
    unknown = set(stages) - {"train", "evaluate"}
    if unknown or not stages:
        raise ValueError(f"stages must be 'train' and/or 'evaluate', got {tuple(stages)}")
    device = resolve_device(run.device)
    started = time.perf_counter()
    data = data or load_bike_data(run)
    record = provenance(device) | {
        "settings": recorded_settings(run),
        "data": {"source": data["source"], "n_train": len(data["train"]), "n_test": len(data["test"])},
    }
    if "train" in stages:
        model, record["training"] = train_bikes(run, data, device)
    else:
        model = load_trained_bikes(run, device)
    samples = None
    if "evaluate" in stages:
        record |= evaluate_bikes(run, model, data, device)
        samples = record.pop("_samples")
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    out = model_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("results.json" if "evaluate" in stages else "training.json")).write_text(
        json.dumps(record, indent=2, default=float))
    if samples is not None:
        record["_samples"] = samples
    return record


def _wheel_median(validity: dict) -> float:
    """The median distance between axles and dropouts, rear and front averaged."""
    return (validity["rear_wheel"]["median"] + validity["front_wheel"]["median"]) / 2


def bikes_table(records: dict) -> str:
    """A table like the paper's Table III: structure (centre-of-mass W1, validity) and quality."""
    head = ("| model | COM W1 uncond. | COM W1 cond. | SSIM generated comps (cond.) | SSIM bike (cond.) "
            "| crank-BB dist. (cond.) | wheel-dropout dist. (cond.) | ms/step |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, r in records.items():
        c = r["conditional"]
        v = c.get("validity")
        crank = f"{v['crank']['median']:.4f}" if v else "n/a"
        wheel = f"{_wheel_median(v):.4f}" if v else "n/a"
        rows.append(f"| {name} | {r['unconditional']['com_w1']['value']:.4f} | {c['com_w1']['value']:.4f} | "
                    f"{c['ssim']['generated_mean']:.3f} | {c['ssim']['assembly']:.3f} | {crank} | {wheel} | "
                    f"{r.get('training', {}).get('ms_per_step', 'n/a')} |")
    table = head + "\n".join(rows) + "\n"
    real = next((r["real_validity"] for r in records.values() if "real_validity" in r), None)
    if real:
        table += (f"\nReal test assemblies (reference): crank-BB {real['crank']['median']:.4f}, wheel-dropout "
                  f"{_wheel_median(real):.4f} (medians, unit "
                  "coordinates of the 64x64 frame).\n")
    return table


#: The assembly metrics summarised over seeds (examples/biked_seeds.py).
SEED_METRICS = (
    Metric("COM W1 uncond.", lambda r: r["unconditional"]["com_w1"]["value"], True),
    Metric("COM W1 cond.", lambda r: r["conditional"]["com_w1"]["value"], True),
    Metric("SSIM comps (cond.)", lambda r: r["conditional"]["ssim"]["generated_mean"], False),
    Metric("SSIM bike (cond.)", lambda r: r["conditional"]["ssim"]["assembly"], False),
    Metric("crank-BB (cond.)", lambda r: r["conditional"]["validity"]["crank"]["median"], True, 4),
    Metric("wheel-dropout (cond.)", lambda r: _wheel_median(r["conditional"]["validity"]), True, 4),
    Metric("crank-BB (uncond.)", lambda r: r["unconditional"]["validity"]["crank"]["median"], True, 4),
)


def _preset_settings(settings: dict) -> dict:
    """What a run of the record's model and preset records when given no options."""
    preset = "quick" if settings.get("quick") else settings.get("preset", "auto")
    return recorded_settings(BikeRun(model=settings["model"], quick=preset == "quick",
                                     preset="auto" if preset == "quick" else preset))


def _relevant_settings(settings: dict) -> list[str]:
    names = ["beta", "arch", "minutes"]
    if settings["model"] == "gmrf":
        names += ["prior_form", "subset_posteriors"]
        if settings.get("subset_posteriors"):
            names.append("subset_max_size")
    return names


#: Runs of one model told apart by beta, the networks, the budget and the GMRF's prior form and
#: subset terms; records from before ``--prior-form`` and ``--subset-posteriors`` ran the paper's.
BIKE_VARIANTS = Variants(_preset_settings, _relevant_settings,
                         legacy={"prior_form": "paper", "subset_posteriors": 0, "subset_max_size": None})


def comparison_figure(test_images: torch.Tensor, records: dict, condition_on: str, rows: int = 6):
    """Like the paper's Figure 4: the conditioning component, the real bike, then each model's
    generated components overlaid into a bike."""
    given = COMPONENTS.index(condition_on)
    real = test_images[:rows].float()
    cols = [real[:, given], overlay(real)]
    labels = [f"given {condition_on}", "real bike"]
    for name, r in records.items():
        cols.append(overlay(r["_samples"]["conditional"][:rows]))
        labels.append(name)
    grid = torch.stack(cols, 0)[:, :, None]  # (columns, rows, 1, 64, 64)
    fig = image_grid(1 - grid, labels, f"Generated from the {condition_on} (columns: examples)", scale=0.9)
    return fig


@dataclass
class BikeConfig(ImageConfig, BikeRun):
    """The command line's settings: several models, the run settings of each."""

    model: list[str] = option(list(MODELS), "models to run: registered methods, or 'all' (the default: "
                                            f"{', '.join(MODELS)})")
    save_samples: int = option(0, "write N generated assemblies per model to <out>/<model>/samples.pt")

    def resolve_quick(self) -> None:
        """``--full`` is the full preset; without a GPU the default is the ``cpu`` preset."""
        if self.full and self.preset == "auto":
            self.preset = "full"

    def check_settings(self) -> None:
        self.check_positive("epochs", "latent_dim", "width", "n_train", "n_test")
        if self.minutes is not None and self.minutes < 0:
            raise ValueError("--minutes must be >= 0 (0: no budget)")
        if self.curve_every is not None and self.curve_every < 0:
            raise ValueError("--curve-every must be >= 0 (0: no curve)")
        if self.save_samples < 0:
            raise ValueError("--save-samples must be >= 0")
        if not 0.0 <= self.missing_ratio < 1.0:
            raise ValueError(f"--missing-ratio must be in [0, 1), got {self.missing_ratio}")


class BikeExperiment(ImageExperiment):
    """Structural coherence on bicycle assemblies (saddle, frame, crank, wheels, handlebars):
    ``table.md`` like the paper's Table III, ``figure.png`` like its Figure 4."""

    name = "bikes"
    description = "Structural coherence on bicycle assemblies: GMRF MCVAE against the baselines."
    Config = BikeConfig
    all_models = MODELS
    config_file = ImageFiles(BikeRun, "bike-assembly", run_bikes, load_trained_bikes, test_images, save_bike_samples)

    def data(self, config):
        return load_bike_data(config)

    def pipeline(self, run, data) -> dict:
        record = run_bikes(run, data)
        if run.save_samples:
            device = resolve_device(run.device)
            pyro.set_rng_seed(run.seed)
            model = load_trained_bikes(run, device)
            print(f"wrote {save_bike_samples(model_dir(run) / 'samples.pt', model, data['test'], run.save_samples, device)}")
        return record

    def table(self, results, data) -> str:
        return bikes_table({name: runs[0] for name, runs in results.items()})

    def figures(self, results, data, config, out) -> list[str]:
        records = {name: runs[0] for name, runs in results.items()}
        fig = comparison_figure(data["test"].float().div(255), records, config.condition_on)
        return [str(save_figure(fig, out / "figure.png"))]


register_experiment(BikeExperiment())
