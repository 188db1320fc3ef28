"""Pyro's overhead: an SVI step of the GMRF MCVAE against a hand-written PyTorch step.

Both compute the same objective for the same modules: the negative ELBO with the analytic KL
(``TraceMeanField_ELBO``), i.e. ``-sum_n [log p(x_n | z_n) - beta * KL(q(z | x_n) || p(z))]``
with ``z_n`` a reparameterised draw from ``model.guide.posterior(xs)``. The hand-written step calls
the modules directly (``guide.posterior``, ``decoder``, ``likelihoods``, ``prior``,
``torch.distributions.kl_divergence``), then ``loss.backward()`` and one ``torch.optim.Adam`` step.
The Pyro step is ``SVI(model.model, model.guide, pyro.optim.Adam, TraceMeanField_ELBO()).step``.

Before timing, both start from identical weights and the same RNG seed, and the script asserts
(and prints) that their first losses and gradients agree. Both alternatives then run interleaved
in one process (warm-up first, order rotated each repetition).

    .venv/bin/python benchmarks/pyro_overhead.py [--quick] [--json PATH] [--device cpu|cuda]
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

import numpy as np
import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_mcvae.data.copula import make_copula_splits
from pyro_mcvae.infer.train import seed_everything
from pyro_mcvae.models.mcvae import MCVAE

BENCHMARK = "pyro_overhead"

CONFIGS = {
    "copula": dict(dim=2, latent=2, hidden=(64, 64)),
    "large": dict(dim=64, latent=16, hidden=(256, 256)),
}
NUM_COMPONENTS = 4
BATCH = 256
NUM_BATCHES = 8
LR = 1e-3
BETA = 1.0


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
    """Per-repetition seconds per call of each alternative (``name -> (context, fn)``), warm-up
    first, order rotated by one each repetition."""
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


# -- this benchmark -------------------------------------------------------------------------
def make_batches(cfg: dict, seed: int, device) -> list[torch.Tensor]:
    data = make_copula_splits(
        n_train=BATCH * NUM_BATCHES, n_test=16, seed=seed,
        num_components=NUM_COMPONENTS, num_coordinates=cfg["dim"],
    ).train
    return list(torch.from_numpy(data).to(device).split(BATCH))


def hand_loss(model: MCVAE, x: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Negative ELBO with analytic KL, summed over the batch, from the modules alone."""
    xs = list(x.unbind(1))
    q = model.guide.posterior(xs)  # batch (B,), event (M*d,)
    z = q.rsample()
    params = model.decoder(model._blocks(z))
    log_lik = sum(lik(p).log_prob(xk) for lik, p, xk in zip(model.likelihoods, params, xs))  # (B,)
    kl = kl_divergence(q, model.prior().expand([x.shape[0]]))  # (B,)
    return -(log_lik - beta * kl).sum()


class PyroStepper:
    def __init__(self, model: MCVAE, batches):
        self.model, self.batches, self.i = model, batches, 0
        self.elbo = TraceMeanField_ELBO()
        self.svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": LR}), self.elbo)
        self.store = {"params": {}, "constraints": {}}

    def active(self):
        return pyro.get_param_store().scope(self.store)

    def step(self):
        loss = self.svi.step(self.batches[self.i % len(self.batches)], beta=BETA)
        self.i += 1
        return loss


class TorchStepper:
    def __init__(self, model: MCVAE, batches):
        self.model, self.batches, self.i = model, batches, 0
        self.optim = torch.optim.Adam(model.parameters(), lr=LR)

    def active(self):
        return contextlib.nullcontext()

    def step(self):
        self.optim.zero_grad(set_to_none=True)
        loss = hand_loss(self.model, self.batches[self.i % len(self.batches)])
        loss.backward()
        self.optim.step()
        self.i += 1
        return loss.item()


def check_same_objective(pyro_s: PyroStepper, torch_s: TorchStepper, seed: int) -> dict:
    """Same weights, same seed: the first losses and gradients of the two steps must agree."""
    x = pyro_s.batches[0]
    with pyro_s.active():
        pyro.set_rng_seed(seed)
        loss_p = pyro_s.elbo.loss_and_grads(pyro_s.model.model, pyro_s.model.guide, x, beta=BETA)
        grads_p = {n: p.grad.detach().clone() for n, p in pyro_s.model.named_parameters()
                   if p.grad is not None}
        for p in pyro_s.model.parameters():
            p.grad = None
    pyro.set_rng_seed(seed)
    loss_t = hand_loss(torch_s.model, x)
    loss_t.backward()
    grads_t = {n: p.grad.detach().clone() for n, p in torch_s.model.named_parameters()
               if p.grad is not None}
    for p in torch_s.model.parameters():
        p.grad = None
    loss_t = loss_t.item()
    rel_loss = abs(loss_p - loss_t) / max(abs(loss_t), 1e-12)
    if set(grads_p) != set(grads_t):
        raise AssertionError(f"different parameters received gradients: {set(grads_p) ^ set(grads_t)}")
    rel_grad = max(
        float((grads_p[n] - grads_t[n]).norm() / grads_t[n].norm().clamp_min(1e-12)) for n in grads_t
    )
    ok = rel_loss < 1e-5 and rel_grad < 1e-3
    print(f"same-objective check (seed {seed}, first batch, identical weights): "
          f"pyro loss {loss_p:.6f}, hand-written loss {loss_t:.6f}, relative difference "
          f"{rel_loss:.2e}; largest relative gradient difference over {len(grads_t)} tensors "
          f"{rel_grad:.2e} -> {'PASS' if ok else 'FAIL'}")
    assert ok, "the Pyro and hand-written steps do not compute the same objective"
    return {"pyro_loss": loss_p, "torch_loss": loss_t, "rel_loss_diff": rel_loss,
            "max_rel_grad_diff": rel_grad, "num_grad_tensors": len(grads_t)}


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
    reps = args.reps or (3 if args.quick else 15)
    warmup = 2 if args.quick else 5
    inner = {"copula": 2 if args.quick else 10, "large": 3}

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
        print(f"load average at start: {', '.join(f'{v:.2f}' for v in info['loadavg_start'])}")

    results, rows = [], []
    for name in configs:
        cfg = CONFIGS[name]
        print(f"\n## config {name}: GMRF MCVAE (prior='precision', guide='gmrf'), M={NUM_COMPONENTS}, "
              f"D={cfg['dim']}, latent d={cfg['latent']}, hidden {cfg['hidden']}, batch {BATCH}")
        batches = make_batches(cfg, args.seed, device)
        torch.manual_seed(args.seed)
        base = MCVAE.build([cfg["dim"]] * NUM_COMPONENTS, cfg["latent"], cfg["hidden"],
                           prior="precision", guide="gmrf").to(device)
        pyro_s = PyroStepper(copy.deepcopy(base), batches)
        torch_s = TorchStepper(copy.deepcopy(base), batches)
        check = check_same_objective(pyro_s, torch_s, args.seed)
        times = interleaved(
            {"pyro": (pyro_s.active, pyro_s.step), "torch": (torch_s.active, torch_s.step)},
            reps, inner[name], warmup, device,
        )
        pq1, pmed, pq3 = quartiles(times["pyro"])
        tq1, tmed, tq3 = quartiles(times["torch"])
        paired = quartiles(np.asarray(times["pyro"]) / np.asarray(times["torch"]))
        ratio = pmed / tmed
        results.append({
            "config": name, **cfg, "num_components": NUM_COMPONENTS, "batch": BATCH,
            "same_objective_check": check,
            "pyro_ms": {"q1": pq1 * 1e3, "median": pmed * 1e3, "q3": pq3 * 1e3},
            "torch_ms": {"q1": tq1 * 1e3, "median": tmed * 1e3, "q3": tq3 * 1e3},
            "ratio_pyro_over_torch": ratio,
            "paired_ratio": {"q1": paired[0], "median": paired[1], "q3": paired[2]},
            "reps": reps, "steps_per_rep": inner[name], "warmup_steps": warmup,
            "pyro_ms_all": [t * 1e3 for t in times["pyro"]],
            "torch_ms_all": [t * 1e3 for t in times["torch"]],
        })
        rows.append([name, f"{cfg['dim']}/{cfg['latent']}/{cfg['hidden']}",
                     f"{pmed * 1e3:.2f}", f"{pq1 * 1e3:.2f}-{pq3 * 1e3:.2f}",
                     f"{tmed * 1e3:.2f}", f"{tq1 * 1e3:.2f}-{tq3 * 1e3:.2f}",
                     f"{ratio:.2f}x", f"{paired[0]:.2f}-{paired[2]:.2f}",
                     f"{(pmed - tmed) * 1e3:+.2f}"])

    print(f"\nGMRF MCVAE step, TraceMeanField_ELBO via Pyro SVI vs hand-written PyTorch ({reps} "
          f"interleaved repetitions, after {warmup} warm-up steps)\n")
    print(markdown_table(["config", "D/d/hidden", "pyro ms/step", "pyro IQR", "torch ms/step",
                          "torch IQR", "ratio pyro/torch", "paired ratio IQR", "pyro extra ms"], rows))
    if args.json:
        write_json(args.json, args, info, results)


if __name__ == "__main__":
    main()
