"""Time of one SVI step: the GMRF MCVAE against the independent-Gaussian ablation.

Both models share the network architecture (``MCVAE.build``); the GMRF model adds the global
off-diagonal network, the block SPD assembly, a full-covariance posterior and a GMRF prior. All
alternatives of one configuration run interleaved in the same process (warm-up first, the order
rotated every repetition), each with its own Pyro parameter store and optimiser.

    .venv/bin/python benchmarks/step_time.py [--quick] [--json PATH] [--device cpu|cuda]

Prints markdown tables: ms/step (median and interquartile range over repetitions) with the
ratio GMRF / diagonal, a breakdown of where the GMRF step spends its time (forward + backward of
each piece, timed alone) and, unless ``--quick``, the top operators from ``torch.profiler``.
"""

from __future__ import annotations

import contextlib
import copy
import os

# Quiet the profiler's C++ logging (it reports a harmless "gpuGetDeviceCount failed" on CPU-only
# machines); must be set before torch is imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI  # noqa: E402
from torch.distributions import kl_divergence  # noqa: E402

from _common import (  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
    BATCH, CONFIGS, NUM_COMPONENTS, interleaved, make_batches, make_parser, markdown_table,
    print_header, quartiles, setup, sync, validation, write_json,
)
from pyro_mcvae.covariance import (  # noqa: E402
    assemble_block_covariance, mirror_upper_blocks, spectral_norm,
)
from pyro_mcvae.distributions import GMRF  # noqa: E402
from pyro_mcvae.infer.objectives import make_objective  # noqa: E402
from pyro_mcvae.infer.train import TrainConfig  # noqa: E402
from pyro_mcvae.models import MCVAE  # noqa: E402

BENCHMARK = "step_time"

MODELS = {"gmrf": dict(prior="precision", guide="gmrf"), "diagonal": dict(guide="diagonal")}
ELBOS = {"trace": "Trace_ELBO", "meanfield": "TraceMeanField_ELBO"}
# The breakdown and the profile follow the step that ``fit`` runs: TraceMeanField_ELBO with
# ``fit``'s default validation setting.
FIT_VALIDATE = TrainConfig().validate


def build(cfg: dict, kind: str, seed: int, device) -> MCVAE:
    torch.manual_seed(seed)
    return MCVAE.build([cfg["dim"]] * NUM_COMPONENTS, cfg["latent"], hidden=cfg["hidden"], **MODELS[kind]).to(device)


class SVIStepper:
    """One model + guide + optimiser with its own Pyro parameter store."""

    def __init__(self, model: MCVAE, elbo: str, batches, validate: bool):
        self.model, self.batches, self.validate = model, batches, validate
        self.svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), make_objective(elbo))
        self.store = {"params": {}, "constraints": {}}
        self.i = 0
        self.last_loss = float("nan")

    @contextlib.contextmanager
    def active(self):
        with pyro.get_param_store().scope(self.store), validation(self.validate):
            yield

    def step(self):
        self.last_loss = self.svi.step(self.batches[self.i % len(self.batches)])
        self.i += 1


def run_steps(config_name, cfg, args, device):
    batches = make_batches(cfg, args.seed, device)
    variants = [(elbo, kind, True) for elbo in ELBOS for kind in MODELS]
    variants += [("meanfield", kind, False) for kind in MODELS]
    steppers = {}
    for elbo, kind, val in variants:
        steppers[(elbo, kind, val)] = SVIStepper(build(cfg, kind, args.seed, device), elbo, batches, val)
    alts = {key: (s.active, s.step) for key, s in steppers.items()}
    reps, inner, warmup = args.reps, args.inner[config_name], args.warmup
    times = interleaved(alts, reps, inner, warmup, device)
    results = []
    for elbo, kind, val in variants:
        q1, med, q3 = quartiles(times[(elbo, kind, val)])
        base = times[(elbo, "diagonal", val)]
        paired = np.asarray(times[(elbo, kind, val)]) / np.asarray(base)
        pq1, pmed, pq3 = quartiles(paired)
        results.append({
            "config": config_name, **cfg, "num_components": NUM_COMPONENTS, "batch": BATCH,
            "elbo": ELBOS[elbo], "model": kind, "validation": val,
            "ms_median": med * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3,
            "ratio_vs_diagonal": med / float(np.median(base)),
            "paired_ratio_q1": pq1, "paired_ratio_median": pmed, "paired_ratio_q3": pq3,
            "reps": reps, "steps_per_rep": inner, "warmup_steps": warmup,
            "final_loss": steppers[(elbo, kind, val)].last_loss,
            "ms_all": [t * 1e3 for t in times[(elbo, kind, val)]],
        })
    return results, steppers


def run_breakdown(config_name, cfg, args, device, stepper: SVIStepper):
    """Forward + backward of the pieces of one GMRF (TraceMeanField) step, each timed alone.

    Each piece runs the package's code for that part of the step (``GMRFGuide.posterior``,
    ``GMRFPrior.forward``, ``MCVAE.model``), under the stepper's validation setting.
    """
    gm = copy.deepcopy(stepper.model)  # own parameters, so no gradients leak into the SVI run
    torch.manual_seed(args.seed)
    dg = build(cfg, "diagonal", args.seed, device)
    x = stepper.batches[0]
    xs = list(x.unbind(1))
    g = gm.guide
    b = x.shape[0]
    with torch.no_grad():
        loc0, var0 = g.encoder(xs)
        off0 = g.global_net(xs)
        cov0 = assemble_block_covariance(var0, off0, eps=g.eps, delta=g.delta, mode=g.mode,
                                         graph=g.graph, validate=False)
        dloc0, dvar0 = dg.guide.encoder(xs)
    m, d = gm.num_components, gm.latent_dim

    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    def encoders():
        loc, var = g.encoder(xs)
        (loc.sum() + var.sum()).backward()

    def global_net():
        g.global_net(xs).sum().backward()

    var_l, off_l = leaf(var0), leaf(off0)

    def assembly():
        assemble_block_covariance(var_l, off_l, eps=g.eps, delta=g.delta, mode=g.mode,
                                  graph=g.graph, validate=False).sum().backward()

    upper_rows, upper_cols = torch.triu_indices(m, m, 1, device=device)

    def spectral_norms():
        # As _blockwise_row_sums: only the M(M-1)/2 distinct blocks above the diagonal are normed.
        t = mirror_upper_blocks(off_l, g.graph)
        spectral_norm(t[..., upper_rows, upper_cols, :, :]).sum().backward()

    loc_l, cov_l = leaf(loc0), leaf(cov0)

    def gmrf_posterior():
        # As GMRF.from_blocks: SPD by construction, so built without argument validation.
        return GMRF(loc_l, covariance_matrix=cov_l, num_components=m, component_dim=d,
                    validate_args=False)

    def gmrf_q():
        gmrf_posterior().rsample().sum().backward()

    def gmrf_kl():
        # Dispatches to the registered kl_divergence(GMRF, GMRF), as TraceMeanField_ELBO does;
        # builds q again, so its Cholesky factorisation is counted here too.
        kl_divergence(gmrf_posterior(), gm.prior().expand([b])).sum().backward()

    dloc_l, dvar_l = leaf(dloc0), leaf(dvar0)

    def diag_posterior():
        # As DiagonalGaussianGuide.posterior.
        return pyro.distributions.Normal(dloc_l.flatten(-2), dvar_l.sqrt().flatten(-2)).to_event(1)

    def diag_q():
        diag_posterior().rsample().sum().backward()

    def diag_kl():
        kl_divergence(diag_posterior(), dg.prior().expand([b])).sum().backward()

    z_l = leaf(torch.randn(b, m * d, device=device))

    def decoder_lik():
        params = gm.decoder(gm._decoder_input(z_l))
        sum(lik(p).log_prob(xk) for lik, p, xk in zip(gm.likelihoods, params, xs)).sum().backward()

    def same_validation():
        return validation(stepper.validate)

    pieces = {
        "encoders (shared)": (same_validation, encoders),
        "decoders + likelihoods (shared)": (same_validation, decoder_lik),
        "global off-diagonal net": (same_validation, global_net),
        "block assembly (assemble_block_covariance)": (same_validation, assembly),
        "spectral norms alone (part of the assembly)": (same_validation, spectral_norms),
        "q = GMRF(loc, cov) + rsample": (same_validation, gmrf_q),
        "q = Normal(loc, scale) + rsample": (same_validation, diag_q),
        "prior() + analytic KL, GMRF": (same_validation, gmrf_kl),
        "prior() + analytic KL, diagonal": (same_validation, diag_kl),
        "whole SVI step, GMRF": (stepper.active, stepper.step),
    }
    times = interleaved(pieces, args.breakdown_reps, args.inner[config_name], args.warmup, device)
    step_med = float(np.median(times["whole SVI step, GMRF"]))
    rows = []
    for name in pieces:
        q1, med, q3 = quartiles(times[name])
        rows.append({"config": config_name, "piece": name, "ms_median": med * 1e3,
                     "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3, "share_of_gmrf_step": med / step_med})
    return rows


def run_profile(cfg, args, device, stepper: SVIStepper, top: int = 10):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with stepper.active():
        for _ in range(2):
            stepper.step()
        with profile(activities=acts) as prof:
            for _ in range(args.profile_steps):
                stepper.step()
            sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(getattr(e, key) for e in events)
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {"op": e.key, "self_ms_per_step": getattr(e, key) / 1e3 / args.profile_steps,
         "share": getattr(e, key) / total, "calls_per_step": e.count / args.profile_steps}
        for e in events[:top]
    ]


def main(argv=None):
    args = make_parser(__doc__).parse_args(argv)
    device, default_threads = setup(args)
    configs = ["copula"] if args.quick else ["copula", "large"]
    if args.quick:
        args.reps, args.breakdown_reps, args.warmup = args.reps or 3, 3, 2
        args.inner = {"copula": 2, "large": 1}
    else:
        args.reps = args.reps or 15
        args.breakdown_reps, args.warmup = 11, 5
        args.inner = {"copula": 10, "large": 3}
    args.profile_steps = 5

    info = print_header(BENCHMARK, args, device, default_threads,
                        load_note=" (other processes compete for the {cpu_count} cores)")

    all_steps, all_breakdown, all_profile = [], [], {}
    for name in configs:
        cfg = CONFIGS[name]
        print(f"\n## config {name}: M={NUM_COMPONENTS}, D={cfg['dim']} per component, latent d={cfg['latent']}, "
              f"hidden {cfg['hidden']}, batch {BATCH}")
        steps, steppers = run_steps(name, cfg, args, device)
        all_steps += steps
        rows = []
        for r in steps:
            rows.append([
                r["elbo"], r["model"], "on" if r["validation"] else "off",
                f"{r['ms_median']:.2f}", f"{r['ms_q1']:.2f}-{r['ms_q3']:.2f}",
                f"{r['ratio_vs_diagonal']:.2f}x",
                f"{r['paired_ratio_q1']:.2f}-{r['paired_ratio_q3']:.2f}",
            ])
        print(f"\nSVI step time ({args.reps} interleaved repetitions x {args.inner[name]} steps, "
              f"after {args.warmup} warm-up steps)\n")
        print(markdown_table(["ELBO", "model", "validation", "ms/step (median)", "IQR (ms)",
                              "ratio GMRF/diagonal", "paired ratio IQR"], rows))

        gm_stepper = steppers[("meanfield", "gmrf", FIT_VALIDATE)]
        val_note = f"validation {'on' if FIT_VALIDATE else 'off'}, as in fit()"
        breakdown = run_breakdown(name, cfg, args, device, gm_stepper)
        all_breakdown += breakdown
        print(f"\nWhere the GMRF step goes (TraceMeanField_ELBO, {val_note}): forward + backward of each "
              f"piece alone, {args.breakdown_reps} interleaved repetitions\n")
        print(markdown_table(
            ["piece", "ms (median)", "IQR (ms)", "share of GMRF step"],
            [[r["piece"], f"{r['ms_median']:.2f}", f"{r['ms_q1']:.2f}-{r['ms_q3']:.2f}",
              f"{100 * r['share_of_gmrf_step']:.0f}%"] for r in breakdown]))

        if not args.quick:
            prof = run_profile(cfg, args, device, gm_stepper)
            all_profile[name] = prof
            print(f"\ntorch.profiler, GMRF step (TraceMeanField_ELBO, {val_note}), top operators by self time "
                  f"({args.profile_steps} steps)\n")
            print(markdown_table(["operator", "self ms/step", "share", "calls/step"],
                                 [[r["op"], f"{r['self_ms_per_step']:.2f}", f"{100 * r['share']:.1f}%",
                                   f"{r['calls_per_step']:.0f}"] for r in prof]))

    print("\nTarget: GMRF extras under 10% overhead (ratio <= 1.10x). "
          + "; ".join(f"{r['config']}/{r['elbo']}/validation {'on' if r['validation'] else 'off'}: "
                      f"{r['ratio_vs_diagonal']:.2f}x ({'met' if r['ratio_vs_diagonal'] <= 1.10 else 'not met'})"
                      for r in all_steps if r["model"] == "gmrf"))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"steps": all_steps, "breakdown": all_breakdown, "profile": all_profile})


if __name__ == "__main__":
    main()
