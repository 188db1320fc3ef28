"""PolyMNIST: train a multimodal VAE on five image modalities and score its coherence.

    python examples/polymnist.py                       # GMRF MCVAE, paper settings on a GPU;
                                                       # the quick CPU run when there is none
    python examples/polymnist.py --quick               # small CPU run (minutes)
    python examples/polymnist.py --model mmvaeplus --epochs 50 --device cuda
    python examples/polymnist.py --model all --quick   # every model, one table
    python examples/polymnist.py --full --classifiers-only   # our digit classifiers (3 epochs), saved
    torchrun --nproc_per_node=2 examples/polymnist.py --device cuda   # data-parallel (DDP)

Finds the data in ``--data-dir`` or generates it there (MNIST IDX files from ``--mnist-dir``
and the backgrounds from ``--backgrounds-dir``, by default from ``../shared/data`` or
``$PYRO_MCVAE_DATA``), trains (checkpoints in ``<out>/<model>/train``; rerunning resumes),
evaluates coherence (our classifiers and, when found, MoPoE-VAE's), SSIM, the digit-feature
Fréchet distance and FID (with the Inception weights: ``--inception-weights``), and writes
``results.json``, ``table.md`` and image grids under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from pyro_mcvae.experiments.polymnist import MODELS, PolyMNISTRun, results_table, run_polymnist


def parse_args(argv=None) -> tuple[list[str], PolyMNISTRun]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=["gmrf"], choices=[*MODELS, "all"])
    p.add_argument("--quick", action="store_true", help="small CPU run: 3,000 tuples, narrow nets, 2 epochs")
    p.add_argument("--full", action="store_true", help="the paper's settings even without a GPU")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, help="default: the paper's size for the model")
    p.add_argument("--width", type=int, help="ResNet base channels (default 64; quick 8)")
    p.add_argument("--offdiag-keep", type=float, default=0.25,
                   help="GMRF: fraction of off-diagonal posterior entries kept (paper: mask 75%%)")
    p.add_argument("--elbo", choices=["meanfield", "trace", "iwae", "dreg"])
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modalities", type=int, default=5, help="number of modalities m0.. (up to 9)")
    p.add_argument("--data-dir", default="data/polymnist")
    p.add_argument("--mnist-dir")
    p.add_argument("--backgrounds-dir")
    p.add_argument("--classifiers", help="our classifiers file (trained and saved there if absent)")
    p.add_argument("--mopoe-classifiers", help="directory of MoPoE-VAE's pretrained classifiers")
    p.add_argument("--classifiers-only", action="store_true",
                   help="only train (or load) the digit classifiers and print their test accuracy")
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth for FID")
    p.add_argument("--fid", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-eval", type=int)
    p.add_argument("--out", default="results/polymnist")
    p.add_argument("--save-samples", help="write generated samples to this .pt file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args(argv)
    models = list(MODELS) if "all" in args.model else args.model
    quick = args.quick or (not args.full and not torch.cuda.is_available() and args.device in ("auto", "cpu"))
    if quick and not args.quick:
        print("no GPU: running the quick CPU configuration (pass --full for the paper's settings)")
    run = PolyMNISTRun(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
        width=args.width, offdiag_keep=args.offdiag_keep, elbo=args.elbo, particles=args.particles,
        seed=args.seed, num_modalities=args.modalities, device=args.device, amp=args.amp, data_dir=args.data_dir,
        mnist_dir=args.mnist_dir, backgrounds_dir=args.backgrounds_dir, classifiers=args.classifiers,
        mopoe_classifiers=args.mopoe_classifiers, inception_weights=args.inception_weights, fid=args.fid,
        num_train=args.num_train, num_eval=args.num_eval, quick=quick, out=args.out,
        save_samples=args.save_samples, progress=not args.no_progress, resume=not args.no_resume)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    run.extra["classifiers_only"] = args.classifiers_only
    return models, run


def train_classifiers_only(run: PolyMNISTRun) -> int:
    from pyro_mcvae.experiments.polymnist import load_full_polymnist, load_judges
    from pyro_mcvae.experiments.runner import resolve_device

    train, test = load_full_polymnist(run)
    for name, (_, info) in load_judges(run, train, test, resolve_device(run.device)).items():
        acc = " / ".join(f"{a:.3f}" for a in info["test_accuracy"])
        print(f"{name} classifiers ({info.get('file') or info.get('directory')}): test accuracy {acc}")
    return 0


def main(argv=None) -> int:
    from pyro_mcvae.data import DataNotFoundError
    from pyro_mcvae.metrics import InceptionWeightsUnavailable

    try:
        return run_models(*parse_args(argv))
    except (DataNotFoundError, InceptionWeightsUnavailable) as err:  # what to pass, not a traceback
        print(f"polymnist.py: error: {err}", file=sys.stderr)
        return 2


def run_models(models, run) -> int:
    if run.extra.get("classifiers_only"):
        return train_classifiers_only(run)
    records = {}
    for name in models:
        run.model = name
        if run.save_samples and len(models) > 1:
            base = Path(run.save_samples)
            run.save_samples = str(base.with_name(f"{base.stem}_{name}{base.suffix}"))
        records[name] = run_polymnist(run)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    table = results_table(records)
    out = Path(run.out)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(records, indent=2, default=str))
    print(table)
    for name, rec in records.items():
        print(f"{name}: {rec['training']['seconds_this_process']} s training ({rec['training']['ms_per_step']} ms/step), "
              f"{rec['total_seconds']} s in all; figures {', '.join(rec['figures'])}")
        if rec["fid_note"]:
            print(f"  {rec['fid_note'].splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
