"""Training-step time of every model on PolyMNIST-sized networks, side by side in one run.

Every model is built as ``examples/polymnist.py`` builds it (ResNet encoders and decoders,
Laplace likelihoods, each method's latent size and objective) and steps on the same random
uint8 tuples ``(batch, M, 3, 28, 28)``; the models alternate step by step (``interleaved``), so
load on the machine affects them alike.

    .venv/bin/python benchmarks/polymnist_step.py [--quick] [--width 16] [--batch 64]
        [--device cuda] [--paper-latents] [--json PATH]

On a CPU the paper's networks (width 64) and latents (512 for MVAE/MMVAE/MoPoE) are slow; the
default is a narrow network (width 16) with the paper's latents; ``--quick`` shrinks both.
"""

from __future__ import annotations

import numpy as np
import torch

from _common import interleaved, make_parser, markdown_table, print_header, quartiles, setup, write_json  # noqa: E402
from scaling import Stepper  # noqa: E402
from pyro_mcvae.experiments.polymnist import MODELS, OBJECTIVE, PolyMNISTRun, build_polymnist_model
from pyro_mcvae.infer.train import make_elbo

BENCHMARK = "polymnist_step"


class ImageStepper(Stepper):
    """A :class:`scaling.Stepper` with the method's own objective and a float batch."""

    def __init__(self, model, data, elbo: str):
        super().__init__(model, data)
        objective = make_elbo(elbo)
        if hasattr(model.guide, "wrap_elbo"):
            objective = model.guide.wrap_elbo(objective)
        self.svi.loss, self.svi.loss_and_grads = objective.loss, objective.loss_and_grads


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--width", type=int, default=None, help="ResNet base channels (default 16; quick 4)")
    p.add_argument("--batch", type=int, default=None, help="tuples per step (default 64; quick 8)")
    p.add_argument("--modalities", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args()
    width = args.width or (4 if args.quick else 16)
    batch = args.batch or (8 if args.quick else 64)
    reps = args.reps or (2 if args.quick else 5)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", batch {batch}, width {width}, M {args.modalities}, reps {reps}")
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (batch, args.modalities, 3 * 28 * 28), generator=gen, dtype=torch.uint8)
    data = [x.float().div(255).to(device) for x in images.unbind(1)]
    steppers, sizes = {}, {}
    for name in args.models:
        run = PolyMNISTRun(model=name, width=width, quick=args.quick, num_modalities=args.modalities)
        torch.manual_seed(args.seed)
        model = build_polymnist_model(run).to(device)
        sizes[name] = sum(p.numel() for p in model.parameters())
        steppers[name] = ImageStepper(model, data, OBJECTIVE[name])
    times = interleaved({n: (s.active, s.step) for n, s in steppers.items()}, reps, inner=1, warmup=1,
                        device=device)
    base = float(np.median(times[args.models[0]]))
    rows, results = [], {}
    for name in args.models:
        q1, med, q3 = quartiles(times[name])
        results[name] = {"ms_median": med * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3, "parameters": sizes[name],
                         "ratio": med / base, "objective": OBJECTIVE[name]}
        rows.append([name, OBJECTIVE[name], f"{sizes[name] / 1e6:.2f} M", f"{med * 1e3:.0f}",
                     f"{q1 * 1e3:.0f}-{q3 * 1e3:.0f}", f"{med / base:.2f}x"])
    print(markdown_table(["model", "objective", "parameters", "ms/step (median)", "IQR",
                          f"ratio vs {args.models[0]}"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"models": results, "settings": {"width": width, "batch": batch, "reps": reps,
                                                    "modalities": args.modalities}})


if __name__ == "__main__":
    main()
