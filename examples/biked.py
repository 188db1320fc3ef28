"""Structural coherence on bicycle assemblies: GMRF MCVAE against the baselines.

    python examples/biked.py                      # GMRF and every baseline, procedural bikes
    python examples/biked.py --quick              # small CPU run
    python examples/biked.py --data-dir BIKED/    # real BIKED-style folders (one per component)

Five components (saddle, frame, crank, wheels, handlebars), 64x64 grayscale in a common frame.
Writes ``table.md`` (like the paper's Table III: Wasserstein between the joint laws of the
components' centres of mass, SSIM per component and of the overlaid bike, assembly validity where
the geometry is known), ``results.json`` and ``figure.png`` (like its Figure 4) under ``--out``.
``--save-samples N`` also writes ``<out>/<model>/samples.pt`` (generated assemblies, unconditional
and from each single component; see ``save_bike_samples``). Training resumes from the checkpoint
in ``<out>/<model>/train`` (``--restart`` starts again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyro
import torch

from pyro_mcvae.data.bikes import COMPONENTS
from pyro_mcvae.experiments.bikes import (BikeRun, bikes_table, comparison_figure, load_bike_data,
                                          load_trained_bikes, model_dir, run_bikes, save_bike_samples)
from pyro_mcvae.experiments.bikes import MODELS
from pyro_mcvae.experiments.runner import resolve_device
from pyro_mcvae.plots import save_figure


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=["all"], choices=[*MODELS, "all"])
    p.add_argument("--quick", action="store_true", help="2,000 bikes, narrow networks, 3 epochs")
    p.add_argument("--full", action="store_true", help="full settings even without a GPU")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int)
    p.add_argument("--latent-dim", type=int, help="latent size (default: GMRF 4 per component, baselines 20)")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--condition-on", default="frame", choices=COMPONENTS)
    p.add_argument("--data-dir", help="BIKED-style folders (default: procedural bikes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--inception-weights")
    p.add_argument("--out", default="results/biked")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision (CUDA)")
    p.add_argument("--save-samples", type=int, default=0, metavar="N",
                   help="write N generated assemblies per model to <out>/<model>/samples.pt")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("epochs", "latent_dim", "width", "n_train", "n_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.save_samples < 0:
        p.error("--save-samples must be >= 0")
    models = list(MODELS) if "all" in args.model else args.model
    quick = args.quick or (not args.full and not torch.cuda.is_available() and args.device in ("auto", "cpu"))
    if quick and not args.quick:
        print("no GPU: running the quick CPU configuration (pass --full for the full settings)")
    run = BikeRun(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
                  latent_dim=args.latent_dim, amp=args.amp, resume=not args.restart, n_train=args.n_train,
                  n_test=args.n_test, condition_on=args.condition_on, data_dir=args.data_dir, seed=args.seed,
                  device=args.device, fid=args.fid, inception_weights=args.inception_weights, quick=quick,
                  out=args.out, progress=not args.no_progress)
    return models, run, args.save_samples


def main(argv=None) -> int:
    from pyro_mcvae.metrics import InceptionWeightsUnavailable

    models, run, num_samples = parse_args(argv)
    try:
        device = resolve_device(run.device)
        data = load_bike_data(run)
        records = {}
        for name in models:
            run.model = name
            records[name] = run_bikes(run, data)
            if num_samples:
                pyro.set_rng_seed(run.seed)
                model = load_trained_bikes(run, device)
                path = save_bike_samples(model_dir(run) / "samples.pt", model, data["test"], num_samples, device)
                print(f"wrote {path}")
    except (ValueError, FileNotFoundError, InceptionWeightsUnavailable) as err:
        print(f"biked.py: error: {err}", file=sys.stderr)
        return 2
    out = Path(run.out)
    table = bikes_table(records)
    (out / "table.md").write_text(table)
    save_figure(comparison_figure(data["test"].float().div(255), records, run.condition_on), out / "figure.png")
    clean = {n: {k: v for k, v in r.items() if k != "_samples"} for n, r in records.items()}
    (out / "results.json").write_text(json.dumps(clean, indent=2, default=float))
    print(table)
    print(f"wrote {out / 'table.md'}, {out / 'results.json'}, {out / 'figure.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
