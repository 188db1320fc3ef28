"""The GMRF's PolyMNIST training step on a CPU: where the time goes, and the levers side by side.

Every variant is the GMRF MCVAE as ``examples/polymnist.py`` builds it (five modalities, latent 16
per modality, 25% of the posterior's off-diagonal entries, Laplace likelihoods, the standardised
prior, ``TraceMeanField_ELBO``, Adam) stepping on the same random tuples ``(batch, 5, 3, 28, 28)``;
the variants alternate step by step (``interleaved``), so load on the machine affects them alike.

- ``resnet``: ResNet encoders and decoders at base width 16 (and the global network's own narrow
  ResNet), float32: the step of the quick run, the reference ("before");
- ``resnet-bf16``: the same under bf16 autocast (``--amp`` of the example; oneDNN's bf16
  convolutions where the CPU has AVX-512 BF16);
- ``mlp``: the ``cpu`` preset's networks, MLPs (512, 512) on the flattened images;
- ``mlp-bf16``: the same under bf16 autocast;
- ``mlp-subset1``: the ``cpu`` preset's MLPs with one subset-posterior term per step
  (``--subset-posteriors 1``), which stacks a second copy of the batch (the preset's step); the
  guide's networks run once per tuple (``SubsetELBO``'s ``encode_once``, since 2026-12-07);
- ``mlp-subset1-twopass``: the same with the encoders and the global network run on both
  copies (``encode_once=False``: the step before 2026-12-07, the same loss and gradients);
- ``mlp-subset1-coupled8``: the preset's step with 8 of the 16 coordinates per modality
  coupled across modalities (``--coupled-dims 8``);
- ``mlp-singles``: the MLPs with one subset-posterior term per modality given alone, every
  modality at every step (``--subset-posteriors 0 --subset-singles``: six stacked copies of the
  batch through the decoders, the guide's networks once): the ``cpu`` preset's step since
  2026-12-07; ``mlp-singles-bf16``: the same under bf16 autocast (``--amp``);
- ``mlp-d32``: the MLPs with 32 latent coordinates per modality instead of 16 (the blockwise
  construction's spectral norms grow with the block size);
- ``mlp-elementwise``, ``mlp-d32-elementwise``, ``mlp-d64-elementwise``: the elementwise
  construction (``--construction elementwise``: absolute values per entry, no decompositions)
  at 16, 32 and 64 coordinates per modality;
- ``mlp-singles-d32``, ``mlp-singles-d32-elementwise``: the ``cpu`` preset's step with 32
  coordinates per modality (``--latent-dim 32``), blockwise and elementwise;
  ``mlp-singles-d32-coupled16``: the same with 16 of the 32 coupled across modalities
  (``--coupled-dims 16``: the other 16 independent of every other block).

``--profile`` adds, for every variant, the operators with the largest self time over two steps
(``torch.profiler``).

    .venv/bin/python benchmarks/cpu_image_step.py [--quick] [--batch 128] [--width 16]
        [--variants resnet mlp ...] [--profile] [--json PATH]
"""

from __future__ import annotations

import torch

from _common import (  # noqa: E402
    image_step_sizes, interleaved, make_parser, markdown_table, print_header, random_images, setup_cpu, step_summary,
    write_json,
)
from polymnist_step import ImageStepper  # noqa: E402
from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model
from pyro_mcvae.infer.trainer import _autocast

BENCHMARK = "cpu_image_step"
VARIANTS = {  # name: (arch, bf16 autocast, subset-posterior terms, latent size per modality, construction)
    "resnet": ("resnet", False, 0, 16, "blockwise"),
    "resnet-bf16": ("resnet", True, 0, 16, "blockwise"),
    "mlp": ("mlp", False, 0, 16, "blockwise"),
    "mlp-bf16": ("mlp", True, 0, 16, "blockwise"),
    "mlp-subset1": ("mlp", False, 1, 16, "blockwise"),
    "mlp-subset1-twopass": ("mlp", False, 1, 16, "blockwise"),
    "mlp-subset1-coupled8": ("mlp", False, 1, 16, "blockwise"),
    "mlp-singles": ("mlp", False, 0, 16, "blockwise"),
    "mlp-singles-bf16": ("mlp", True, 0, 16, "blockwise"),
    "mlp-d32": ("mlp", False, 0, 32, "blockwise"),
    "mlp-elementwise": ("mlp", False, 0, 16, "elementwise"),
    "mlp-d32-elementwise": ("mlp", False, 0, 32, "elementwise"),
    "mlp-d64-elementwise": ("mlp", False, 0, 64, "elementwise"),
    "mlp-singles-d32": ("mlp", False, 0, 32, "blockwise"),
    "mlp-singles-d32-elementwise": ("mlp", False, 0, 32, "elementwise"),
    "mlp-singles-d32-coupled16": ("mlp", False, 0, 32, "blockwise"),
}
#: Settings of a variant beyond the tuple above: the run's coupled coordinates, the objective's
#: encode_once.
EXTRA = {"mlp-subset1-twopass": {"encode_once": False}, "mlp-subset1-coupled8": {"coupled_dims": 8},
         "mlp-singles": {"subset_singles": True}, "mlp-singles-bf16": {"subset_singles": True},
         "mlp-singles-d32": {"subset_singles": True}, "mlp-singles-d32-elementwise": {"subset_singles": True},
         "mlp-singles-d32-coupled16": {"subset_singles": True, "coupled_dims": 16}}
#: The variants a run without ``--variants`` times (those recorded in docs/benchmarks.md section 7).
DEFAULT_VARIANTS = ["resnet", "resnet-bf16", "mlp", "mlp-bf16", "mlp-subset1", "mlp-d32"]


def build_stepper(name: str, data, width: int, hidden, seed: int) -> ImageStepper:
    arch, bf16, subsets, latent, construction = VARIANTS[name]
    run = PolyMNISTRun(model="gmrf", arch=arch, width=width, hidden=list(hidden), subset_posteriors=subsets,
                       subset_max_size=1 if subsets else None, latent_dim=latent, prior_form="standardized",
                       prior_init_shared=8, construction=construction,
                       coupled_dims=EXTRA.get(name, {}).get("coupled_dims"),
                       subset_singles=EXTRA.get(name, {}).get("subset_singles", False))
    torch.manual_seed(seed)
    stepper = ImageStepper(build_polymnist_model(run), data, "meanfield",
                           encode_once=EXTRA.get(name, {}).get("encode_once", True))
    if bf16:
        stepper.svi.model = _autocast(stepper.svi.model, "cpu", torch.bfloat16)
        stepper.svi.guide = _autocast(stepper.svi.guide, "cpu", torch.bfloat16)
    return stepper


def top_operators(stepper: ImageStepper, rows: int) -> list[tuple[str, float, float]]:
    """The ``rows`` operators with the largest self CPU time over two steps: name, ms per step,
    share of the step."""
    from torch.profiler import ProfilerActivity, profile

    with stepper.active(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            stepper.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [(e.key, e.self_cpu_time_total / 2e3, e.self_cpu_time_total / total) for e in events[:rows]]


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--batch", type=int, default=None, help="tuples per step (default 128; quick 8)")
    p.add_argument("--width", type=int, default=None, help="ResNet base channels (default 16; quick 4)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help="the first is the reference of the ratio column")
    p.add_argument("--profile", action="store_true", help="print each variant's most expensive operators")
    args = p.parse_args()
    width = args.width or (4 if args.quick else 16)
    batch, hidden, reps = image_step_sizes(args, 5)
    device, default_threads = setup_cpu(args, "cpu_image_step.py times the CPU step (polymnist_step.py --device cuda times a GPU)")
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", batch {batch}, width {width}, MLP hidden {hidden}, reps {reps}")
    data = list(random_images((batch, 5, 3 * 28 * 28), args.seed).unbind(1))
    steppers = {name: build_stepper(name, data, width, hidden, args.seed) for name in args.variants}
    times = interleaved({n: (s.active, s.step) for n, s in steppers.items()}, reps, inner=1, warmup=2,
                        device=device)
    results = step_summary(times, args.variants)
    rows = []
    for name in args.variants:
        arch, bf16, subsets, latent, construction = VARIANTS[name]
        r = results[name]
        r |= {"speedup": 1 / r["ratio"], "arch": arch, "bf16": bf16, "subset_posteriors": subsets,
              "latent_dim": latent, "construction": construction, "loss": steppers[name].last_loss,
              **EXTRA.get(name, {})}
        rows.append([name, f"{r['ms_median']:.0f}", f"{r['ms_q1']:.0f}-{r['ms_q3']:.0f}", f"{r['speedup']:.2f}x"])
    print(markdown_table(["variant", "ms/step (median)", "IQR", f"speed-up ratio vs {args.variants[0]}"], rows))
    if args.profile:
        for name, stepper in steppers.items():
            ops = top_operators(stepper, 8)
            results[name]["top_operators"] = [{"op": o, "ms_per_step": ms, "share": s} for o, ms, s in ops]
            print(f"\n{name}: operators with the largest self time (ms per step, share)")
            print(markdown_table(["operator", "ms/step", "share"], [[o, f"{ms:.1f}", f"{s:.0%}"] for o, ms, s in ops]))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"variants": results, "settings": {"batch": batch, "width": width, "hidden": list(hidden),
                                                      "reps": reps}})


if __name__ == "__main__":
    main()
