"""The experimental NN-MRF prior against the GMRF prior on the copula benchmark.

    python examples/nn_mrf.py                       # 1 seed, 200 epochs, both models
    python examples/nn_mrf.py --seeds 3 --out results/nn-mrf

Both models use the GMRF guide and the same networks; the NN-MRF's prior has neural unary and
pairwise potentials, trained with the log-partition gradient estimated from persistent HMC
chains (``pyro_mcvae.models.NeuralMRFPrior``). This runs the copula example
(``examples/copula.py``, same metrics, tables and figures) for ``--model gmrf nnmrf`` and then
prints the HMC diagnostics (ArviZ R-hat, bulk and tail ESS per coordinate, ESS and lag-1
autocorrelation of the chains' energy, divergences, ``mixing_ok``) and the time per step,
and draws a trace plot of the NN-MRF's chains (``OUT/nnmrf_trace.png``; ``--trace-transitions N``
recorded transitions after a fresh warm-up, default 300). Any other option is passed on to the
copula example.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import copula  # noqa: E402  (the sibling example script)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    if "--model" in argv:
        print("error: nn_mrf.py always runs --model gmrf nnmrf", file=sys.stderr)
        return 2
    if "--out" not in argv:
        argv += ["--out", "results/nn-mrf"]
    transitions = 300
    if "--trace-transitions" in argv:  # ours, not the copula example's
        i = argv.index("--trace-transitions")
        transitions = int(argv[i + 1])
        del argv[i : i + 2]
    args = copula.parse_args(["--model", "gmrf", "nnmrf", *argv])
    code = copula.main(["--model", "gmrf", "nnmrf", *argv])
    out = Path(args.out)
    record = json.loads((out / "results.json").read_text())
    print("\n| model | seed | ms/step | max R-hat | min bulk ESS | min tail ESS | energy ESS | energy lag-1 "
          "| divergences | acc. rate | mixing ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in record["results"].items():
        for r in runs:
            d = r.get("prior_chain_diagnostics")
            cells = ([f"{d['max_rhat']:.3f}", f"{d['min_ess_bulk']:.0f}", f"{d['min_ess_tail']:.0f}",
                      f"{d['ess_bulk_energy']:.0f}", f"{d['lag1_autocorr_energy']:.2f}",
                      str(d["divergences"]), f"{d['acceptance_rate']:.2f}", str(d["mixing_ok"])] if d else ["-"] * 8)
            print(f"| {name} | {r['seed']} | {r['ms_per_step']:.1f} | " + " | ".join(cells) + " |")
    trace_plot(args, out, transitions)
    return code


def trace_plot(args, out: Path, transitions: int = 300) -> None:
    """Reload the seed-0 NN-MRF, run its prior chains past a fresh warm-up and draw them."""
    import torch

    from pyro_mcvae import MCVAE
    from pyro_mcvae.infer import load_checkpoint, seed_everything

    seed_everything(0)
    model = MCVAE.build([2] * 4, args.latent_dim, hidden=tuple(args.hidden), prior="nnmrf")
    model.load_state_dict(load_checkpoint(out / "nnmrf" / "seed0" / "checkpoint.pt")["model"])
    hmc = model.prior._sampler()
    with torch.enable_grad():
        hmc.step(hmc.warmup + max(transitions, 4))
    path = hmc.trace_plot(out / "nnmrf_trace.png")
    print(f"chains of the trained prior (seed 0): {hmc.diagnostics()}; trace plot {path}")


if __name__ == "__main__":
    sys.exit(main())
