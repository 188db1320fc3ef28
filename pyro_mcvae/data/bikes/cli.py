"""Command line: ``python -m pyro_mcvae.data.bikes OUT_DIR [--num-train 10000] [--num-test 2000]
[--seed 0] [--overwrite]`` writes ``OUT_DIR/train`` and ``OUT_DIR/test``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from .assemblies import make_bike_splits
from .store import write_bike_assemblies

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m pyro_mcvae.data.bikes", description="Generate procedural bicycle assemblies (seeded)."
    )
    p.add_argument("out_dir")
    p.add_argument("--num-train", type=int, default=10000)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    splits = make_bike_splits(args.num_train, args.num_test, args.seed)
    for name, assemblies in splits._asdict().items():
        out = write_bike_assemblies(Path(args.out_dir) / name, assemblies, overwrite=args.overwrite)
        print(f"wrote {out} ({len(assemblies)} designs)")
    print(f"done in {time.perf_counter() - start:.1f} s")
