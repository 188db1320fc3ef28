"""The floor of a training step: each model's full training step beside the same networks' own
cost in plain torch, side by side in one process (issue 30).

For every measured model, four alternatives run interleaved (warm-up first, the order rotated
by one each repetition), each on its own copy of the same initial weights and the same batches:

- ``step (pyro adam)``: the trainer's step with Pyro's per-parameter ``ClippedAdam``
  (``TrainConfig(optimizer="pyro")``, the default before 2026-12);
- ``step (fused adam)``: the trainer's step as it is now, one fused Adam over all parameters
  (:class:`pyro_mcvae.infer.optim.FusedClippedAdam`): the model's objective (its registry default
  or the preset's, with the GMRF's subset-posterior terms), Pyro tracing model and guide;
- ``floor (networks once)``: no Pyro and no latent law: the encoders on the batch, one
  reparameterised diagonal draw per component from their outputs (``loc + sqrt(var) * eps``),
  the decoders on it, the likelihoods' log-density summed, backward, and one fused
  ``torch.optim.Adam`` step over the model's parameters (those with a gradient: encoders,
  decoders, likelihood scales);
- ``floor (as the objective runs them)``: the same, with the encoders and decoders run on as
  many rows as the training step runs them (counted by hooks during a step: the GMRF's subset
  term decodes a second copy of the batch, MMVAE+ decodes every component's latent with every
  decoder, K importance samples multiply the rows): the networks' cost the objective itself
  asks for.

Not in either floor: the GMRF's global off-diagonal network (it is part of the structured
latent's cost, issue 30 item 3), priors, KL terms, the latent laws' linear algebra, Pyro's trace.
The ratio we track is the fused step over each floor (median over median, and the
per-repetition paired ratio's quartiles).

Models: ``cpu-gmrf`` and ``cpu-mmvaeplus`` (the PolyMNIST ``cpu`` preset: MLPs (512, 512), five
modalities, batch 128, each model's objective; random images), and the copula-size models of
``step_time.py`` (``copula-gmrf``, ``copula-diagonal``: M = 4, D = 2, d = 2, MLPs (64, 64), batch
256; ``large-gmrf``, ``large-diagonal``: D = 64, d = 16, MLPs (256, 256)) with
``TraceMeanField_ELBO``.

    .venv/bin/python benchmarks/floor.py [--quick] [--models cpu-gmrf ...] [--reps N] [--threads N]
        [--json PATH]
"""

from __future__ import annotations

import contextlib
import copy
from functools import partial

import numpy as np
import pyro
import torch
from pyro.infer import SVI

from _common import (  # benchmarks/ is on sys.path when run as a script
    CONFIGS, NUM_COMPONENTS, interleaved, make_batches, make_parser, markdown_table, print_header, quartiles,
    random_images, setup, validation, write_json,
)
from pyro_mcvae.infer.config import TrainConfig, build_objective
from pyro_mcvae.infer.optim import svi_step
from pyro_mcvae.infer.trainer import build_optimizer
from pyro_mcvae.models import build_model, get_method

BENCHMARK = "floor"
MODELS = ["cpu-gmrf", "cpu-mmvaeplus", "copula-gmrf", "copula-diagonal", "large-gmrf", "large-diagonal"]
ALTERNATIVES = ["step (pyro adam)", "step (fused adam)", "floor (networks once)", "floor (as the objective runs them)"]
INNER = {"cpu": 1, "copula": 10, "large": 3}  # steps per timed block


def build(name: str, seed: int, quick: bool):
    """``(model, batches, config)``: the model as its benchmark builds it, a few batches (lists
    of ``M`` tensors), and the training settings whose objective and optimiser it steps with."""
    size, kind = name.split("-", 1)
    torch.manual_seed(seed)
    if size == "cpu":
        from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model

        run = PolyMNISTRun(model=kind, preset="cpu", device="cpu", hidden=[32, 32] if quick else None)
        model = build_polymnist_model(run)
        batch = 8 if quick else run.batch_size
        images = random_images((2, batch, 5, 3 * 28 * 28), seed)
        batches = [list(b.unbind(1)) for b in images]
        config = TrainConfig(lr=run.lr, elbo=run.elbo or get_method(kind).objective, num_particles=run.particles,
                             beta=run.resolved_beta(), seed=seed)
        return model, batches, config
    cfg = CONFIGS[size]
    # step_time.py's models: the GMRF (precision prior) and the independent-Gaussian ablation.
    model = build_model(kind, [cfg["dim"]] * NUM_COMPONENTS, hidden=cfg["hidden"],
                        **{get_method(kind).latent_field: cfg["latent"]})
    batches = [list(b.unbind(1)) for b in make_batches(cfg, seed, "cpu")]
    return model, batches, TrainConfig(elbo="meanfield", seed=seed)


class TrainStep:
    """The trainer's step (its objective and optimiser, :func:`build_optimizer`) on ``model``,
    with its own Pyro parameter store; ``rows`` counts the encoders' and decoders' input rows."""

    def __init__(self, model, batches, config: TrainConfig):
        self.model, self.batches, self.i = model, batches, 0
        self.beta = float(config.beta)
        objective = build_objective(model, config)
        optim = build_optimizer(config, total_steps=10**6)
        if config.optimizer == "fused":
            self._step = partial(svi_step, model.model, model.guide, objective, optim)
        else:
            self._step = SVI(model.model, model.guide, optim, loss=objective.loss,
                             loss_and_grads=objective.loss_and_grads).step
        self.store = {"params": {}, "constraints": {}}

    @contextlib.contextmanager
    def active(self):
        with pyro.get_param_store().scope(self.store), validation(False):
            yield

    def step(self):
        self._step(self.batches[self.i % len(self.batches)], beta=self.beta)
        self.i += 1

    def network_rows(self) -> tuple[float, float]:
        """Rows through the encoders and the decoders in one step, per datum of the batch."""
        seen = {"encoder": 0, "decoder": 0}

        def count(kind, last_dims):
            def hook(module, args):
                x = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
                seen[kind] += x.shape[:-last_dims].numel()
            return hook

        handles = [self.model.guide.encoder.register_forward_pre_hook(count("encoder", 1)),
                   self.model.decoder.register_forward_pre_hook(count("decoder", 2))]
        try:
            with self.active():
                self.step()
        finally:
            for h in handles:
                h.remove()
        batch = self.batches[0][0].shape[0]
        return seen["encoder"] / batch, seen["decoder"] / batch


class NetworksFloor:
    """The model's encoders and decoders in plain torch (module docstring): encoders on
    ``enc_copies`` copies of the batch, decoders on ``dec_copies`` diagonal draws per datum, the
    likelihoods' log-density, backward and one fused Adam step."""

    def __init__(self, model, batches, lr: float, enc_copies: float = 1.0, dec_copies: float = 1.0):
        self.model, self.batches, self.i = model, batches, 0
        self.enc_copies, self.dec_copies = max(1, round(enc_copies)), max(1, round(dec_copies))
        params = list(model.parameters())
        self.optim = torch.optim.Adam(params, lr=lr, fused=all(p.device.type in ("cpu", "cuda") for p in params))

    def active(self):
        return contextlib.nullcontext()

    def step(self):
        xs = self.batches[self.i % len(self.batches)]
        self.i += 1
        batch = xs[0].shape[0]
        loc, var = self.model.guide.encoder([x.repeat(self.enc_copies, 1) for x in xs])  # (e B, M, size)
        rows = torch.arange(self.dec_copies * batch) % loc.shape[0]
        z = loc[rows] + var[rows].sqrt() * torch.randn_like(loc[rows])  # (c B, M, size)
        out = self.model.decoder(z)
        target = [x[rows % batch] for x in xs]
        loss = -sum(lik(p).log_prob(x).sum() for lik, p, x in zip(self.model.likelihoods, out, target))
        loss.backward()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)


def measure(name: str, args) -> dict:
    model, batches, config = build(name, args.seed, args.quick)
    steps = {"step (pyro adam)": TrainStep(copy.deepcopy(model), batches, TrainConfig(
        **{**config.__dict__, "optimizer": "pyro"})),
             "step (fused adam)": TrainStep(copy.deepcopy(model), batches, config)}
    enc_rows, dec_rows = steps["step (fused adam)"].network_rows()
    steps["floor (networks once)"] = NetworksFloor(copy.deepcopy(model), batches, config.lr)
    steps["floor (as the objective runs them)"] = NetworksFloor(copy.deepcopy(model), batches, config.lr,
                                                                enc_rows, dec_rows)
    reps = args.reps or (2 if args.quick else 7)
    times = interleaved({n: (s.active, s.step) for n, s in steps.items()}, reps, inner=INNER[name.split("-")[0]],
                        warmup=2, device=torch.device("cpu"))
    fused = np.asarray(times["step (fused adam)"])
    out = {"encoder_rows_per_datum": enc_rows, "decoder_rows_per_datum": dec_rows, "reps": reps,
           "parameters": sum(p.numel() for p in model.parameters()), "elbo": config.elbo,
           "num_particles": config.num_particles, "batch": batches[0][0].shape[0], "alternatives": {}}
    for alt in ALTERNATIVES:
        t = np.asarray(times[alt])
        q1, med, q3 = quartiles(t * 1e3)
        paired = quartiles(fused / t)
        out["alternatives"][alt] = {"ms_median": med, "ms_q1": q1, "ms_q3": q3,
                                    "fused_step_over_this": float(np.median(fused) / np.median(t)),
                                    "paired_ratio_q1_median_q3": list(paired)}
    floors = {"once": "floor (networks once)", "objective": "floor (as the objective runs them)"}
    out["ratios"] = {f"{step} step / floor {k}": float(np.median(times[f"step ({step} adam)"]) / np.median(times[alt]))
                     for step in ("pyro", "fused") for k, alt in floors.items()}
    return out


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--models", nargs="+", default=None, choices=MODELS,
                   help="default: all (quick: the copula-size GMRF and independent models, and the cpu preset's "
                        "at MLPs (32, 32), batch 8)")
    args = p.parse_args()
    if args.device != "cpu":
        raise SystemExit("error: floor.py measures the CPU step; run it with --device cpu")
    models = args.models or (["cpu-gmrf", "copula-gmrf", "copula-diagonal"] if args.quick else MODELS)
    device, default_threads = setup(args)
    info = print_header(BENCHMARK, args, device, default_threads, extra=f", models {' '.join(models)}")
    results, rows = {}, []
    for name in models:
        r = results[name] = measure(name, args)
        for alt, a in r["alternatives"].items():
            q1, med, q3 = a["paired_ratio_q1_median_q3"]
            rows.append([name, alt, f"{a['ms_median']:.2f}", f"{a['ms_q1']:.2f}-{a['ms_q3']:.2f}",
                         f"{a['fused_step_over_this']:.2f}x", f"{q1:.2f}-{q3:.2f}"])
        print(f"{name}: {r['parameters'] / 1e6:.2f} M parameters, batch {r['batch']}, {r['elbo']} "
              f"(K = {r['num_particles']}); per datum, {r['encoder_rows_per_datum']:g} encoder and "
              f"{r['decoder_rows_per_datum']:g} decoder rows per step; "
              + ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items()), flush=True)
    print(markdown_table(["model", "alternative", "ms/step (median)", "IQR", "ratio: fused step / this",
                          "paired ratio IQR"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info, {"models": results})


if __name__ == "__main__":
    main()
