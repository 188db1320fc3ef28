"""The experimental NN-MRF prior against the GMRF prior on the copula benchmark.

Both models use the GMRF guide and the same networks; the NN-MRF's prior has neural unary and
pairwise potentials, trained with the log-partition gradient estimated from persistent HMC
chains (:class:`~pyro_mcvae.models.NeuralMRFPrior`). The copula benchmark's metrics, tables and
figures, plus the HMC diagnostics (ArviZ R-hat, bulk and tail ESS per coordinate, ESS and lag-1
autocorrelation of the chains' energy, divergences, ``mixing_ok``) and the time per step in
``table.md``, and a trace plot of the NN-MRF's chains (``OUT/nnmrf_trace.png``:
``--trace-transitions`` recorded transitions after a fresh warm-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .base import option, register_experiment
from .copula import MODELS, CopulaConfig, CopulaExperiment
from .runner import build_seeded, restore

__all__ = ["NNMRFConfig", "NNMRFExperiment", "diagnostics_table"]


@dataclass
class NNMRFConfig(CopulaConfig):
    model: list[str] = option(["gmrf", "nnmrf"], "models to run", choices=[*MODELS, "all"])
    out: str = option("results/nn-mrf", "output directory (runs resume there)")
    trace_transitions: int = option(300, "recorded HMC transitions of the trace plot (after a fresh warm-up)")


class NNMRFExperiment(CopulaExperiment):
    name = "nnmrf"
    description = __doc__.split("\n\n")[0]
    Config = NNMRFConfig
    config_file = None
    all_models = ("gmrf", "nnmrf")

    def table(self, results, data) -> str:
        return super().table(results, data) + "\n" + diagnostics_table(results)

    def figures(self, results, data, config, out: Path) -> list[str]:
        paths = super().figures(results, data, config, out)
        if "nnmrf" in results:
            paths.append(self.trace_plot(config, data, out))
        return paths

    def trace_plot(self, config, data, out: Path) -> str:
        """Reload the seed-0 NN-MRF, run its prior chains past a fresh warm-up and draw them."""
        seed = self.seeds(config)[0]
        model = restore(build_seeded(self, config, data, "nnmrf", seed), self.run_dir(config, "nnmrf", seed),
                        config.device)
        hmc = model.prior._sampler()
        with torch.enable_grad():
            hmc.step(hmc.warmup + max(config.trace_transitions, 4))
        path = hmc.trace_plot(out / "nnmrf_trace.png")
        print(f"chains of the trained prior (seed {seed}): {hmc.diagnostics()}; trace plot {path}")
        return str(path)


def diagnostics_table(results: dict) -> str:
    """HMC health of each MCMC-trained prior at the end of training, one row per run."""
    rows = ["| model | seed | ms/step | max R-hat | min bulk ESS | min tail ESS | energy ESS | energy lag-1 "
            "| divergences | acc. rate | mixing ok |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for r in runs:
            d = r.get("prior_chain_diagnostics")
            cells = ([f"{d['max_rhat']:.3f}", f"{d['min_ess_bulk']:.0f}", f"{d['min_ess_tail']:.0f}",
                      f"{d['ess_bulk_energy']:.0f}", f"{d['lag1_autocorr_energy']:.2f}",
                      str(d["divergences"]), f"{d['acceptance_rate']:.2f}", str(d["mixing_ok"])] if d else ["-"] * 8)
            rows.append(f"| {name} | {r['seed']} | {r['ms_per_step']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


register_experiment(NNMRFExperiment())
