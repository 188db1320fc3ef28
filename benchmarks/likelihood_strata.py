"""The evaluation's importance-sampled log-likelihoods of the mixture guides: every stratum drawn
against only the strata present in the batch, side by side.

Each model is built as ``examples/polymnist.py --model NAME`` builds it on the cpu preset (MLPs
(512, 512), five modalities of 2,352 pixels), untrained: the cost does not depend on the weights.
One call is :func:`pyro_mcvae.evaluate.likelihood_scores` on ``--tuples`` random tuples with
``K = --samples`` (the joint, the five marginals and the five ratio conditionals, the set the
PolyMNIST evaluation estimates on 200 test tuples). ``all strata``: the guide draws and decodes
every stratum of its mixture (31 for MoPoE-VAE, 5 for MMVAE) whatever is given, the absent ones
at weight zero; ``present strata``: only the strata present for some tuple of the batch (a
single given modality: 1 of 31, 1 of 5). The two alternate call by call.

    .venv/bin/python benchmarks/likelihood_strata.py [--quick] [--threads 1] [--reps 3]
        [--models mopoe mmvae] [--tuples 8] [--samples 100] [--json PATH]
"""

from __future__ import annotations

import contextlib

import torch

from _common import interleaved, make_parser, markdown_table, print_header, setup, step_summary, write_json  # noqa: E402
from pyro_mcvae.evaluate import likelihood_scores
from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model

BENCHMARK = "likelihood_strata"


@contextlib.contextmanager
def pruning(guide, flag: bool):
    """The guide's ``prune_strata`` set to ``flag`` inside the block."""
    guide.prune_strata = flag
    try:
        yield
    finally:
        del guide.prune_strata  # back to the class's value


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["mopoe", "mmvae"], choices=["mopoe", "mmvae"])
    parser.add_argument("--tuples", type=int, default=8)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args(argv)
    if args.quick:
        args.tuples, args.samples, args.reps = 2, 4, args.reps or 1
    reps = args.reps or 3
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", {args.tuples} tuples, K = {args.samples}")
    results, rows = {}, []
    for name in args.models:
        model = build_polymnist_model(PolyMNISTRun(model=name, preset="cpu")).to(device).eval()
        gen = torch.Generator().manual_seed(args.seed)
        xs = [torch.rand(args.tuples, 2352, generator=gen).to(device) for _ in range(model.num_components)]

        def call():
            likelihood_scores(model, xs, args.samples, seed=1, batch_size=args.tuples, chunk=50)

        alternatives = {"all strata": (lambda: pruning(model.guide, False), call),
                        "present strata": (lambda: pruning(model.guide, True), call)}
        times = interleaved(alternatives, reps, inner=1, warmup=0 if args.quick else 1, device=device)
        summary = step_summary(times, list(alternatives))
        results[name] = {"strata": model.guide.num_strata, **summary}
        for alt, s in summary.items():
            rows.append([name, alt, f"{s['ms_median'] / 1e3:.2f}", f"{s['ms_q1'] / 1e3:.2f}-{s['ms_q3'] / 1e3:.2f}",
                         f"{1 / s['ratio']:.2f}x"])
    print(markdown_table(["model", "draws", "s per call (median)", "quartiles", "speed-up ratio"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info, results)
    return results


if __name__ == "__main__":
    main()
