"""Time of forward + backward of the PolyMNIST image networks: grouped components against a loop.

M = 5 ResNet encoders (flat ``3 x 28 x 28`` images to ``2 d`` numbers) and M decoders (the first
``d`` of them back to image logits) with a Bernoulli reconstruction loss, on one batch.
``grouped`` runs each role as one network with grouped convolutions
(``ImageComponentNets``, the package's default); ``loop`` runs ``M`` separate single-component
networks holding the same weights (``ImageComponentNets.per_component``), one after another in
Python. Both are checked to give the same loss and gradients before timing; they run interleaved
in the same process (warm-up first, the order rotated every repetition).

    .venv/bin/python benchmarks/image_nets.py [--quick] [--json PATH] [--device cpu|cuda]
                                              [--width W] [--batch B] [--threads N] [--layouts]

``--layouts`` (CPU) adds ``grouped, NCHW``: the grouped networks with the convolutions left in
the default contiguous layout instead of channels-last (``resnet.CHANNELS_LAST_ON_CPU``).

``--width`` defaults to 64 (the full MMVAE+-sized networks, channels 64/128/256) on CUDA and to 16
on CPU, where one full-width step at batch 256 takes tens of seconds. Prints a markdown table:
ms per forward + backward (median and interquartile range) and the ratio grouped / loop.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from _common import (  # (benchmarks/ is on sys.path when run as a script)
    interleaved, make_parser, markdown_table, print_header, quartiles, setup, write_json,
)
from pyro_mcvae.nets import resnet
from pyro_mcvae.nets.resnet import ImageComponentNets

BENCHMARK = "image_nets"
NUM_COMPONENTS = 5
IMAGE_SHAPE = (3, 28, 28)
IMAGE_DIM = 3 * 28 * 28


def build(width: int, latent: int, device):
    enc = ImageComponentNets([IMAGE_DIM] * NUM_COMPONENTS, [2 * latent] * NUM_COMPONENTS, "encoder",
                             IMAGE_SHAPE, width).to(device)
    dec = ImageComponentNets([latent] * NUM_COMPONENTS, [IMAGE_DIM] * NUM_COMPONENTS, "decoder",
                             IMAGE_SHAPE, width).to(device)
    return enc, dec


def grouped_step(enc, dec, xs, latent):
    """One forward + backward of all M encoders and decoders, grouped; returns the loss."""
    codes = enc(xs)
    logits = dec([c[..., :latent] for c in codes])
    loss = sum(F.binary_cross_entropy_with_logits(lg, x, reduction="sum") for lg, x in zip(logits, xs))
    loss.backward()
    return loss


def loop_step(encs, decs, xs, latent):
    """The same computation with M separate networks, one component after another."""
    loss = 0.0
    for enc, dec, x in zip(encs, decs, xs):
        code = enc(x.reshape(-1, 1, *IMAGE_SHAPE))  # (N, 1, 2 d)
        logits = dec(code[..., :latent]).reshape(x.shape)
        loss = loss + F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    loss.backward()
    return loss


def check_same(enc, dec, encs, decs, xs, latent) -> tuple[float, float]:
    """Relative difference of the losses and largest relative gradient difference, grouped vs loop."""
    for m in (enc, dec, *encs, *decs):
        m.zero_grad(set_to_none=True)
    lg = grouped_step(enc, dec, xs, latent).item()
    ll = loop_step(encs, decs, xs, latent).item()
    worst = 0.0
    for stacked, singles in ((enc.net, encs), (dec.net, decs)):
        per = [dict(s.named_parameters()) for s in singles]
        for name, p in stacked.named_parameters():
            ref = torch.cat([q[name].grad for q in per])
            worst = max(worst, ((p.grad - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item())
    for m in (enc, dec, *encs, *decs):
        m.zero_grad(set_to_none=True)
    return abs(lg - ll) / abs(ll), worst


@contextlib.contextmanager
def contiguous_layout():
    """The convolutions on CPU in the default NCHW layout instead of channels-last."""
    old = resnet.CHANNELS_LAST_ON_CPU
    resnet.CHANNELS_LAST_ON_CPU = False
    try:
        yield
    finally:
        resnet.CHANNELS_LAST_ON_CPU = old


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--width", type=int, default=None,
                        help="base channels of the ResNets (default: 64 on cuda, 16 on cpu)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 256; 32 with --quick)")
    parser.add_argument("--latent", type=int, default=32, help="latent size d per component")
    parser.add_argument("--layouts", action="store_true",
                        help="also time the grouped networks in NCHW layout (CPU only)")
    args = parser.parse_args(argv)
    device, default_threads = setup(args)
    width = args.width or (64 if device.type == "cuda" else 16)
    if args.quick:
        batch, width = args.batch or 32, args.width or 8
        reps, inner, warmup = args.reps or 3, 1, 0
    else:
        batch = args.batch or 256
        reps = args.reps or (15 if device.type == "cuda" else 3)
        inner, warmup = (5, 3) if device.type == "cuda" else (1, 0)
    # warm-up steps come on top of the check below, which already runs each alternative once

    info = print_header(BENCHMARK, args, device, default_threads,
                        load_note=" (other processes compete for the {cpu_count} cores)")
    torch.manual_seed(args.seed)
    enc, dec = build(width, args.latent, device)
    encs, decs = enc.per_component(), dec.per_component()
    xs = [torch.rand(batch, IMAGE_DIM, device=device) for _ in range(NUM_COMPONENTS)]
    n_params = sum(p.numel() for p in (*enc.parameters(), *dec.parameters()))
    print(f"\n## M={NUM_COMPONENTS} ResNet encoders + decoders, images {IMAGE_SHAPE}, width {width} "
          f"(channels {width}/{2 * width}/{4 * width}), latent d={args.latent}, batch {batch}, "
          f"{n_params / 1e6:.2f} M parameters")
    loss_diff, grad_diff = check_same(enc, dec, encs, decs, xs, args.latent)
    print(f"grouped vs loop before timing: relative loss difference {loss_diff:.1e}, "
          f"largest relative gradient difference {grad_diff:.1e}")

    alternatives = {
        "grouped": (contextlib.nullcontext, lambda: grouped_step(enc, dec, xs, args.latent)),
        "loop": (contextlib.nullcontext, lambda: loop_step(encs, decs, xs, args.latent)),
    }
    if args.layouts and device.type == "cpu":
        alternatives["grouped, NCHW"] = (contiguous_layout, alternatives["grouped"][1])
        warmup = max(warmup, 1)  # the check did not run this layout
    times = interleaved(alternatives, reps, inner, warmup, device)
    base = np.asarray(times["loop"])
    rows, results = [], []
    for name in alternatives:
        q1, med, q3 = quartiles(times[name])
        pq1, pmed, pq3 = quartiles(np.asarray(times[name]) / base)
        rows.append([name, f"{med * 1e3:.1f}", f"{q1 * 1e3:.1f}-{q3 * 1e3:.1f}",
                     f"{med / float(np.median(base)):.2f}x", f"{pq1:.2f}-{pq3:.2f}"])
        results.append({
            "alternative": name, "num_components": NUM_COMPONENTS, "width": width, "latent": args.latent,
            "batch": batch, "parameters": n_params, "ms_median": med * 1e3, "ms_q1": q1 * 1e3,
            "ms_q3": q3 * 1e3, "ratio_vs_loop": med / float(np.median(base)),
            "paired_ratio_q1": pq1, "paired_ratio_median": pmed, "paired_ratio_q3": pq3,
            "reps": reps, "steps_per_rep": inner, "warmup_steps": warmup,
            "check_loss_rel_diff": loss_diff, "check_grad_rel_diff": grad_diff,
            "ms_all": [t * 1e3 for t in times[name]],
        })
    print(f"\nforward + backward, encoders + decoders ({reps} interleaved repetitions x {inner} steps, "
          f"after {warmup} warm-up steps)\n")
    print(markdown_table(["alternative", "ms/step (median)", "IQR (ms)", "ratio vs loop", "paired ratio IQR"],
                         rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info, results)


if __name__ == "__main__":
    main()
