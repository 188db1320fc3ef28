"""Training-step time of every model on PolyMNIST-sized (or bicycle-assembly) networks, side by
side in one run.

Every model is built as ``examples/polymnist.py`` builds it (ResNet encoders and decoders,
Laplace likelihoods, each method's latent size and objective) and steps on the same random
tuples ``(batch, M, 3, 28, 28)``; the models alternate step by step (``interleaved``), so load
on the machine affects them alike. ``--dataset bikes`` builds them as ``examples/biked.py``
does instead (five 64x64 grayscale components, Bernoulli likelihood, GMRF latent 4 per
component; default width 8, the example's quick networks).

    .venv/bin/python benchmarks/polymnist_step.py [--dataset bikes] [--quick] [--width 16]
        [--batch 64] [--models gmrf mopoe ...] [--mopoe-strata every one] [--device cuda] [--json PATH]

On a CPU the paper's networks (width 64) are slow; the default is a narrow network (width 16)
with the paper's latents; ``--quick`` shrinks both.
"""

from __future__ import annotations

import torch

from _common import (  # noqa: E402
    interleaved, make_parser, markdown_table, print_header, random_images, setup, step_summary, write_json,
)
from scaling import Stepper  # noqa: E402
from pyro_mcvae.experiments.bikes import BikeRun, build_bike_model
from pyro_mcvae.experiments.polymnist import MODELS, PolyMNISTRun, build_polymnist_model
from pyro_mcvae.models import get_method
from pyro_mcvae.infer.objectives import SubsetELBO, objective_for

OBJECTIVE = {name: get_method(name).objective for name in MODELS}  # each method's own

BENCHMARK = "polymnist_step"


class ImageStepper(Stepper):
    """A :class:`scaling.Stepper` with the method's own objective and a float batch."""

    def __init__(self, model, data, elbo: str, encode_once: bool = True):
        super().__init__(model, data)
        objective = objective_for(model, elbo)
        if isinstance(objective, SubsetELBO):  # the subset-posterior terms
            objective.encode_once = encode_once
        self.svi.loss, self.svi.loss_and_grads = objective.loss, objective.loss_and_grads


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--dataset", choices=("polymnist", "bikes"), default="polymnist",
                   help="network sizes of examples/polymnist.py or of examples/biked.py")
    p.add_argument("--width", type=int, default=None,
                   help="ResNet base channels (default 16, bikes 8; quick 4)")
    p.add_argument("--batch", type=int, default=None, help="tuples per step (default 64; quick 8)")
    p.add_argument("--modalities", type=int, default=5, help="PolyMNIST modalities (bikes: always 5)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--mopoe-strata", nargs="+", choices=("every", "one"), default=None,
                   help="MoPoE-VAE's draws (examples/polymnist.py --mopoe-strata), one row each "
                        "(default: the preset's)")
    args = p.parse_args()
    bikes = args.dataset == "bikes"
    width = args.width or (4 if args.quick else 8 if bikes else 16)
    batch = args.batch or (8 if args.quick else 64)
    reps = args.reps or (2 if args.quick else 5)
    m, size = (5, 64 * 64) if bikes else (args.modalities, 3 * 28 * 28)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", {args.dataset}, batch {batch}, width {width}, M {m}, reps {reps}")
    gen = torch.Generator().manual_seed(args.seed)
    if bikes:  # sparse ink like real components: most pixels background
        images = (torch.rand(batch, m, size, generator=gen) < 0.1).float()
    else:
        images = random_images((batch, m, size), args.seed)
    data = [x.to(device) for x in images.unbind(1)]
    steppers, sizes, model_of = {}, {}, {}
    for model_name in args.models:
        variants = [None]
        if model_name == "mopoe" and args.mopoe_strata and not bikes:
            variants = args.mopoe_strata
        for strata in variants:
            name = model_name if strata is None else f"mopoe ({strata})"
            if bikes:
                build = lambda: build_bike_model(BikeRun(model=model_name, width=width))  # noqa: E731
            else:
                run = PolyMNISTRun(model=model_name, width=width, quick=args.quick, num_modalities=m,
                                   mopoe_strata=strata)
                build = lambda: build_polymnist_model(run)  # noqa: E731
            torch.manual_seed(args.seed)
            model = build().to(device)
            sizes[name], model_of[name] = sum(p.numel() for p in model.parameters()), model_name
            steppers[name] = ImageStepper(model, data, OBJECTIVE[model_name])
    names = list(steppers)
    times = interleaved({n: (s.active, s.step) for n, s in steppers.items()}, reps, inner=1, warmup=1,
                        device=device)
    results = step_summary(times, names)
    rows = []
    for name in names:
        objective = OBJECTIVE[model_of[name]]
        r = results[name] | {"parameters": sizes[name], "objective": objective}
        results[name] = r
        rows.append([name, objective, f"{sizes[name] / 1e6:.2f} M", f"{r['ms_median']:.0f}",
                     f"{r['ms_q1']:.0f}-{r['ms_q3']:.0f}", f"{r['ratio']:.2f}x"])
    print(markdown_table(["model", "objective", "parameters", "ms/step (median)", "IQR",
                          f"ratio vs {names[0]}"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"models": results, "settings": {"dataset": args.dataset, "width": width, "batch": batch,
                                                    "reps": reps, "modalities": m}})


if __name__ == "__main__":
    main()
