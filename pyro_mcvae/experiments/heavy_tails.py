"""Heavy-tailed, skewed multi-component data: the GMRF MCVAE against the ALMRF.

Data: :func:`~pyro_mcvae.data.make_heavy_tail_splits` (M = 4 components of 2 coordinates, a
skewed Student-t per coordinate, per-component affine maps). Both models get the same networks,
likelihood, optimiser and epochs; they differ in the latent law (Gaussian or asymmetric Laplace,
both with the block structure). Writes ``OUT/results.json``, ``OUT/table.md`` and
``OUT/quantiles.png`` (QQ plots of every coordinate); runs live in ``OUT/<model>/seed<S>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..data import make_heavy_tail_splits
from ..evaluate import TAIL_LEVELS, evaluate_heavy_tails, heavy_tail_noise_floor, heavy_tail_population
from ..infer import seed_everything
from ..plots import save_figure
from .base import ModelSpec, incomplete_training_set, mean_std, option, register_experiment
from .copula import VectorConfig, VectorExperiment, likelihood_table, sampler_table
from .files import VectorFiles
from .runner import EVAL_SEED_OFFSET, resolve_device

__all__ = ["HeavyTailConfig", "HeavyTailExperiment", "MODELS", "qq_figure"]

MODELS = {"gmrf": ModelSpec("gmrf"), "almrf": ModelSpec("almrf")}


@dataclass
class HeavyTailConfig(VectorConfig):
    model: list[str] = option(list(MODELS), "models to run (gmrf, almrf; all: both; or any registered method)")
    out: str = option("results/heavy-tails", "output directory (runs resume there)")
    df: float = option(3.0, "degrees of freedom of the data (> 2)")
    skew: float = option(1.0, "skewness of the data")
    population_n: int = option(20000, "generated tuples for the quantiles")
    reference_n: int = option(200000, "true tuples whose quantiles are the reference (the test set's are too noisy)")

    def check(self) -> None:
        super().check()
        if not self.df > 2:
            raise ValueError("--df must be > 2")


class HeavyTailExperiment(VectorExperiment):
    name = "heavy_tails"
    description = __doc__.split("\n\n")[0]
    Config = HeavyTailConfig
    config_file = VectorFiles("make_heavy_tail_splits", "evaluate_heavy_tails", uses_reference=True)
    models = MODELS

    def data(self, config):
        dataset = make_heavy_tail_splits(config.n_train, config.n_test, seed=config.data_seed, df=config.df,
                                         skew=config.skew)
        reference = heavy_tail_population(dataset, config.reference_n, 20_000)
        train, mask, missing = incomplete_training_set(dataset.train, config.missing_ratio, config.data_seed)
        return SimpleNamespace(train=train, train_mask=mask, missing=missing, test=dataset.test, dataset=dataset,
                               reference=reference,
                               floor=heavy_tail_noise_floor(dataset, reference, config.population_n))

    def method_fields(self, config, spec) -> dict:
        return {"hidden": tuple(config.hidden)}

    def evaluate(self, model, data, config, seed) -> dict:
        seed_everything(seed + EVAL_SEED_OFFSET)
        scores = evaluate_heavy_tails(model, data.dataset, data.reference, str(resolve_device(config.device)),
                                      config.population_n)
        samples = scores.pop("samples")
        return scores | self.extra_scores(model, data, config, seed) | {"_samples": samples}

    def headline(self, record) -> str:
        return f", unconditional W1 {record['unconditional']['joint_w1_mean']:.3f}"

    def summary(self, config, data) -> dict:
        return {"data": {"n_train": config.n_train, "n_test": config.n_test, "seed": config.data_seed, "df": config.df,
                         "skew": config.skew, "rho": data.dataset.rho, "reference_n": config.reference_n},
                "noise_floor": data.floor, "missing": data.missing}

    def table(self, results, data) -> str:
        floor, (lo, hi) = data.floor, TAIL_LEVELS
        head = (f"| model | uncond. W1 j=1 | uncond. W1 j=2 | cond. W1 mean | q{lo:g} error | q{hi:g} error | "
                f"q{lo:g} outward | q{hi:g} outward | ms/step |\n|---|---|---|---|---|---|---|---|---|\n")
        rows = []
        for name, runs in results.items():
            cells = [mean_std([r["unconditional"]["joint_w1"][j] for r in runs], 3) for j in (1, 2)]
            cells.append(mean_std([r["conditional"]["joint_w1_mean"] for r in runs], 3))
            for key in ("mean", "signed_mean"):
                cells += [mean_std([r["quantile_errors"][key][p] for r in runs], 3) for p in TAIL_LEVELS]
            cells.append(f"{np.mean([r['ms_per_step'] for r in runs]):.1f}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        q = floor["quantile_errors"]
        rows.append(f"| noise floor (true vs true) | {floor['joint_w1'][1]:.3f} | {floor['joint_w1'][2]:.3f} | "
                    f"{floor['joint_w1_mean']:.3f} | {q['mean'][lo]:.3f} | {q['mean'][hi]:.3f} | "
                    f"{q['signed_mean'][lo]:.3f} | {q['signed_mean'][hi]:.3f} | |")
        return (head + "\n".join(rows) + "\n\nW1 in data units (lower is better); quantile errors of the "
                "generated tuples against a large true sample, in units of its interquartile range per "
                "coordinate, averaged over the 8 coordinates; "
                "'outward' is signed: positive where the generated tail reaches further than the data's. "
                "Mean ± std over seeds.\n" + self.missing_note(data.missing) + likelihood_table(results)
                + sampler_table(results, {n: [r["unconditional"]["joint_w1_mean"] for r in runs]
                                          for n, runs in results.items()}, floor["joint_w1_mean"], scale=1.0))

    def figures(self, results, data, config, out: Path) -> list[str]:
        fig = qq_figure(data.reference, {n: runs[0]["_samples"]["population"] for n, runs in results.items()},
                        "Heavy-tailed data: unconditional generation (seed 0)")
        return [str(save_figure(fig, out / "quantiles.png"))]


def qq_figure(reference: np.ndarray, populations: dict, title: str):
    import matplotlib.pyplot as plt

    m, num_j = reference.shape[1], reference.shape[2]
    probs = np.concatenate([np.linspace(0.001, 0.05, 30), np.linspace(0.05, 0.95, 40), np.linspace(0.95, 0.999, 30)])
    fig, axes = plt.subplots(num_j, m, figsize=(3.0 * m, 3.0 * num_j), squeeze=False)
    for j in range(num_j):
        for k in range(m):
            ax = axes[j, k]
            truth = np.quantile(reference[:, k, j], probs)
            ax.plot(truth, truth, color="0.6", lw=1, label="true")
            for name, pop in populations.items():
                ax.plot(truth, np.quantile(pop[:, k, j], probs), lw=1.4, label=name)
            ax.set_title(f"x{k + 1}, coordinate {j + 1}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title + "\nquantiles 0.1%..99.9% of generated against true data (diagonal: perfect)",
                 fontsize=10)
    fig.tight_layout()
    return fig


register_experiment(HeavyTailExperiment())
