"""The GMRF training step of this checkout against the same step of an earlier revision, and each
against the independent-Gaussian step, interleaved in one process (issue 30 item 3).

The earlier revision's package is loaded under another name from a checkout of it
(``git worktree add /tmp/before REV``), and its GMRF model gets this checkout's initial weights.
Both run the trainer's fused step of ``floor.py`` (``TrainStep``: ``TraceMeanField_ELBO``, one
fused Adam, validation off): only the models' own code (latent laws, assembly, KL) differs.
Models: ``step_time.py``'s copula size (M = 4, D = 2, d = 2, MLPs (64, 64)) and large size
(D = 64, d = 16, MLPs (256, 256)), batch 256.

    git worktree add /tmp/before REV
    .venv/bin/python benchmarks/step_before_after.py --before /tmp/before [--sizes copula large]
        [--reps N] [--threads N] [--pieces] [--profile] [--json PATH]

Prints ms/step (median, IQR), the paired ratios GMRF / diagonal and after / before; with
``--pieces`` the latent-law pieces of each GMRF step timed alone (forward + backward); with
``--profile`` the top operators (self CPU time) of each GMRF step under ``torch.profiler``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # before torch: quiet the profiler's C++ logging

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import (  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
    CONFIGS, NUM_COMPONENTS, interleaved, make_parser, markdown_table, print_header, quartiles, setup,
    write_json,
)
from floor import TrainStep, build  # noqa: E402

BENCHMARK = "step_before_after"
BEFORE = "pyro_mcvae_before"
INNER = {"copula": 10, "large": 3}


def load_before(root: str):
    """The package of the checkout at ``root``, imported as ``pyro_mcvae_before`` (its modules
    import one another relatively, so none of this checkout's code is mixed in)."""
    path = os.path.join(os.path.abspath(root), "pyro_mcvae")
    spec = importlib.util.spec_from_file_location(BEFORE, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    if spec is None:
        raise SystemExit(f"error: --before {root}: no pyro_mcvae package there")
    module = importlib.util.module_from_spec(spec)
    sys.modules[BEFORE] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{BEFORE}.models")


def steps_of(size: str, before_models, seed: int) -> dict:
    """``{alternative: TrainStep}``: the GMRF of this checkout and of the earlier one (same weights,
    batches and settings) and the diagonal model of this checkout."""
    model, batches, config = build(f"{size}-gmrf", seed, quick=False)
    cfg = CONFIGS[size]
    torch.manual_seed(seed)
    earlier = before_models.build_model("gmrf", [cfg["dim"]] * NUM_COMPONENTS, hidden=cfg["hidden"],
                                        block_dim=cfg["latent"])
    earlier.load_state_dict(model.state_dict())
    diagonal, _, _ = build(f"{size}-diagonal", seed, quick=False)
    return {"gmrf (this checkout)": TrainStep(model, batches, config),
            "gmrf (before)": TrainStep(earlier, batches, config),
            "diagonal": TrainStep(diagonal, batches, config)}


def pieces(model, gmrf_cls, xs: list[torch.Tensor], seed: int) -> dict:
    """Forward + backward of the GMRF step's latent-law pieces, each alternative containing the one
    before it (their differences are the pieces): the posterior's assembly, then its factor and
    draw, then the prior and the analytic KL, then the log-densities Pyro also evaluates (the
    latent site's ``log_prob`` under the prior and the guide, unused by the analytic KL). The
    inputs are the encoders' and the global network's outputs (plus noise, so that the couplings
    are not all zero as at initialisation), as leaves."""
    from torch.distributions import kl_divergence

    g = model.guide
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loc0, var0 = g.encoder(xs)
        off0 = g.global_net(xs)
        off0 = off0 + 0.1 * torch.randn(off0.shape, generator=gen)
    loc, var, off = (t.detach().clone().requires_grad_(True) for t in (loc0, var0, off0))
    kw = dict(eps=g.eps, delta=g.delta, mode=g.mode, graph=g.graph, validate=False)
    batch = loc.shape[0]

    def posterior():
        return gmrf_cls.from_blocks(loc, var, off, **kw)

    def assembly():
        posterior().covariance_matrix.sum().backward()

    def draw():
        posterior().rsample().sum().backward()

    def prior_kl():
        q = posterior()
        (q.rsample().sum() + kl_divergence(q, model.prior().expand([batch])).sum()).backward()

    def unused_log_probs():
        q, p = posterior(), model.prior().expand([batch])
        z = q.rsample()
        (z.sum() + kl_divergence(q, p).sum()).backward()
        with torch.no_grad():
            q.log_prob(z), p.log_prob(z)

    def network():
        g.global_net(xs).sum().backward()

    return {"global network": network, "assembly": assembly, "+ factor and draw": draw,
            "+ prior and KL": prior_kl, "+ unused log-densities": unused_log_probs}


def profile(step: TrainStep, steps: int, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with step.active():
        for _ in range(2):
            step.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step.step()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:top]]


def main(argv=None) -> None:
    p = make_parser(__doc__)
    p.add_argument("--before", required=True, metavar="DIR", help="root of a checkout of the earlier revision")
    p.add_argument("--sizes", nargs="+", default=["copula", "large"], choices=list(CONFIGS))
    p.add_argument("--profile", action="store_true", help="also profile each GMRF step (torch.profiler)")
    p.add_argument("--pieces", action="store_true",
                   help="also time the latent-law pieces of each GMRF step (forward + backward, cumulative)")
    args = p.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("error: step_before_after.py measures the CPU step; run it with --device cpu")
    before_models = load_before(args.before)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads, extra=f", before: {args.before}",
                        load_note=" (other processes compete for the {cpu_count} cores)")
    reps = args.reps or (3 if args.quick else 9)
    results = {}
    for size in args.sizes:
        steps = steps_of(size, before_models, args.seed)
        times = interleaved({n: (s.active, s.step) for n, s in steps.items()}, reps,
                            inner=1 if args.quick else INNER[size], warmup=2, device=device)
        t = {n: np.asarray(v) for n, v in times.items()}
        rows, out = [], {"alternatives": {}, "paired": {}}
        for name, v in t.items():
            q1, med, q3 = quartiles(v * 1e3)
            out["alternatives"][name] = {"ms_median": med, "ms_q1": q1, "ms_q3": q3, "ms_all": list(v * 1e3)}
            rows.append([name, f"{med:.2f}", f"{q1:.2f}-{q3:.2f}"])
        pairs = {"gmrf / diagonal (this checkout)": ("gmrf (this checkout)", "diagonal"),
                 "gmrf / diagonal (before)": ("gmrf (before)", "diagonal"),
                 "gmrf this checkout / before": ("gmrf (this checkout)", "gmrf (before)")}
        for label, (a, b) in pairs.items():
            out["paired"][label] = list(quartiles(t[a] / t[b]))
        print(f"\n## {size}: M = {NUM_COMPONENTS}, {CONFIGS[size]}, batch 256; {reps} interleaved repetitions x "
              f"{1 if args.quick else INNER[size]} steps\n")
        print(markdown_table(["step", "ms/step (median)", "IQR (ms)"], rows))
        print()
        print(markdown_table(["paired ratio", "median", "IQR"],
                             [[k, f"{v[1]:.2f}x", f"{v[0]:.2f}-{v[2]:.2f}"] for k, v in out["paired"].items()]))
        if args.pieces:
            from contextlib import nullcontext

            gmrf_classes = {"this checkout": importlib.import_module("pyro_mcvae.distributions").GMRF,
                            "before": importlib.import_module(f"{BEFORE}.distributions").GMRF}
            alts = {}
            for label, cls in gmrf_classes.items():
                step = steps[f"gmrf ({label})"]
                for piece, fn in pieces(step.model, cls, step.batches[0], args.seed).items():
                    alts[f"{piece} ({label})"] = (nullcontext, fn)
            piece_times = interleaved(alts, reps, inner=1 if args.quick else INNER[size], warmup=2, device=device)
            out["pieces_ms"] = {k: float(np.median(v)) * 1e3 for k, v in piece_times.items()}
            for label in gmrf_classes:  # the pieces' gradients must not reach a later step
                steps[f"gmrf ({label})"].model.zero_grad(set_to_none=True)
            print(f"\nLatent-law pieces, forward + backward, each containing the one before "
                  f"({reps} interleaved repetitions; whole step for scale)\n")
            rows = []
            names = list(dict.fromkeys(k.rsplit(" (", 1)[0] for k in alts))
            for piece in names:
                rows.append([piece] + [f"{out['pieces_ms'][f'{piece} ({label})']:.2f}" for label in gmrf_classes])
            rows.append(["whole step"] + [f"{out['alternatives'][f'gmrf ({label})']['ms_median']:.2f}"
                                          for label in gmrf_classes])
            print(markdown_table(["piece", "ms, this checkout", "ms, before"], rows))
        if args.profile:
            for name in ("gmrf (before)", "gmrf (this checkout)"):
                prof = out.setdefault("profile", {})[name] = profile(steps[name], 2 if args.quick else 5)
                print(f"\ntorch.profiler, {name}: top operators by self CPU time\n")
                print(markdown_table(["operator", "self ms/step", "share", "calls/step"],
                                     [[r["op"], f"{r['self_ms_per_step']:.2f}", f"{100 * r['share']:.1f}%",
                                       f"{r['calls_per_step']:.0f}"] for r in prof]))
        results[size] = out
    if args.json:
        write_json(args.json, BENCHMARK, args, info, results)


if __name__ == "__main__":
    main()
