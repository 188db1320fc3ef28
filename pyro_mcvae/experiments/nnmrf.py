"""The experimental NN-MRF prior against the GMRF prior on the copula benchmark.

Both models use the GMRF guide and the same networks; the NN-MRF's prior has neural unary and
pairwise potentials, trained with the log-partition gradient estimated from persistent HMC
chains (:class:`~pyro_mcvae.models.NeuralMRFPrior`). The copula benchmark's metrics, tables and
figures, plus the HMC diagnostics (ArviZ R-hat, bulk and tail ESS per coordinate, ESS and lag-1
autocorrelation of the chains' energy, divergences, ``mixing_ok``) at the end of training and
after ``--chain-transitions`` more with the parameters fixed, and the time per step in
``table.md``. The fixed-parameter chains are saved as ArviZ netCDF in each run folder
(``OUT/nnmrf/seed<S>/prior_chains.nc``; ``--chains-every N``: also during training), and ArviZ
draws their trace, rank and energy plots (``OUT/nnmrf_chains_{trace,rank,energy}.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import option, register_experiment
from .copula import MODELS, CopulaConfig, CopulaExperiment

__all__ = ["NNMRFConfig", "NNMRFExperiment", "chain_figures", "diagnostics_table"]


@dataclass
class NNMRFConfig(CopulaConfig):
    model: list[str] = option(["gmrf", "nnmrf"], f"models to run ({', '.join(MODELS)}; all: gmrf and nnmrf; or any "
                                                      "registered method)")
    out: str = option("results/nn-mrf", "output directory (runs resume there)")


class NNMRFExperiment(CopulaExperiment):
    name = "nnmrf"
    description = __doc__.split("\n\n")[0]
    Config = NNMRFConfig
    config_file = None
    all_models = ("gmrf", "nnmrf")

    def table(self, results, data) -> str:
        return super().table(results, data) + "\n" + diagnostics_table(results)

    def figures(self, results, data, config, out: Path) -> list[str]:
        return super().figures(results, data, config, out) + chain_figures(results, out)


def chain_figures(results: dict, out: Path) -> list[str]:
    """ArviZ trace, rank and energy plots (``OUT/<model>_chains_{trace,rank,energy}.png``) of the
    first seed's saved prior chains, for every model whose runs saved them."""
    from ..plots import arviz_chain_figures

    paths = []
    for name, runs in results.items():
        if runs and runs[0].get("prior_chains"):
            paths += [str(p) for p in arviz_chain_figures(runs[0]["prior_chains"], out / f"{name}_chains")]
    return paths


def diagnostics_table(results: dict) -> str:
    """HMC health of each MCMC-trained prior, one row per run and moment: at the end of training
    (the kept draws span the last training steps, a moving target) and after the fixed-parameter
    transitions. ESS per 1000 draws pools all chains (100 is a relative efficiency of 0.1)."""
    rows = ["| model | seed | chains x draws | when | max R-hat | R-hat energy | min bulk ESS / 1000 | energy ESS / 1000 "
            "| energy lag-1 | divergences | acc. rate | mixing ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for r in runs:
            for when, key in (("end of training", "prior_chain_diagnostics"),
                              (f"{r.get('prior_chain_transitions', 0)} more, parameters fixed",
                               "prior_chain_diagnostics_fixed")):
                d = r.get(key)
                if not d:
                    continue
                per = 1000.0 / max(d["chains"] * d["draws_per_chain"], 1)
                cells = [f"{d['chains']} x {d['draws_per_chain']}", when, f"{d['max_rhat']:.3f}",
                         f"{d['rhat_energy']:.3f}", f"{d['min_ess_bulk'] * per:.0f}", f"{d['ess_bulk_energy'] * per:.0f}",
                         f"{d['lag1_autocorr_energy']:.2f}", str(d["divergences"]), f"{d['acceptance_rate']:.2f}",
                         str(d["mixing_ok"])]
                rows.append(f"| {name} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


register_experiment(NNMRFExperiment())
