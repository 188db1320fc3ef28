"""SSIM of PolyMNIST-sized image pairs: scikit-image pair by pair (the library until 2026-11-27)
against the batched torch computation of the same definition (``pyro_mcvae.metrics.ssim``),
side by side.

One PolyMNIST evaluation scores 10,000 tuples x 5 sources x 4 targets = 200,000 pairs of 3x28x28
images (before 2026-11-27 once per judge, so twice). The script checks that the two backends agree
on the pairs it times, then times both on the same pairs, interleaved.

    .venv/bin/python benchmarks/ssim.py [--quick] [--json PATH] [--threads N]
"""

from __future__ import annotations

import contextlib

import torch

from _common import interleaved, markdown_table, parse_cpu_benchmark, print_header, step_summary, write_json
from pyro_mcvae.metrics.ssim import ssim

BENCHMARK = "ssim"


def make_pairs(n: int, seed: int):
    """Images in [0, 1] and noisy copies of them: SSIM well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, 28, 28, generator=g)
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, b


def main(argv=None):
    args, device, default_threads = parse_cpu_benchmark(__doc__, argv, "SSIM is computed on the CPU")
    n = 100 if args.quick else 2000
    reps = args.reps or (3 if args.quick else 5)
    info = print_header(BENCHMARK, args, device, default_threads, extra=f", {n} pairs of 3x28x28 images")
    a, b = make_pairs(n, args.seed)
    diff = float((ssim(a, b, backend="skimage") - ssim(a, b, backend="torch")).abs().max())
    print(f"agreement: largest |SSIM difference| {diff:.1e}")
    if not diff < 1e-8:
        raise SystemExit("the two backends disagree: the comparison would be meaningless")
    backends = ["skimage", "torch"]
    alternatives = {f"{name} ({'before' if name == 'skimage' else 'now'})":
                    (contextlib.nullcontext, lambda name=name: ssim(a, b, backend=name)) for name in backends}
    times = interleaved(alternatives, reps=reps, inner=1, warmup=1, device=device)
    names = list(alternatives)
    summary = step_summary(times, names)
    rows = [[name, f"{s['ms_median']:.1f}", f"{s['ms_q1']:.1f}-{s['ms_q3']:.1f}",
             f"{s['ms_median'] * 1e3 / n:.1f}", f"{1 / s['ratio']:.2f}x"] for name, s in summary.items()]
    print(markdown_table(["backend", "ms (median)", "IQR", "us per pair", f"speed-up ratio vs {names[0]}"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"backends": summary, "agreement": diff, "settings": {"pairs": n, "reps": reps}})


if __name__ == "__main__":
    main()
