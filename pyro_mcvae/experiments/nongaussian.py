"""Non-Gaussian dependence: the GMRF, ALMRF and NN-MRF MCVAEs on copulas no Gaussian law fits.

Data: :func:`~pyro_mcvae.data.make_nongaussian_splits` (the copula benchmark's ``U(0, 1)``
marginals and correlation pattern; ``--kind x``: the sign mixture of Gaussian copulas, zero
correlation and an X in every pair; ``--kind t``: the Student-t copula, ``--df 2``, heavy tail
dependence). The copula experiment with this data source: both generation protocols, joint W1
(unconditional and conditional on each single component) against the noise floor, plus the slice
W1 (:func:`~pyro_mcvae.metrics.slice_metrics`: the law of the other components where one
component lies in ``--window``, against a large true sample). Writes ``OUT/results.json``,
``OUT/table.md`` and the copula experiment's pairplots; runs live in ``OUT/<model>/seed<S>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..data import make_nongaussian_splits, nongaussian_population
from ..evaluate import evaluate_nongaussian, nongaussian_noise_floor
from .base import ModelSpec, incomplete_training_set, mean_std, option, register_experiment
from .copula import PROTOCOLS, CopulaConfig, CopulaExperiment

__all__ = ["NonGaussianConfig", "NonGaussianExperiment", "MODELS", "nongaussian_table"]

MODELS = {
    "gmrf": ModelSpec("gmrf", {"prior": "precision"}),
    "almrf": ModelSpec("almrf"),
    "nnmrf": ModelSpec("nnmrf"),
}


@dataclass
class NonGaussianConfig(CopulaConfig):
    model: list[str] = option(list(MODELS), "gmrf: GMRF prior; almrf: asymmetric Laplace MRF; nnmrf: neural "
                              "MRF prior (HMC, slow); all: the three; or any registered method")
    out: str = option("results/nongaussian", "output directory (runs resume there)")
    kind: str = option("x", "x: sign mixture of +-rho Gaussian copulas (zero correlation, X-shaped pairs); "
                            "t: Student-t copula (tail dependence)", choices=["x", "t"])
    rho: float = option(0.9, "magnitude of the copula correlations")
    df: float = option(2.0, "degrees of freedom of the t copula")
    window: list[float] = option([0.8, 0.95], "quantile levels lo hi of the conditioning component's slice")
    reference_n: int = option(20000, "true tuples the slices of the generated tuples are compared with")

    def check(self) -> None:
        super().check()
        if not (abs(self.rho) < 1 and self.df > 0):
            raise ValueError("--rho must lie in (-1, 1) and --df be > 0")
        if len(self.window) != 2 or not 0 <= self.window[0] < self.window[1] <= 1:
            raise ValueError(f"--window takes two quantile levels 0 <= lo < hi <= 1, got {self.window}")
        if self.reference_n < 2 or self.population_n < 2:
            raise ValueError("--reference-n and --population-n must be >= 2")


class NonGaussianExperiment(CopulaExperiment):
    name = "nongaussian"
    description = __doc__.split("\n\n")[0]
    Config = NonGaussianConfig
    config_file = None
    models = MODELS
    all_models = tuple(MODELS)

    def data(self, config):
        dataset = make_nongaussian_splits(config.kind, config.n_train, config.n_test, seed=config.data_seed,
                                          rho=config.rho, df=config.df)
        reference = nongaussian_population(dataset, config.reference_n)
        train, mask, missing = incomplete_training_set(dataset.train, config.missing_ratio, config.data_seed)
        return SimpleNamespace(train=train, train_mask=mask, missing=missing, test=dataset.test, dataset=dataset,
                               reference=reference,
                               floor=nongaussian_noise_floor(dataset, reference, config.population_n,
                                                             tuple(config.window)))

    def score(self, model, data, config, device: str, sample_likelihood: bool) -> dict:
        return evaluate_nongaussian(model, data.dataset, data.reference, device, config.population_n,
                                    sample_likelihood, tuple(config.window))

    def summary(self, config, data) -> dict:
        d = data.dataset
        return {"data": {"kind": d.kind, "n_train": config.n_train, "n_test": config.n_test, "seed": config.data_seed,
                         "rho": d.rho, "df": d.df, "components": d.num_components,
                         "reference_n": config.reference_n, "window": list(config.window)},
                "noise_floor": data.floor,
                "protocols": {"sample": "x ~ p(x | z)", "mean": "decoder mean"},
                "units": "W1 in data units (multiply by 1000 for the tables)"}

    def table(self, results, data) -> str:
        return ("\n".join(nongaussian_table(results, data.floor, protocol) for protocol in PROTOCOLS)
                + self.evaluation_tables(results, data))


def nongaussian_table(results: dict, floor: dict, protocol: str) -> str:
    """Markdown table of one generation protocol: joint W1, conditional W1 and slice W1 (x 1000),
    mean ± std over seeds, with the noise floor's row."""
    head = ("| model | uncond. W1 j=1 | uncond. W1 j=2 | cond. W1 mean | slice W1 j=1 | slice W1 j=2 | "
            "slice W1 mean | train s / seed |\n|---|---|---|---|---|---|---|---|\n")

    def slice_j(s, j):
        return np.mean([by_j[j] for by_j in s["slice"]["w1"].values()])

    rows = []
    for name, runs in results.items():
        scores = [r[protocol] for r in runs]
        columns = [[s["unconditional"]["joint_w1"][1] for s in scores], [s["unconditional"]["joint_w1"][2] for s in scores],
                   [s["conditional"]["joint_w1_mean"] for s in scores], [slice_j(s, 1) for s in scores],
                   [slice_j(s, 2) for s in scores], [s["slice"]["w1_mean"] for s in scores]]
        cells = [mean_std(1000 * np.array(v)) for v in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['train_seconds'] for r in runs]):.0f} |")
    f = [floor["joint_w1"][1], floor["joint_w1"][2], floor["joint_w1_mean"], slice_j(floor, 1), slice_j(floor, 2),
         floor["slice"]["w1_mean"]]
    rows.append("| noise floor (true vs true) | " + " | ".join(f"{1000 * v:.1f}" for v in f) + " | |")
    what = {"sample": "generated tuples drawn from the full generative model, x ~ p(x | z)",
            "mean": "generated tuples are the decoder means E[x | z]"}[protocol]
    lo, hi = floor["slice"]["window"]
    return (f"**Protocol `{protocol}`**: {what}.\n\n" + head + "\n".join(rows)
            + f"\n\nW1 x 1000 (lower is better), mean ± std over seeds; conditional: mean over the single "
              f"observed source components, against the test tuples (the floor's conditional column is its "
              f"joint W1); slice: the other components where one lies between its {lo:g} and {hi:g} "
              f"quantiles, generated against a large true sample, mean over the given components.\n")


register_experiment(NonGaussianExperiment())
