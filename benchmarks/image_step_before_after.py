"""The ``cpu`` preset's PolyMNIST GMRF step of this checkout against the same step of an earlier
revision, interleaved in one process (issue 30: the image step against its floor).

The earlier revision's package is loaded under another name from a checkout of it
(``git worktree add /tmp/before REV``, as ``step_before_after.py`` does); both build the preset's
GMRF (MLPs (512, 512), latent 16 per modality, every modality given alone at every step, the
standardised prior) through their own ``build_polymnist_model``, the earlier model gets this
checkout's initial weights, and each steps with its own package's objective (``objective_for``,
``TraceMeanField_ELBO`` inside), Pyro's Adam, validation off, on the same random tuples
``(batch, 5, 3 * 28 * 28)``.

    git worktree add /tmp/before REV
    .venv/bin/python benchmarks/image_step_before_after.py --before /tmp/before [--latent 16]
        [--reps N] [--threads N] [--json PATH]
"""

from __future__ import annotations

import contextlib
import importlib

import pyro
import torch
from pyro.infer import SVI

from _common import (  # noqa: E402
    image_step_sizes, interleaved, make_parser, markdown_table, print_header, random_images, setup_cpu, step_summary,
    write_json,
)
from step_before_after import load_before  # noqa: E402

BENCHMARK = "image_step_before_after"


class PackageStepper:
    """One package's preset GMRF, its own objective and optimiser, its own parameter store."""

    def __init__(self, package: str, data, latent: int, hidden, state=None):
        polymnist = importlib.import_module(f"{package}.experiments.polymnist")
        objectives = importlib.import_module(f"{package}.infer.objectives")
        run = polymnist.PolyMNISTRun(model="gmrf", arch="mlp", hidden=list(hidden), subset_posteriors=0,
                                     subset_max_size=1, subset_singles=True, latent_dim=latent,
                                     prior_form="standardized", prior_init_shared=min(8, latent))
        self.model = polymnist.build_polymnist_model(run)
        if state is not None:
            self.model.load_state_dict(state)
        objective = objectives.objective_for(self.model, "meanfield")
        self.svi = SVI(self.model.model, self.model.guide, pyro.optim.Adam({"lr": 1e-3}),
                       loss=objective.loss, loss_and_grads=objective.loss_and_grads)
        self.data, self.store, self.last_loss = data, {"params": {}, "constraints": {}}, float("nan")

    @contextlib.contextmanager
    def active(self):
        with pyro.get_param_store().scope(self.store), pyro.validation_enabled(False):
            yield

    def step(self):
        self.last_loss = self.svi.step(self.data, beta=1.0)


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--before", required=True, help="a checkout of the earlier revision")
    p.add_argument("--batch", type=int, default=None, help="tuples per step (default 128; quick 8)")
    p.add_argument("--latent", type=int, default=16, help="latent size per modality (the preset: 16)")
    args = p.parse_args()
    batch, hidden, reps = image_step_sizes(args, 7)
    device, default_threads = setup_cpu(args, "image_step_before_after.py times the CPU step")
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", batch {batch}, MLP hidden {hidden}, latent {args.latent}, reps {reps}")
    load_before(args.before)
    data = list(random_images((batch, 5, 3 * 28 * 28), args.seed).unbind(1))
    torch.manual_seed(args.seed)
    after = PackageStepper("pyro_mcvae", data, args.latent, hidden)
    before = PackageStepper("pyro_mcvae_before", data, args.latent, hidden, after.model.state_dict())
    steppers = {"this checkout": after, "before": before}
    # The same weights and data: the first losses agree up to the draws' order of evaluation.
    times = interleaved({n: (s.active, s.step) for n, s in steppers.items()}, reps, inner=1, warmup=2,
                        device=device)
    names = list(steppers)
    results = step_summary(times, names)
    rows = [[n, f"{results[n]['ms_median']:.0f}", f"{results[n]['ms_q1']:.0f}-{results[n]['ms_q3']:.0f}",
             f"{1 / results[n]['ratio']:.2f}x"] for n in names]
    print(markdown_table(["step", "ms/step (median)", "IQR", "speed-up vs this checkout"], rows))
    print(f"before / this checkout: {results['before']['ms_median'] / results['this checkout']['ms_median']:.2f}x")
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"steps": results, "settings": {"batch": batch, "hidden": list(hidden), "latent": args.latent,
                                                   "reps": reps, "before": args.before}})


if __name__ == "__main__":
    main()
