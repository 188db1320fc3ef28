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

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import shlex
import sys
import time

# Quiet the profiler's C++ logging (it reports a harmless "gpuGetDeviceCount failed" on CPU-only
# machines); must be set before torch is imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI  # noqa: E402
from torch.distributions import kl_divergence  # noqa: E402

from pyro_mcvae.covariance import assemble_block_covariance, mirror_upper_blocks  # noqa: E402
from pyro_mcvae.data.copula import make_copula_splits  # noqa: E402
from pyro_mcvae.distributions import GMRF  # noqa: E402
from pyro_mcvae.infer.train import make_elbo, seed_everything  # noqa: E402
from pyro_mcvae.models.mcvae import MCVAE  # noqa: E402

BENCHMARK = "step_time"

# name: (component size D, latent size d, hidden layers); M = 4 components, batch 256.
CONFIGS = {
    "copula": dict(dim=2, latent=2, hidden=(64, 64)),
    "large": dict(dim=64, latent=16, hidden=(256, 256)),
}
NUM_COMPONENTS = 4
BATCH = 256
NUM_BATCHES = 8  # distinct minibatches cycled through by every alternative
MODELS = {"gmrf": dict(prior="precision", guide="gmrf"), "diagonal": dict(prior="diagonal", guide="diagonal")}
ELBOS = {"trace": "Trace_ELBO", "meanfield": "TraceMeanField_ELBO"}


# -- shared helpers (each benchmark script is self-contained) -----------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda requested, but CUDA is not available here "
                 "(torch.cuda.is_available() is False)")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quartiles(values) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q1), float(med), float(q3)


def interleaved(alternatives: dict, reps: int, inner: int, warmup: int, device) -> dict:
    """Per-repetition seconds per call of each alternative.

    ``alternatives`` maps a name to ``(context, fn)``: ``context()`` returns a context manager
    entered around each timed block (not timed), ``fn()`` is one call. Every alternative is warmed
    up first; then each repetition runs every alternative ``inner`` times, in an order rotated by
    one each repetition so that no alternative always runs first.
    """
    names = list(alternatives)
    for name in names:
        ctx, fn = alternatives[name]
        with ctx():
            for _ in range(warmup):
                fn()
        sync(device)
    times = {name: [] for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            ctx, fn = alternatives[name]
            gc.collect()
            with ctx():
                sync(device)
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                sync(device)
                times[name].append((time.perf_counter() - start) / inner)
    return times


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "device": str(device),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pyro_validation": bool(pyro.infer.util.is_validation_enabled()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = list(os.getloadavg())
    return info


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, args, info, results) -> None:
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = list(os.getloadavg())
    payload = {
        "benchmark": BENCHMARK,
        "command": shlex.join([sys.executable, *sys.argv]),
        "seed": args.seed,
        "quick": args.quick,
        **info,
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")


@contextlib.contextmanager
def validation(flag: bool):
    old = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(flag)
    try:
        yield
    finally:
        pyro.enable_validation(old)


# -- this benchmark -------------------------------------------------------------------------
def make_batches(cfg: dict, seed: int, device) -> list[torch.Tensor]:
    data = make_copula_splits(
        n_train=BATCH * NUM_BATCHES, n_test=16, seed=seed,
        num_components=NUM_COMPONENTS, num_coordinates=cfg["dim"],
    ).train
    x = torch.from_numpy(data).to(device)  # (n, M, D) in [0, 1]
    return list(x.split(BATCH))


def build(cfg: dict, kind: str, seed: int, device) -> MCVAE:
    torch.manual_seed(seed)
    return MCVAE.build([cfg["dim"]] * NUM_COMPONENTS, cfg["latent"], cfg["hidden"], **MODELS[kind]).to(device)


class SVIStepper:
    """One model + guide + optimiser with its own Pyro parameter store."""

    def __init__(self, model: MCVAE, elbo: str, batches, validate: bool):
        self.model, self.batches, self.validate = model, batches, validate
        self.svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), make_elbo(elbo))
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


def run_steps(config_name, cfg, args, device, validation_off: bool):
    batches = make_batches(cfg, args.seed, device)
    variants = [(elbo, kind, True) for elbo in ELBOS for kind in MODELS]
    if validation_off:
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
    """Forward + backward of the pieces of one GMRF (TraceMeanField) step, each timed alone."""
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

    def spectral_norms():
        torch.linalg.matrix_norm(mirror_upper_blocks(off_l, g.graph), ord=2).sum().backward()

    loc_l, cov_l = leaf(loc0), leaf(cov0)

    def gmrf_q():
        q = GMRF(loc_l, covariance_matrix=cov_l, num_components=m, component_dim=d)
        q.rsample().sum().backward()

    def gmrf_kl():
        q = GMRF(loc_l, covariance_matrix=cov_l, num_components=m, component_dim=d)
        kl_divergence(q, gm.prior().expand([b])).sum().backward()

    dloc_l, dscale_l = leaf(dloc0.flatten(-2)), leaf(dvar0.sqrt().flatten(-2))

    def diag_q():
        q = pyro.distributions.Normal(dloc_l, dscale_l).to_event(1)
        q.rsample().sum().backward()

    def diag_kl():
        q = pyro.distributions.Normal(dloc_l, dscale_l).to_event(1)
        kl_divergence(q, dg.prior().expand([b])).sum().backward()

    z_l = leaf(torch.randn(b, m * d, device=device))

    def decoder_lik():
        params = gm.decoder(gm._blocks(z_l))
        sum(lik(p).log_prob(xk) for lik, p, xk in zip(gm.likelihoods, params, xs)).sum().backward()

    null = contextlib.nullcontext
    pieces = {
        "encoders (shared)": (null, encoders),
        "decoders + likelihoods (shared)": (null, decoder_lik),
        "global off-diagonal net": (null, global_net),
        "block assembly (assemble_block_covariance)": (null, assembly),
        "spectral norms alone (part of the assembly)": (null, spectral_norms),
        "q = GMRF(loc, cov) + rsample": (null, gmrf_q),
        "q = Normal(loc, scale) + rsample": (null, diag_q),
        "prior() + analytic KL, GMRF": (null, gmrf_kl),
        "prior() + analytic KL, diagonal": (null, diag_kl),
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke-test run (< 20 s)")
    p.add_argument("--json", metavar="PATH", help="write the numbers and the environment here")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="call torch.set_num_threads(N) first (default: leave torch's default)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per alternative")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    configs = ["copula"] if args.quick else ["copula", "large"]
    if args.quick:
        args.reps, args.breakdown_reps, args.warmup = args.reps or 3, 3, 2
        args.inner = {"copula": 2, "large": 1}
    else:
        args.reps = args.reps or 15
        args.breakdown_reps, args.warmup = 11, 5
        args.inner = {"copula": 10, "large": 3}
    args.profile_steps = 5

    info = machine_info(device)
    info["torch_default_num_threads"] = default_threads
    threads_note = (f"set by --threads; default {default_threads}" if args.threads
                    else "left at default")
    print(f"# benchmark: {BENCHMARK}")
    print(f"torch {info['torch']}, pyro {info['pyro']}, device {device} ({info.get('gpu', info['cpu'])}), "
          f"torch.get_num_threads() = {info['torch_num_threads']} "
          f"({threads_note}), seed {args.seed}, "
          f"pyro validation {'on' if info['pyro_validation'] else 'off'} by default")
    if "loadavg_start" in info:
        print(f"load average at start: {', '.join(f'{v:.2f}' for v in info['loadavg_start'])} "
              f"(other processes compete for the {info['cpu_count']} cores)")

    all_steps, all_breakdown, all_profile = [], [], {}
    for name in configs:
        cfg = CONFIGS[name]
        print(f"\n## config {name}: M={NUM_COMPONENTS}, D={cfg['dim']} per component, latent d={cfg['latent']}, "
              f"hidden {cfg['hidden']}, batch {BATCH}")
        steps, steppers = run_steps(name, cfg, args, device, validation_off=not args.quick)
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

        gm_stepper = steppers[("meanfield", "gmrf", True)]
        breakdown = run_breakdown(name, cfg, args, device, gm_stepper)
        all_breakdown += breakdown
        print(f"\nWhere the GMRF step goes (TraceMeanField_ELBO, validation on): forward + backward of each "
              f"piece alone, {args.breakdown_reps} interleaved repetitions\n")
        print(markdown_table(
            ["piece", "ms (median)", "IQR (ms)", "share of GMRF step"],
            [[r["piece"], f"{r['ms_median']:.2f}", f"{r['ms_q1']:.2f}-{r['ms_q3']:.2f}",
              f"{100 * r['share_of_gmrf_step']:.0f}%"] for r in breakdown]))

        if not args.quick:
            prof = run_profile(cfg, args, device, gm_stepper)
            all_profile[name] = prof
            print(f"\ntorch.profiler, GMRF step (TraceMeanField_ELBO), top operators by self time "
                  f"({args.profile_steps} steps)\n")
            print(markdown_table(["operator", "self ms/step", "share", "calls/step"],
                                 [[r["op"], f"{r['self_ms_per_step']:.2f}", f"{100 * r['share']:.1f}%",
                                   f"{r['calls_per_step']:.0f}"] for r in prof]))

    print("\nTarget: GMRF extras under 10% overhead (ratio <= 1.10x). "
          + "; ".join(f"{r['config']}/{r['elbo']}/validation {'on' if r['validation'] else 'off'}: "
                      f"{r['ratio_vs_diagonal']:.2f}x ({'met' if r['ratio_vs_diagonal'] <= 1.10 else 'not met'})"
                      for r in all_steps if r["model"] == "gmrf"))
    if args.json:
        write_json(args.json, args, info, {"steps": all_steps, "breakdown": all_breakdown,
                                           "profile": all_profile})


if __name__ == "__main__":
    main()
