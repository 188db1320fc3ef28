"""Command line: ``python -m pyro_mcvae.data.polymnist OUT_DIR [--mnist-dir DIR]
[--backgrounds-dir DIR] [--num-modalities 5] [--seed 0] [--num-train N] [--num-test N]
[--layout png|pt|both] [--download] [--overwrite] [--verify]``."""

from __future__ import annotations

import argparse
import time
from typing import Sequence

from .._store import CHECKSUMS
from .build import generate_polymnist
from .store import LAYOUTS, verify_polymnist

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m pyro_mcvae.data.polymnist", description="Generate PolyMNIST (seeded)."
    )
    p.add_argument("out_dir")
    p.add_argument("--mnist-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--backgrounds-dir", default=None, help="folder with the background photographs")
    p.add_argument("--num-modalities", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--layout", choices=LAYOUTS, default="png")
    p.add_argument("--download", action="store_true", help="fetch MNIST from the public mirrors")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verify", action="store_true", help="only check an existing out_dir against its manifest")
    args = p.parse_args(argv)
    if args.verify:
        verify_polymnist(args.out_dir, progress=True)
        print(f"{args.out_dir}: all files match {CHECKSUMS}")
        return
    start = time.perf_counter()
    out = generate_polymnist(
        args.out_dir, args.mnist_dir, args.backgrounds_dir, args.num_modalities, args.seed,
        args.num_train, args.num_test, args.download, args.layout, overwrite=args.overwrite,
    )
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
