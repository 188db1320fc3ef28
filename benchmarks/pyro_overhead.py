"""Pyro's overhead: an SVI step of the GMRF MCVAE against a hand-written PyTorch step.

Both compute the same objective for the same modules: the negative ELBO with the analytic KL
(``TraceMeanField_ELBO``), i.e. ``-sum_n [log p(x_n | z_n) - beta * KL(q(z | x_n) || p(z))]``
with ``z_n`` a reparameterised draw from ``model.guide.posterior(xs)``. The hand-written step calls
the modules directly (``guide.posterior``, ``decoder``, ``likelihoods``, ``prior``,
``torch.distributions.kl_divergence``), then ``loss.backward()`` and one ``torch.optim.Adam`` step.
The Pyro step is ``SVI(model.model, model.guide, pyro.optim.Adam, MeanFieldELBO()).step`` (Pyro's
``TraceMeanField_ELBO`` with the latent sites scaled by beta).

Before timing, both start from identical weights and the same RNG seed, and the script asserts
(and prints) that their first losses and gradients agree. Both alternatives then run interleaved
in one process (warm-up first, order rotated each repetition).

    .venv/bin/python benchmarks/pyro_overhead.py [--quick] [--json PATH] [--device cpu|cuda]
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pyro
import torch
from pyro.infer import SVI

from pyro_mcvae.infer.objectives import MeanFieldELBO  # TraceMeanField_ELBO with beta
from torch.distributions import kl_divergence

from _common import (  # benchmarks/ is on sys.path when run as a script
    BATCH, CONFIGS, NUM_COMPONENTS, interleaved, make_batches, make_parser, markdown_table,
    print_header, quartiles, setup, write_json,
)
from pyro_mcvae.models import MCVAE

BENCHMARK = "pyro_overhead"

LR = 1e-3
BETA = 1.0


def hand_loss(model: MCVAE, x: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Negative ELBO with analytic KL, summed over the batch, from the modules alone."""
    xs = list(x.unbind(1))
    q = model.guide.posterior(xs)  # batch (B,), event (M*d,)
    z = q.rsample()
    params = model.decoder(model._decoder_input(z))
    log_lik = sum(lik(p).log_prob(xk) for lik, p, xk in zip(model.likelihoods, params, xs))  # (B,)
    kl = kl_divergence(q, model.prior().expand([x.shape[0]]))  # (B,)
    return -(log_lik - beta * kl).sum()


class PyroStepper:
    def __init__(self, model: MCVAE, batches):
        self.model, self.batches, self.i = model, batches, 0
        self.elbo = MeanFieldELBO()
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
    args = make_parser(__doc__).parse_args(argv)
    device, default_threads = setup(args)
    configs = ["copula"] if args.quick else ["copula", "large"]
    reps = args.reps or (3 if args.quick else 15)
    warmup = 2 if args.quick else 5
    inner = {"copula": 2 if args.quick else 10, "large": 3}

    info = print_header(BENCHMARK, args, device, default_threads)

    results, rows = [], []
    for name in configs:
        cfg = CONFIGS[name]
        print(f"\n## config {name}: GMRF MCVAE (prior='precision', guide='gmrf'), M={NUM_COMPONENTS}, "
              f"D={cfg['dim']}, latent d={cfg['latent']}, hidden {cfg['hidden']}, batch {BATCH}")
        batches = make_batches(cfg, args.seed, device)
        torch.manual_seed(args.seed)
        base = MCVAE.build([cfg["dim"]] * NUM_COMPONENTS, cfg["latent"], hidden=cfg["hidden"],
                           prior="precision").to(device)
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
        write_json(args.json, BENCHMARK, args, info, results)


if __name__ == "__main__":
    main()
