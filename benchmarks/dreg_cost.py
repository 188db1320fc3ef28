"""Cost of the corrected DReG estimator: ms per training step of MMVAE and MMVAE+ at the copula
benchmark's sizes (M = 4 components of 2 coordinates, latent 3, MLP (64, 64), batch 256, K = 4)
with the plain IWAE gradient and with DReG, interleaved in one run.

    python benchmarks/dreg_cost.py                       # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/dreg_cost.py   # another revision

Run it on two revisions back to back on a quiet machine to compare estimators; the ratio
DReG / IWAE within one run is the number to compare (it cancels the machine's speed).
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import torch

from pyro_mcvae import MCVAE
from pyro_mcvae.data.copula import make_copula_splits

try:  # the objectives' module (after the redesign)
    from pyro_mcvae.infer.objectives import objective_for

    def objective(model, kind):
        return objective_for(model, kind, 4)
except ImportError:  # earlier revisions
    from pyro_mcvae.infer.train import make_elbo

    def objective(model, kind):
        return make_elbo(kind, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per alternative and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = torch.as_tensor(make_copula_splits(2048, 16, seed=0).train, dtype=torch.float32)
    batches = [data[i:i + 256] for i in range(0, 2048, 256)]
    runs = {}
    for name, extra in (("mmvae", {}), ("mmvaeplus", {"private_dim": 1})):
        for kind in ("iwae", "dreg"):
            pyro.set_rng_seed(0)
            pyro.clear_param_store()
            model = MCVAE.build([2] * 4, 3, hidden=(64, 64), guide=name, **extra)
            obj = objective(model, kind)  # earlier revisions' objectives were not Pyro ELBOs: pass the methods
            svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), loss=obj.loss,
                                 loss_and_grads=obj.loss_and_grads)
            runs[(name, kind)] = (svi, [])
    for _ in range(args.rounds):  # interleaved: each alternative sees the same machine state
        for (name, kind), (svi, times) in runs.items():
            for b in batches[:2]:
                svi.step(b, beta=1.0)  # warm-up of this round
            t0 = time.perf_counter()
            for i in range(args.steps):
                svi.step(batches[i % len(batches)], beta=1.0)
            times.append(1000 * (time.perf_counter() - t0) / args.steps)
    out = {}
    for (name, kind), (_, times) in runs.items():
        out[f"{name}/{kind}"] = sorted(times)[len(times) // 2]
    for name in ("mmvae", "mmvaeplus"):
        ratio = out[f"{name}/dreg"] / out[f"{name}/iwae"]
        print(f"{name}: iwae {out[f'{name}/iwae']:.1f} ms/step, dreg {out[f'{name}/dreg']:.1f} ms/step, "
              f"dreg/iwae {ratio:.2f}")
        out[f"{name}/ratio"] = ratio
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out | {"torch": torch.__version__, "threads": args.threads}, f, indent=1)


if __name__ == "__main__":
    main()
