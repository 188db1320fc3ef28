"""Heavy-tailed, skewed multi-component data: the GMRF MCVAE against the ALMRF.

    python examples/heavy_tails.py                                   # both models, 1 seed
    python examples/heavy_tails.py --seeds 3 --out results/heavy-tails

Data: ``pyro_mcvae.data.make_heavy_tail_splits`` (M = 4 components of 2 coordinates, a skewed
Student-t with 3 degrees of freedom per coordinate, per-component affine maps). Both models get
the same networks, likelihood, optimiser and epochs; they differ in the latent law (Gaussian or
asymmetric Laplace, both with the block structure). Writes ``OUT/results.json`` (command,
versions, device, seeds, every number), ``OUT/table.md`` and ``OUT/quantiles.png`` (QQ plots of
every coordinate). Runs live in ``OUT/<model>/seed<S>/`` and resume when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.data import make_heavy_tail_splits
from pyro_mcvae.evaluate import TAIL_LEVELS, evaluate_heavy_tails, heavy_tail_noise_floor, heavy_tail_population
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.plots import save_figure
from pyro_mcvae.provenance import provenance

MODELS = {"gmrf": dict(guide="gmrf", elbo="meanfield"), "almrf": dict(guide="almrf", elbo="trace")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default="results/heavy-tails")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--df", type=float, default=3.0, help="degrees of freedom of the data (> 2)")
    p.add_argument("--skew", type=float, default=1.0)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-final", type=float, default=2e-4)
    p.add_argument("--population-n", type=int, default=20000, help="generated tuples for the quantiles")
    p.add_argument("--reference-n", type=int, default=200000,
                   help="true tuples whose quantiles are the reference (the test set's are too noisy)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.seeds < 1 or args.n_train < 2 or args.n_test < 2:
        p.error("--epochs and --seeds must be >= 1, --n-train and --n-test >= 2")
    if not args.df > 2:
        p.error("--df must be > 2")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but no CUDA device is available (torch.cuda.is_available() is False)")
    args.model = list(dict.fromkeys(args.model))
    return args


def run_seed(name: str, seed: int, dataset, reference, args) -> dict:
    options = dict(MODELS[name])
    elbo = options.pop("elbo")
    seed_everything(seed)
    model = MCVAE.build([dataset.train.shape[2]] * dataset.train.shape[1], args.latent_dim,
                        hidden=tuple(args.hidden), **options)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_final=args.lr_final,
                         elbo=elbo, seed=seed, device=args.device)
    t0 = time.perf_counter()
    result = fit(model, torch.as_tensor(dataset.train), config, out_dir=Path(args.out) / name / f"seed{seed}",
                 progress=not args.no_progress)
    # The run's own clock from its log (a finished run that is reused reports its original time;
    # a resumed one the time since the resume).
    train_s = result.history[-1]["seconds"] if result.history else time.perf_counter() - t0
    seed_everything(seed + 1_000_000)
    scores = evaluate_heavy_tails(model, dataset, reference, args.device, args.population_n)
    samples = scores.pop("samples")
    step_ms = 1000 * train_s / max(result.steps, 1)
    print(f"done {name} seed {seed}: {train_s:.0f} s ({step_ms:.1f} ms/step), unconditional W1 "
          f"{scores['unconditional']['joint_w1_mean']:.3f}", flush=True)
    return {"seed": seed, "elbo": elbo, "steps": result.steps, "final_loss": result.losses[-1],
            "train_seconds": round(train_s, 2), "ms_per_step": round(step_ms, 2), **scores,
            "_samples": samples}


def mean_std(values, digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def table(results: dict, floor: dict) -> str:
    lo, hi = TAIL_LEVELS
    head = (f"| model | uncond. W1 j=1 | uncond. W1 j=2 | cond. W1 mean | q{lo:g} error | q{hi:g} error | "
            f"q{lo:g} outward | q{hi:g} outward | ms/step |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, runs in results.items():
        cells = [mean_std([r["unconditional"]["joint_w1"][j] for r in runs]) for j in (1, 2)]
        cells.append(mean_std([r["conditional"]["joint_w1_mean"] for r in runs]))
        for key in ("mean", "signed_mean"):
            cells += [mean_std([r["quantile_errors"][key][p] for r in runs]) for p in TAIL_LEVELS]
        cells.append(f"{np.mean([r['ms_per_step'] for r in runs]):.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    q = floor["quantile_errors"]
    rows.append(f"| noise floor (true vs true) | {floor['joint_w1'][1]:.3f} | {floor['joint_w1'][2]:.3f} | "
                f"{floor['joint_w1_mean']:.3f} | {q['mean'][lo]:.3f} | {q['mean'][hi]:.3f} | "
                f"{q['signed_mean'][lo]:.3f} | {q['signed_mean'][hi]:.3f} | |")
    return (head + "\n".join(rows) + "\n\nW1 in data units (lower is better); quantile errors of the "
            "generated tuples against a large true sample, in units of its interquartile range per "
            "coordinate, averaged over the 8 coordinates; "
            "'outward' is signed: positive where the generated tail reaches further than the data's. "
            "Mean ± std over seeds.\n")


def qq_figure(reference: np.ndarray, populations: dict, title: str):
    import matplotlib.pyplot as plt

    m, num_j = reference.shape[1], reference.shape[2]
    probs = np.concatenate([np.linspace(0.001, 0.05, 30), np.linspace(0.05, 0.95, 40), np.linspace(0.95, 0.999, 30)])
    fig, axes = plt.subplots(num_j, m, figsize=(3.0 * m, 3.0 * num_j), squeeze=False)
    for j in range(num_j):
        for k in range(m):
            ax = axes[j, k]
            truth = np.quantile(reference[:, k, j], probs)
            ax.plot(truth, truth, color="0.6", lw=1, label="true")
            for name, pop in populations.items():
                ax.plot(truth, np.quantile(pop[:, k, j], probs), lw=1.4, label=name)
            ax.set_title(f"x{k + 1}, coordinate {j + 1}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title + "\nquantiles 0.1%..99.9% of generated against true data (diagonal: perfect)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = make_heavy_tail_splits(args.n_train, args.n_test, seed=args.data_seed, df=args.df, skew=args.skew)
    reference = heavy_tail_population(dataset, args.reference_n, 20_000)
    floor = heavy_tail_noise_floor(dataset, reference, args.population_n)
    started = time.perf_counter()
    results = {name: [run_seed(name, s, dataset, reference, args) for s in range(args.seeds)]
               for name in args.model}
    fig = qq_figure(reference, {n: runs[0]["_samples"]["population"] for n, runs in results.items()},
                    "Heavy-tailed data: unconditional generation (seed 0)")
    save_figure(fig, out / "quantiles.png")
    md = table(results, floor)
    print(md)
    record = provenance(args.device) | {
        "settings": vars(args),
        "data": {"n_train": args.n_train, "n_test": args.n_test, "seed": args.data_seed, "df": args.df,
                 "skew": args.skew, "rho": dataset.rho, "reference_n": args.reference_n},
        "noise_floor": floor,
        "results": {n: [{k: v for k, v in r.items() if k != "_samples"} for r in runs]
                    for n, runs in results.items()},
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'quantiles.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
