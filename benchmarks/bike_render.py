"""Rendering bicycle assemblies: vectorised over designs against one design at a time.

``render_bikes`` draws all designs of a chunk at once (distance fields on a supersampled grid,
a loop only over the handful of primitives); the alternative renders each design alone, which
is what a per-design drawing loop costs. Both produce the same pixels (checked first).

    .venv/bin/python benchmarks/bike_render.py [--quick] [--designs 512] [--json PATH]
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from _common import interleaved, make_parser, markdown_table, print_header, quartiles, setup, write_json  # noqa: E402
from pyro_mcvae.data.bikes import render_bikes, sample_bike_geometry

BENCHMARK = "bike_render"


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--designs", type=int, default=None, help="designs per repetition (default 512; quick 32)")
    args = p.parse_args()
    n = args.designs or (32 if args.quick else 512)
    reps = args.reps or (2 if args.quick else 3)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads, extra=f", {n} designs, reps {reps}")
    geometry = sample_bike_geometry(n, seed=args.seed)
    one_by_one = lambda: torch.cat([render_bikes(geometry[i:i + 1]) for i in range(n)])  # noqa: E731
    batched = lambda: render_bikes(geometry)  # noqa: E731
    diff = float((one_by_one() - batched()).abs().max())
    print(f"max |difference| between the two: {diff:.2e}")
    times = interleaved({"vectorised": (contextlib.nullcontext, batched),
                        "one design at a time": (contextlib.nullcontext, one_by_one)},
                        reps, inner=1, warmup=1, device=device)
    base = float(np.median(times["vectorised"]))
    rows, results = [], {}
    for name, t in times.items():
        q1, med, q3 = quartiles(t)
        results[name] = {"s_median": med, "designs_per_s": n / med, "ratio": med / base}
        rows.append([name, f"{med:.3f}", f"{q1:.3f}-{q3:.3f}", f"{n / med:,.0f}", f"{med / base:.2f}x"])
    print(markdown_table(["renderer", "s per repetition", "IQR", "designs/s", "ratio vs vectorised"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info, {"results": results, "designs": n, "max_difference": diff})


if __name__ == "__main__":
    main()
