"""Training-step time of every model against the number of components M (the paper's cost analysis).

Every model uses the same per-component networks (MLP encoders and decoders, by default hidden
(64, 64) and components of size 2, as in the copula benchmark) on synthetic data; all models of
one M run interleaved in one process, each with its own parameter store and optimiser, so their
times are measured side by side.

    .venv/bin/python benchmarks/scaling.py [--quick] [--json PATH] [--plot PNG] [--max-m 10]
        [--dim 2] [--hidden 64 64] [--batch 128] [--mopoe-max-m 10]

``mopoe`` scores its 2^M - 1 draws by the whole mixture (the exact stratified ELBO, O(4^M)
density terms); ``mopoe-stratum`` scores each by its own subset's posterior (the Jensen bound,
O(2^M)).

The objective is the same for all (TraceMeanField_ELBO, one particle; MVAE adds its M + 1
sub-sampled terms, the mixture guides one draw per stratum), so the times reflect each guide's
structure. The paper predicts GMRF O(M^2 d^2 + M C), MMVAE and MMVAE+ O(M^2 C) (M strata, each
decoded by M decoders) and MoPoE O(2^M C) (2^M - 1 strata); the script prints the measured
growth next to those predictions.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyro
import torch
from pyro.infer import SVI

from _common import (  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
    interleaved, make_parser, markdown_table, print_header, quartiles, setup, validation, write_json,
)
from pyro_mcvae.infer.objectives import objective_for
from pyro_mcvae.models import MCVAE

BENCHMARK = "scaling"
DIM, HIDDEN = 2, (64, 64)
# name: MCVAE.build keyword arguments (GMRF: 2 latent coordinates per component; the baselines
# a shared latent of 3, as in the copula benchmark; MMVAE+ adds 1 private coordinate per component)
MODELS = {
    "gmrf": dict(guide="gmrf", prior="precision", latent_dim=2),
    "mvae": dict(guide="mvae", latent_dim=3),
    "mmvae": dict(guide="mmvae", latent_dim=3),
    "mopoe": dict(guide="mopoe", latent_dim=3),
    "mopoe-stratum": dict(guide="mopoe", latent_dim=3, density="stratum"),
    "mmvaeplus": dict(guide="mmvaeplus", latent_dim=3, private_dim=1),
}
PREDICTED = {"gmrf": "M^2 d^2 + M C", "mvae": "M C (M + 2 terms: M^2 C)", "mmvae": "M^2 C",
             "mopoe": "2^M C", "mopoe-stratum": "2^M C", "mmvaeplus": "M^2 C"}


class Stepper:
    """One model, its SVI objective and optimiser, with its own Pyro parameter store."""

    def __init__(self, model: MCVAE, data: torch.Tensor):
        self.model, self.data = model, data
        objective = objective_for(model, "meanfield")
        self.svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}),
                       loss=objective.loss, loss_and_grads=objective.loss_and_grads)
        self.store = {"params": {}, "constraints": {}}
        self.last_loss = float("nan")

    @contextlib.contextmanager
    def active(self):
        with pyro.get_param_store().scope(self.store), validation(False):
            yield

    def step(self):
        self.last_loss = self.svi.step(self.data, beta=1.0)


def growth(ms, times) -> dict:
    """Measured growth: the power-law exponent between the smallest and largest M, and the mean
    ratio t(M + 1) / t(M) over the last three steps in M (2 for an exponential 2^M)."""
    t = np.asarray(times)
    ms = ms[: len(t)]
    out = {"power_exponent": float(np.log(t[-1] / t[0]) / np.log(ms[-1] / ms[0])), "max_m": ms[-1]}
    out["last_step_ratio"] = float(np.mean(t[-3:] / t[-4:-1])) if len(t) >= 4 else float(t[-1] / t[-2])
    return out


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--min-m", type=int, default=2)
    p.add_argument("--max-m", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=DIM, help="size of every component")
    p.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN), help="hidden layers")
    p.add_argument("--mopoe-max-m", type=int, default=None,
                   help="largest M for the MoPoE models (their cost doubles or quadruples per component)")
    p.add_argument("--plot", metavar="PNG", help="save a plot of ms/step against M here")
    args = p.parse_args()
    if args.quick:
        args.max_m = min(args.max_m, 4)
    if not 2 <= args.min_m < args.max_m:
        p.error("need 2 <= --min-m < --max-m")
    reps = args.reps or (2 if args.quick else 5)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", batch {args.batch}, reps {reps}, component size {args.dim}, "
                              f"hidden {tuple(args.hidden)}")
    mopoe_max = args.mopoe_max_m or args.max_m
    ms = list(range(args.min_m, args.max_m + 1))
    results = []
    for m in ms:
        gen = torch.Generator().manual_seed(args.seed + m)
        data = torch.rand(args.batch, m, args.dim, generator=gen).to(device)
        steppers = {}
        for name, kwargs in MODELS.items():
            if name.startswith("mopoe") and m > mopoe_max:
                continue
            torch.manual_seed(args.seed)
            model = MCVAE.build([args.dim] * m, hidden=tuple(args.hidden), **kwargs).to(device)
            steppers[name] = Stepper(model, data)
        alts = {name: (s.active, s.step) for name, s in steppers.items()}
        times = interleaved(alts, reps, inner=1 if m > 7 else 3, warmup=1, device=device)
        base = float(np.median(times["gmrf"]))
        row = {"M": m}
        for name in steppers:
            q1, med, q3 = quartiles(times[name])
            row[name] = {"ms_median": med * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3,
                         "ratio_vs_gmrf": med / base, "final_loss": steppers[name].last_loss}
        results.append(row)
        print(f"M = {m}: " + ", ".join(f"{n} {row[n]['ms_median']:.1f} ms" for n in steppers), flush=True)

    def cell(r, n, key, fmt):
        return fmt.format(r[n][key]) if n in r else "-"

    others = [n for n in MODELS if n != "gmrf"]
    headers = ["M", *[f"{n} ms" for n in MODELS], *[f"{n} ratio vs gmrf" for n in others]]
    rows = [[r["M"], *[cell(r, n, "ms_median", "{:.1f}") for n in MODELS],
             *[cell(r, n, "ratio_vs_gmrf", "{:.2f}x") for n in others]] for r in results]
    print("\n" + markdown_table(headers, rows))
    fits = {n: growth(ms, [r[n]["ms_median"] for r in results if n in r]) for n in MODELS}
    print("\n" + markdown_table(
        ["model", "predicted", "power exponent over M (range)", "t(M+1)/t(M), last steps"],
        [[n, PREDICTED[n], f"{f['power_exponent']:.2f} ({ms[0]}..{f['max_m']})", f"{f['last_step_ratio']:.2f}"]
         for n, f in fits.items()]))
    if args.plot:
        from pyro_mcvae.plots import save_figure
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for n in MODELS:
            rs = [r for r in results if n in r]
            x = [r["M"] for r in rs]
            ax.plot(x, [r[n]["ms_median"] for r in rs], marker="o", label=f"{n} ({PREDICTED[n]})")
            ax.fill_between(x, [r[n]["ms_q1"] for r in rs], [r[n]["ms_q3"] for r in rs], alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("number of components M")
        ax.set_ylabel("ms per SVI step (median, IQR band)")
        ax.set_title(f"Training-step time against M (D = {args.dim}, hidden {tuple(args.hidden)}, "
                     f"batch {args.batch}, {info['cpu_count']} CPU cores)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        print(f"wrote {save_figure(fig, args.plot)}")
    if args.json:
        settings = {"dim": args.dim, "hidden": args.hidden, "batch": args.batch, "reps": reps}
        write_json(args.json, BENCHMARK, args, info, {"rows": results, "growth": fits,
                                                      "predicted": PREDICTED, "settings": settings})


if __name__ == "__main__":
    main()
