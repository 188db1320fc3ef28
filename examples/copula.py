"""Gaussian-copula benchmark of the GMRF MCVAE paper (its Table I protocol).

    python examples/copula.py                                   # defaults: GMRF, 1 seed
    python examples/copula.py --model all --seeds 3 --jobs 2 --out results/copula

Trains, evaluates (joint W1 per coordinate, unconditional and conditional on each single
component, marginal W1, Spearman errors, all against a noise floor) under two generation
protocols (``sample``: x ~ p(x | z); ``mean``: decoder means) and writes ``OUT/results.json``,
``OUT/table.md``, ``OUT/pairplots_<protocol>.png`` (one pairplot per model) and
``OUT/pairplot_<model>.png``. Each seed's run lives in
``OUT/<model>/seed<S>/`` (CSV log and checkpoint); running the same command again resumes an
interrupted run and reuses finished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.data import make_copula_splits
from pyro_mcvae.evaluate import copula_noise_floor, evaluate_copula
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.parallel import map_in_processes
from pyro_mcvae.plots import copula_pairplot, copula_pairplot_grid, save_figure
from pyro_mcvae.provenance import provenance

MODELS = {
    # name: MCVAE.build keyword arguments plus the training objective. The baselines use the
    # paper's shared latent of size 3; each is trained with its own method's objective.
    "gmrf": dict(prior="precision", guide="gmrf", elbo="meanfield"),
    "mvae": dict(guide="mvae", latent_dim=3, elbo="meanfield"),  # + sub-sampled terms (guide)
    "mmvae": dict(guide="mmvae", latent_dim=3, elbo="dreg", particles=4),
    "mopoe": dict(guide="mopoe", latent_dim=3, elbo="meanfield"),
    "mmvaeplus": dict(guide="mmvaeplus", latent_dim=3, private_dim=1, elbo="dreg", particles=4),
    # ablation, not part of "all": the prior's covariance (not its precision) built by the blocks
    "gmrf-covprior": dict(prior="covariance", guide="gmrf", elbo="meanfield"),
    # experimental, not part of "all": neural MRF prior (log Z gradient from persistent HMC)
    "nnmrf": dict(prior="nnmrf", guide="gmrf", elbo="trace"),
}
ALL = ["gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus"]
PROTOCOLS = {"sample": True, "mean": False}  # name: generate x ~ p(x | z) (else decoder mean)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=["gmrf"], nargs="+", choices=[*MODELS, "all"],
                   help="gmrf: precision-parameterised GMRF prior (default); mvae, mmvae, mopoe, mmvaeplus: "
                        "baselines over a shared latent of size 3 (MMVAE+: plus 1 private coordinate per "
                        "component); all: those five; gmrf-covprior: ablation, the prior's covariance "
                        "built by the block construction")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seeds", type=int, default=1, help="number of training seeds (0..S-1)")
    p.add_argument("--out", default="results/copula")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-final", type=float, default=2e-4,
                   help="decay the learning rate geometrically to this value by the last step")
    p.add_argument("--elbo", default=None, choices=["meanfield", "trace", "iwae", "dreg"],
                   help="objective for every model (default: each model's own, see MODELS)")
    p.add_argument("--particles", type=int, default=None,
                   help="importance samples K for iwae/dreg (default: each model's own)")
    p.add_argument("--family", default="normal", choices=["normal", "laplace"],
                   help="posterior and prior family of the baselines")
    p.add_argument("--jobs", type=int, default=None,
                   help="train this many runs at once in separate processes, one thread each "
                        "(default: one per CPU core, at most one per run)")
    p.add_argument("--beta", default="1.0", help="number, 'linear:STEPS', or 'cyclical:PERIOD'")
    p.add_argument("--likelihood", default="normal", choices=["normal", "laplace"])
    p.add_argument("--mode", default="blockwise", choices=["blockwise", "elementwise"],
                   help="block scaling of the prior's and the guide's SPD construction")
    p.add_argument("--eps", type=float, default=0.9, help="dominance margin of the guide's covariance")
    p.add_argument("--prior-eps", type=float, default=None,
                   help="dominance margin of the prior (default 0.99 for a precision, 0.9 for a covariance)")
    p.add_argument("--population-n", type=int, default=20000,
                   help="generated tuples for the Spearman error against the population value")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.model = ALL if "all" in args.model else list(dict.fromkeys(args.model))
    if args.jobs is None:
        args.jobs = max(1, min(os.cpu_count() or 1, len(args.model) * args.seeds))
    if args.epochs < 1 or args.seeds < 1 or args.n_train < 2 or args.n_test < 2 or args.jobs < 1:
        p.error("--epochs, --seeds and --jobs must be >= 1, --n-train and --n-test >= 2")
    if args.particles is not None and args.particles < 1:
        p.error("--particles must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but no CUDA device is available (torch.cuda.is_available() is False)")
    return args


def mean_std(values, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def run_seed(name: str, seed: int, args, threads: int | None = None) -> dict:
    """Train (or resume, or reuse) one model for one seed and evaluate both protocols."""
    if threads:
        torch.set_num_threads(threads)
    dataset = make_copula_splits(args.n_train, args.n_test, seed=args.data_seed)
    run_dir = Path(args.out) / name / f"seed{seed}"
    options = dict(MODELS[name])
    elbo = args.elbo or options.pop("elbo")
    particles = args.particles or options.pop("particles", 1)
    options.pop("elbo", None), options.pop("particles", None)
    latent_dim = options.pop("latent_dim", args.latent_dim)
    family = {} if options.get("guide") in ("gmrf", "diagonal") else {"family": args.family}
    seed_everything(seed)
    model = MCVAE.build([dataset.train.shape[2]] * dataset.train.shape[1], latent_dim,
                        hidden=tuple(args.hidden), likelihood=args.likelihood, mode=args.mode,
                        eps=args.eps, prior_eps=args.prior_eps, **family, **options)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         lr_final=args.lr_final, elbo=elbo, num_particles=particles,
                         beta=args.beta, seed=seed, device=args.device)
    t0 = time.perf_counter()
    result = fit(model, torch.as_tensor(dataset.train), config, out_dir=run_dir,
                 progress=not args.no_progress and args.jobs == 1)
    train_s = time.perf_counter() - t0
    record = {"seed": seed, "elbo": elbo, "particles": particles, "epochs": args.epochs,
              "steps": result.steps, "final_loss": result.losses[-1],
              "train_seconds": round(train_s, 2),
              "ms_per_step": round(1000 * result.history[-1]["seconds"] / max(result.steps, 1), 2)}
    if hasattr(model.prior, "diagnostics"):  # MCMC-trained prior: the chains' state at the end
        record["prior_chain_diagnostics"] = model.prior.diagnostics()
    samples = {}
    for protocol, sample_likelihood in PROTOCOLS.items():
        seed_everything(seed + 1_000_000)  # generation draws from its own stream
        t0 = time.perf_counter()
        scores = evaluate_copula(model, dataset, args.device, args.population_n, sample_likelihood)
        samples[protocol] = scores.pop("samples")
        record[protocol] = scores | {"eval_seconds": round(time.perf_counter() - t0, 2)}
    print(f"done {name} seed {seed}: train {train_s:.0f} s, unconditional W1 x 1000 "
          f"{1000 * record['sample']['unconditional']['joint_w1_mean']:.1f} (samples)", flush=True)
    return record | {"_samples": samples}


def table(results: dict, floor: dict, protocol: str) -> str:
    """Markdown table (Table I layout) of one generation protocol, mean ± std over seeds."""
    head = ("| model | uncond. W1 j=1 | uncond. W1 j=2 | uncond. mean | cond. W1 j=1 | cond. W1 j=2 | "
            "cond. mean | Spearman err. (pop.) | train s / seed |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, runs in results.items():
        scores = [r[protocol] for r in runs]
        u = [[s["unconditional"]["joint_w1"][j] for s in scores] for j in (1, 2)]
        c = [[np.mean([b["joint_w1"][j] for b in s["conditional"]["by_source"].values()]) for s in scores]
             for j in (1, 2)]
        cells = [mean_std(1000 * np.array(v)) for v in
                 (u[0], u[1], np.mean(u, axis=0), c[0], c[1], np.mean(c, axis=0))]
        sp = mean_std([s["spearman_population_error"] for s in scores], digits=3)
        secs = np.mean([r["train_seconds"] for r in runs])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {sp} | {secs:.0f} |")
    f = [1000 * floor["joint_w1"][j] for j in (1, 2)]
    rows.append(f"| noise floor (true vs true) | {f[0]:.1f} | {f[1]:.1f} | {np.mean(f):.1f} | {f[0]:.1f} | "
                f"{f[1]:.1f} | {np.mean(f):.1f} | {floor['spearman_population_error']:.3f} | |")
    what = {"sample": "generated tuples drawn from the full generative model, x ~ p(x | z)",
            "mean": "generated tuples are the decoder means E[x | z]"}[protocol]
    return (f"**Protocol `{protocol}`**: {what}.\n\n" + head + "\n".join(rows)
            + "\n\nW1 x 1000 (lower is better), mean ± std over seeds; conditional: mean over the "
              "single observed source components.\n")


def run_all(args) -> dict:
    """Every (model, seed) run, in order, or ``--jobs`` at a time in worker processes."""
    tasks = [(name, seed) for name in args.model for seed in range(args.seeds)]
    if args.jobs == 1:
        records = [run_seed(name, seed, args) for name, seed in tasks]
    else:
        # Spawned workers with one thread each: small networks parallelise better across runs
        # than inside one run. The costlier models (listed last) start first, which balances the
        # workers' loads. The workers stop with this process, however it is stopped.
        tasks = tasks[::-1]
        records = map_in_processes(run_seed, [(name, seed, args, 1) for name, seed in tasks], args.jobs)
    by_run = {task: record for task, record in zip(tasks, records)}
    return {name: [by_run[name, seed] for seed in range(args.seeds)] for name in args.model}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = make_copula_splits(args.n_train, args.n_test, seed=args.data_seed)
    floor = copula_noise_floor(dataset, args.population_n)
    started = time.perf_counter()
    results = run_all(args)
    for name, runs in results.items():
        first = runs[0]["_samples"]["sample"]
        fig = copula_pairplot(dataset.test, first["unconditional"], f"{name}: unconditional samples (seed 0)")
        save_figure(fig, out / f"pairplot_{name}.png")
        fig = copula_pairplot(dataset.test, first["conditional"][0], f"{name}: generated given x1 (seed 0)")
        save_figure(fig, out / f"pairplot_{name}_given_x1.png")
    for protocol in PROTOCOLS:
        generated = {name: runs[0]["_samples"][protocol]["unconditional"] for name, runs in results.items()}
        fig = copula_pairplot_grid(dataset.test, generated,
                                   f"Unconditional generation, protocol '{protocol}' (seed 0)")
        save_figure(fig, out / f"pairplots_{protocol}.png", dpi=80)
    md = "\n".join(table(results, floor, protocol) for protocol in PROTOCOLS)
    print(md)
    record = provenance(args.device) | {
        "settings": vars(args),
        "data": {"n_train": args.n_train, "n_test": args.n_test, "seed": args.data_seed,
                 "rho": dataset.rho, "components": dataset.num_components},
        "noise_floor": floor,
        "protocols": {"sample": "x ~ p(x | z)", "mean": "decoder mean"},
        "results": {n: [{k: v for k, v in r.items() if k != "_samples"} for r in runs]
                    for n, runs in results.items()},
        "total_seconds": round(time.perf_counter() - started, 2),
        "units": "W1 in data units (multiply by 1000 for the paper's tables)",
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and pairplots in {out} "
          f"({record['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
