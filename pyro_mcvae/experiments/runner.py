"""The experiment runner, written once for every benchmark: device, seeds, train-or-resume,
restore, the per-model/per-seed loop (in worker processes with ``jobs > 1``), ``results.json``
with provenance, ``table.md`` and figures.

Layout of a run: ``OUT/<model>/seed<S>/`` holds each run's log and checkpoint (running the same
command again resumes an interrupted run and reuses a finished one; with other settings it is
refused before anything runs, naming them, unless ``--restart`` asks to train again),
``OUT/results.json`` (with the settings each checkpoint was trained with), ``OUT/table.md`` and
the experiment's figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from ..infer import TrainConfig, fit, load_checkpoint, resolve_device, seed_everything
from ..infer.checkpoint import CHECKPOINT_NAME, RunConflictError, load_weights
from ..infer.config import settings_record
from ..infer.trainer import run_differences
from ..models.base import MCMCPrior
from ..models.records import model_record, plain
from ..parallel import map_in_processes
from ..provenance import provenance
from .base import Experiment, parse_config
from .errors import run_command

__all__ = ["EVAL_SEED_OFFSET", "check_runs", "command_line", "restore", "resolve_device", "run_experiment", "run_one",
           "save_prior_chains", "train_config", "train_or_resume"]

#: Generation after training draws from its own stream: seed + this.
EVAL_SEED_OFFSET = 1_000_000


def train_or_resume(model, data, config: TrainConfig, run_dir, progress: bool = True, restart: bool = False,
                    **fit_options) -> tuple:
    """Train ``model`` with its log and checkpoint in ``run_dir``: an interrupted run resumes, a
    finished one only loads, one of other settings is refused (naming them); ``restart`` (or,
    as the image benchmarks' ``--restart`` passes it, ``resume=False``) trains afresh over it.
    Returns the :class:`TrainResult` and a record of the run: the run's own clock from its log
    (a reused run reports its original time), the training settings and the model's settings
    its checkpoint holds (``train_config``, ``model_config``)."""
    restart = restart or not fit_options.pop("resume", True)
    started = time.perf_counter()
    result = fit(model, data, config, out_dir=run_dir, progress=progress, overwrite=restart, **fit_options)
    seconds = result.history[-1]["seconds"] if result.history else time.perf_counter() - started
    record = {"steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
              "train_seconds": round(seconds, 2), "ms_per_step": round(1000 * seconds / max(result.steps, 1), 2),
              "train_config": plain(settings_record(config)), "model_config": plain(model_record(model))}
    return result, record


def restore(model, run_dir, device="cpu", hint: str = "train it first (same settings and output directory)"):
    """``model`` (freshly built) with the weights of the training run in ``run_dir``, on
    ``device`` in eval mode; clear errors when there is no checkpoint, or it holds a model of
    other settings (named) or shapes. :func:`pyro_mcvae.load_model` needs no model."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"no trained model at {path}; {hint}")
    return load_weights(model, path, device)


def check_runs(experiment: Experiment, config, data) -> None:
    """Before any run starts: every (model, seed) whose run directory already holds a checkpoint
    must have been trained with this command's settings (it is then resumed or reused), else
    :class:`~pyro_mcvae.infer.RunConflictError` names the runs and settings that differ and
    nothing is written. ``config.restart`` skips the check (those runs are trained again)."""
    if getattr(config, "restart", False):
        return
    conflicts = []
    for name in config.model:
        for seed in experiment.seeds(config):
            path = experiment.run_dir(config, name, seed) / CHECKPOINT_NAME
            if not path.is_file():
                continue
            model = build_seeded(experiment, config, data, name, seed)
            train = experiment.train_data(data)
            n = len(train[0]) if isinstance(train, (list, tuple)) else len(train)
            differences = run_differences(load_checkpoint(path), model, train_config(experiment, config, name, seed), n)
            if differences:
                conflicts.append(f"{path.parent} holds a run of {differences}")
    if conflicts:
        raise RunConflictError("; ".join(conflicts) + ". Rerun with the settings those runs were trained with, "
                               "choose another --out, or add --restart to train them again from the start, "
                               "replacing them (nothing was changed)")


def train_config(experiment: Experiment, config, model_name: str, seed: int) -> TrainConfig:
    """The training settings of one run."""
    elbo, particles = experiment.objective(config, model_name)
    return TrainConfig(**experiment.train_settings(config), elbo=elbo, num_particles=particles, seed=seed,
                       device=str(resolve_device(config.device)))


def build_seeded(experiment: Experiment, config, data, model_name: str, seed: int):
    """The model as the run builds it (the same initial weights every time)."""
    seed_everything(seed)
    return experiment.build(config, data, model_name, seed)


def run_one(experiment: Experiment, config, data, model_name: str, seed: int, threads: int | None = None) -> dict:
    """Train (or resume, or reuse) one model for one seed and evaluate it."""
    if threads:
        torch.set_num_threads(threads)
    model = build_seeded(experiment, config, data, model_name, seed)
    settings = train_config(experiment, config, model_name, seed)
    run_dir = experiment.run_dir(config, model_name, seed)
    _, record = train_or_resume(model, experiment.train_data(data), settings, run_dir,
                                progress=not config.no_progress and config.jobs == 1,
                                restart=getattr(config, "restart", False), mask=experiment.train_mask(data),
                                callbacks=experiment.callbacks(config, run_dir))
    record = {"seed": seed, "elbo": settings.elbo, "particles": settings.num_particles,
              "epochs": settings.epochs} | record
    if isinstance(model.prior, MCMCPrior):
        record |= save_prior_chains(model.prior, run_dir, getattr(config, "chain_transitions", 0))
    record |= experiment.evaluate(model, data, config, seed)
    print(f"done {model_name} seed {seed}: train {record['train_seconds']:.0f} s "
          f"({record['ms_per_step']:.1f} ms/step){experiment.headline(record)}", flush=True)
    return record


def save_prior_chains(prior, run_dir, transitions: int) -> dict:
    """An MCMC prior's chains at the end of a run: their diagnostics as training left them
    (``prior_chain_diagnostics``; absent for a reused run, whose sampler starts afresh), then
    ``transitions`` more with the parameters fixed (a fresh sampler warms up first), saved as
    ArviZ netCDF ``<run_dir>/prior_chains.nc`` (``prior_chains``) with their diagnostics
    (``prior_chain_diagnostics_fixed``)."""
    from .._io import atomic_netcdf

    out, end = {}, prior.diagnostics()
    if end["draws_per_chain"] >= 4:
        out["prior_chain_diagnostics"] = end
    path = atomic_netcdf(prior.inference_data(transitions), Path(run_dir) / "prior_chains.nc")
    return out | {"prior_chains": str(path), "prior_chain_transitions": transitions,
                  "prior_chain_diagnostics_fixed": prior.diagnostics()}


def run_all(experiment: Experiment, config, data) -> dict:
    """Every (model, seed) run, in order, or ``config.jobs`` at a time in worker processes."""
    seeds = experiment.seeds(config)
    tasks = [(name, seed) for name in config.model for seed in seeds]
    jobs = getattr(config, "jobs", 1)
    if jobs == 1:
        one = experiment.run_model or run_one  # a pipeline of its own (the image benchmarks), or ours
        records = [one(experiment, config, data, name, seed) for name, seed in tasks]
    else:
        # Spawned workers with one thread each: small networks parallelise better across runs
        # than inside one run. The costlier models (listed last) start first, which balances the
        # workers' loads. The workers stop with this process, however it is stopped.
        tasks = tasks[::-1]
        records = map_in_processes(run_one, [(experiment, config, data, name, seed, 1) for name, seed in tasks],
                                   jobs)
    by_run = dict(zip(tasks, records))
    return {name: [by_run[name, seed] for seed in seeds] for name in config.model}


def run_experiment(experiment: Experiment, config) -> dict:
    """Run every model and seed of ``config``; write ``results.json`` (provenance, settings,
    the experiment's summary, every number), ``table.md`` and the figures in ``config.out``.
    Returns the results record (samples included under ``"_samples"`` of each run)."""
    experiment.check(config)
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if experiment.shortcut(config):  # a mode that replaces the runs
        return {}
    data = experiment.data(config)
    if experiment.run_model is None:  # the image benchmarks' pipelines check inside fit, model by model
        check_runs(experiment, config, data)
    started = time.perf_counter()
    results = run_all(experiment, config, data)
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel training (torchrun): rank 0 reports
        return {"_results": results}
    figures = experiment.figures(results, data, config, out)
    md = experiment.table(results, data)
    print(md)
    record = provenance(device) | {
        "settings": dataclasses.asdict(config),
        "seeds": experiment.seeds(config),
        **experiment.summary(config, data),
        "results": {n: [{k: v for k, v in r.items() if k != "_samples"} for r in runs]
                    for n, runs in results.items()},
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    (out / "results.json").write_text(json.dumps(experiment.results_file(record, results), indent=2,
                                                 default=_json_value))
    (out / "table.md").write_text(md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}"
          + (f" and {len(figures)} figures" if figures else "") + f" in {out} ({record['total_seconds']:.0f} s)")
    experiment.report(results, data, config, out)
    return record | {"_results": results}


def _json_value(value):
    """Numbers (NumPy or torch scalars) as numbers, anything else JSON does not know as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def command_line(experiment: Experiment, argv=None, prog: str | None = None, description: str | None = None) -> int:
    """Parse the options generated from the experiment's ``Config`` and run it; a bad setting, a
    missing input or Ctrl-C ends with exit status 2 and one line (no traceback; see
    :func:`~pyro_mcvae.experiments.errors.run_command`)."""
    prog = prog or os.path.basename(sys.argv[0])
    return run_command(lambda: run_experiment(experiment, parse_config(experiment, argv, prog=prog,
                                                                       description=description)), prog)
