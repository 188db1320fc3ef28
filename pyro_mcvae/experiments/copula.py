"""Gaussian-copula benchmark of the GMRF MCVAE paper (its Table I protocol).

Trains, evaluates (joint W1 per coordinate, unconditional and conditional on each single
component, marginal W1, Spearman errors, all against a noise floor) under two generation
protocols (``sample``: x ~ p(x | z); ``mean``: decoder means) and writes ``OUT/results.json``,
``OUT/table.md``, ``OUT/pairplots_<protocol>.png`` (one pairplot per model) and
``OUT/pairplot_<model>.png``. Each seed's run lives in ``OUT/<model>/seed<S>/`` (CSV log and
checkpoint); running the same command again resumes an interrupted run and reuses finished ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..data import copula_log_density, make_copula_splits
from ..evaluate import copula_noise_floor, evaluate_copula, latent_sampler_scores, likelihood_scores
from ..infer import seed_everything
from ..plots import copula_pairplot, copula_pairplot_grid, save_figure
from .base import Experiment, ModelSpec, RunConfig, incomplete_training_set, mean_std, option, register_experiment
from .files import VectorFiles
from .runner import EVAL_SEED_OFFSET, resolve_device

__all__ = ["CopulaConfig", "CopulaExperiment", "MODELS", "NO_PER_SAMPLE_MASKS", "PROTOCOLS", "VectorConfig",
           "VectorExperiment", "likelihood_table", "missing_ratio_summary", "sampler_table"]

#: The model table: registry methods with this benchmark's settings. The baselines use the
#: paper's shared latent of size 3; each trains with its own method's objective.
MODELS = {
    "gmrf": ModelSpec("gmrf", {"prior": "precision"}),
    "mvae": ModelSpec("mvae", latent=3),  # + sub-sampled terms (its objective)
    "mmvae": ModelSpec("mmvae", latent=3, particles=4),
    "mopoe": ModelSpec("mopoe", latent=3),
    "mmvaeplus": ModelSpec("mmvaeplus", {"private_dim": 1}, latent=3, particles=4),
    # ablation, not part of "all": the prior's covariance (not its precision) built by the blocks
    "gmrf-covprior": ModelSpec("gmrf", {"prior": "covariance"}),
    # experimental, not part of "all": neural MRF prior (log Z gradient from persistent HMC)
    "nnmrf": ModelSpec("nnmrf"),
}
ALL = ("gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus")
PROTOCOLS = {"sample": True, "mean": False}  # name: generate x ~ p(x | z) (else decoder mean)
OBJECTIVES = ["meanfield", "trace", "iwae", "dreg"]

#: Registry methods that cannot train when different samples of a batch miss different
#: components, and why (``--missing-ratio > 0`` rejects them before any training).
NO_PER_SAMPLE_MASKS = {
    "nnmrf": "its guide completes absent blocks from the prior's conditional law, which an energy-based "
             "(NN-MRF) prior does not have in closed form",
    "almrf": "the asymmetric Laplace prior's conditional law depends on how many components are present, so "
             "its guide takes absent components only when every sample of a batch misses the same ones",
}


@dataclass
class VectorConfig(RunConfig):
    """Settings shared by the vector benchmarks (copula, heavy tails)."""

    n_train: int = option(10000, "training tuples")
    n_test: int = option(2000, "test tuples")
    data_seed: int = option(0, "seed of the data")
    latent_dim: int = option(2, "latent size per component (GMRF-type models)")
    hidden: list[int] = option([64, 64], "hidden layer sizes of the encoders and decoders")
    batch_size: int = option(256, "minibatch size")
    lr: float = option(2e-3, "learning rate")
    lr_final: float = option(2e-4, "decay the learning rate geometrically to this value by the last step")
    population_n: int = option(20000, "generated tuples for the population metrics")
    missing_ratio: float = option(0.0, "incomplete training data: each component of each training tuple is "
                                       "absent with this probability, given that at least one is present "
                                       "(seeded from --data-seed); test data stay complete")
    likelihood_samples: int = option(1000, "importance samples K per tuple for the joint and conditional "
                                           "log-likelihoods of the test tuples (0: skip them)")
    likelihood_tuples: int = option(200, "test tuples whose log-likelihoods are estimated (the first ones)")
    sampler_components: list[int] = option([1, 10], "sizes of the Gaussian mixtures fitted to the training "
                                                    "encodings for joint generation (post-hoc latent samplers); "
                                                    "0: none")

    def check(self) -> None:
        super().check()
        if self.n_train < 2 or self.n_test < 2:
            raise ValueError("--epochs, --seeds and --jobs must be >= 1, --n-train and --n-test >= 2")
        if not 0.0 <= self.missing_ratio < 1.0:
            raise ValueError(f"--missing-ratio must be in [0, 1), got {self.missing_ratio}")
        if self.likelihood_samples < 0 or self.likelihood_tuples < 1:
            raise ValueError(f"--likelihood-samples must be >= 0 and --likelihood-tuples >= 1, got "
                             f"{self.likelihood_samples} and {self.likelihood_tuples}")
        if any(c < 0 for c in self.sampler_components) or (0 in self.sampler_components
                                                           and len(self.sampler_components) > 1):
            raise ValueError(f"--sampler-components takes mixture sizes >= 1, or 0 alone (none), got "
                             f"{self.sampler_components}")


class VectorExperiment(Experiment):
    """What the vector benchmarks (copula, heavy tails) share: optional incomplete training data.
    ``data(config)`` returns a namespace with ``train`` (absent entries zeroed), ``train_mask``
    and ``missing`` (the record), e.g. from :func:`incomplete_training_set`."""

    def check(self, config) -> None:
        super().check(config)
        if config.missing_ratio > 0:
            for name in config.model:
                method = self.spec(name).method
                if method in NO_PER_SAMPLE_MASKS:
                    raise ValueError(f"--missing-ratio {config.missing_ratio:g}: model {name!r} cannot train on "
                                     f"incomplete data: {NO_PER_SAMPLE_MASKS[method]}")

    def run_dir(self, config, model_name: str, seed: int) -> Path:
        # Runs on incomplete data never resume or reuse a run trained on other data.
        path = super().run_dir(config, model_name, seed)
        return path.with_name(f"{path.name}-missing{config.missing_ratio:g}") if config.missing_ratio > 0 else path

    def train_mask(self, data):
        return data.train_mask

    def extra_scores(self, model, data, config, seed: int) -> dict:
        """What every vector benchmark adds to a run's record: ``likelihood`` (joint and
        single-source conditional log-likelihoods of the first ``likelihood_tuples`` test tuples,
        :func:`~pyro_mcvae.evaluate.likelihood_scores`) and ``latent_sampler`` (joint generation
        from Gaussian mixtures fitted to the encodings of the complete training tuples,
        :func:`~pyro_mcvae.evaluate.latent_sampler_scores`), each with its seconds."""
        record = {}
        test = torch.as_tensor(data.test[:config.likelihood_tuples])
        if config.likelihood_samples:
            t0 = time.perf_counter()
            scores = likelihood_scores(model, test.to(next(model.parameters())), config.likelihood_samples,
                                       seed=seed + EVAL_SEED_OFFSET)
            record["likelihood"] = scores | {"seconds": round(time.perf_counter() - t0, 2)}
        components = [c for c in config.sampler_components if c > 0]
        if components:
            t0 = time.perf_counter()
            train = torch.as_tensor(data.train)
            if data.train_mask is not None:  # fit to what was observed in full
                train = train[torch.as_tensor(data.train_mask).all(-1)]
            scores = latent_sampler_scores(model, train.to(next(model.parameters())), data.test, components,
                                           protocols=PROTOCOLS, seed=seed + EVAL_SEED_OFFSET)
            record["latent_sampler"] = scores | {"seconds": round(time.perf_counter() - t0, 2)}
        return record

    @staticmethod
    def missing_note(missing: dict) -> str:
        if not missing["missing_ratio"]:
            return ""
        return (f"\nTrained on incomplete data: missing ratio {missing['missing_ratio']:g}, "
                f"{100 * missing['absent_fraction']:.1f}% of the training components absent "
                f"({missing['complete_tuples']} of {missing['n_train']} tuples complete); test data complete.\n")


@dataclass
class CopulaConfig(VectorConfig):
    epochs: int = option(200, "training epochs")
    out: str = option("results/copula", "output directory (runs resume there)")
    model: list[str] = option(["gmrf"], "gmrf: precision-parameterised GMRF prior (default); mvae, mmvae, mopoe, "
                              "mmvaeplus: baselines over a shared latent of size 3 (MMVAE+: plus 1 private "
                              "coordinate per component); all: those five; gmrf-covprior: ablation, the prior's "
                              "covariance built by the block construction; nnmrf: neural MRF prior; or any "
                              "registered method")
    elbo: str | None = option(None, "objective for every model (default: each model's own)", choices=OBJECTIVES)
    particles: int | None = option(None, "importance samples K for iwae/dreg (default: each model's own)")
    family: str = option("normal", "posterior and prior family of the baselines", choices=["normal", "laplace"])
    beta: str = option("1.0", "number, 'linear:STEPS', or 'cyclical:PERIOD'")
    likelihood: str = option("normal", "likelihood of every component", choices=["normal", "laplace"])
    mode: str = option("blockwise", "block scaling of the prior's and the guide's SPD construction",
                       choices=["blockwise", "elementwise"])
    eps: float = option(0.9, "dominance margin of the guide's covariance")
    prior_eps: float | None = option(None, "dominance margin of the prior (default 0.99 for a precision, "
                                           "0.9 for a covariance)")
    chain_transitions: int = option(1000, "MCMC priors (NN-MRF): HMC transitions run after training with the "
                                          "parameters fixed, saved as ArviZ netCDF <run>/prior_chains.nc")
    chains_every: int = option(0, "MCMC priors: also save the chains during training every N epochs "
                                  "(<run>/chains_epoch<N>.nc; 0: only after training)")
    energy_penalty: float = option(0.1, "NN-MRF: weight of the energy regulariser (0: none)")
    penalty_form: str = option("level", "NN-MRF: 'level' (the squared mean energies of the batch and the chains) "
                                        "or 'square' (E^2 at each datum and chain state; flattens the law)",
                               choices=["level", "square"])
    chains: int = option(64, "NN-MRF: persistent HMC chains of the prior")
    diagonal_mass: bool = option(False, "NN-MRF: adapt a diagonal mass matrix instead of the dense one (the "
                                        "chains' covariance)")
    readapt_every: int = option(1000, "NN-MRF: in training, warm the sampler up again every N transitions (0: once)")

    def check(self) -> None:
        super().check()
        if self.energy_penalty < 0 or self.chains < 2 or self.readapt_every < 0:
            raise ValueError("--energy-penalty and --readapt-every must be >= 0, --chains >= 2")
        if self.particles is not None and self.particles < 1:
            raise ValueError("--particles must be >= 1")
        if self.chain_transitions < 0 or self.chains_every < 0:
            raise ValueError("--chain-transitions and --chains-every must be >= 0")


class CopulaExperiment(VectorExperiment):
    name = "copula"
    description = __doc__.split("\n\n")[0]
    Config = CopulaConfig
    config_file = VectorFiles("make_copula_splits", "evaluate_copula")
    models = MODELS
    all_models = ALL

    def data(self, config):
        dataset = make_copula_splits(config.n_train, config.n_test, seed=config.data_seed)
        train, mask, missing = incomplete_training_set(dataset.train, config.missing_ratio, config.data_seed)
        return SimpleNamespace(train=train, train_mask=mask, missing=missing, test=dataset.test, dataset=dataset,
                               floor=copula_noise_floor(dataset, config.population_n))

    def callbacks(self, config, run_dir: Path) -> list:
        if not config.chains_every:
            return []
        from ..infer import ChainSnapshots

        return [ChainSnapshots(run_dir, config.chains_every)]  # does nothing for a prior without chains

    def method_fields(self, config, spec) -> dict:
        # Each method takes those of these settings its config has (the GMRF no family; only the
        # NN-MRF the prior's sampler settings).
        return dict(hidden=tuple(config.hidden), likelihood=config.likelihood, mode=config.mode, eps=config.eps,
                    prior_eps=config.prior_eps, family=config.family, energy_penalty=config.energy_penalty,
                    penalty_form=config.penalty_form, num_chains=config.chains, dense_mass=not config.diagonal_mass,
                    readapt_every=config.readapt_every)

    def evaluate(self, model, data, config, seed) -> dict:
        record, samples = {}, {}
        device = str(resolve_device(config.device))
        for protocol, sample_likelihood in PROTOCOLS.items():
            seed_everything(seed + EVAL_SEED_OFFSET)  # generation draws from its own stream
            t0 = time.perf_counter()
            scores = self.score(model, data, config, device, sample_likelihood)
            samples[protocol] = scores.pop("samples")
            record[protocol] = scores | {"eval_seconds": round(time.perf_counter() - t0, 2)}
        return record | self.extra_scores(model, data, config, seed) | {"_samples": samples}

    def score(self, model, data, config, device: str, sample_likelihood: bool) -> dict:
        """One protocol's scores (``"samples"``: the generated tuples of the figures)."""
        return evaluate_copula(model, data.dataset, device, config.population_n, sample_likelihood)

    def headline(self, record) -> str:
        return f", unconditional W1 x 1000 {1000 * record['sample']['unconditional']['joint_w1_mean']:.1f} (samples)"

    def summary(self, config, data) -> dict:
        return {"data": {"n_train": config.n_train, "n_test": config.n_test, "seed": config.data_seed,
                         "rho": data.dataset.rho, "components": data.dataset.num_components},
                "noise_floor": data.floor, "missing": data.missing,
                "protocols": {"sample": "x ~ p(x | z)", "mean": "decoder mean"},
                "units": "W1 in data units (multiply by 1000 for the paper's tables)"}

    def table(self, results, data) -> str:
        tables = "\n".join(protocol_table(results, data.floor, protocol) for protocol in PROTOCOLS)
        return tables + self.evaluation_tables(results, data, self.exact_likelihood(data))

    def evaluation_tables(self, results, data, exact=None) -> str:
        """What follows the generation tables: the missing-data note, the log-likelihoods and the
        latent samplers against the prior (protocol ``sample``)."""
        prior_w1 = {name: [r["sample"]["unconditional"]["joint_w1_mean"] for r in runs] for name, runs in results.items()}
        return (self.missing_note(data.missing) + likelihood_table(results, exact)
                + sampler_table(results, prior_w1, data.floor["joint_w1_mean"]))

    @staticmethod
    def exact_likelihood(data):
        """The copula law's mean ``log p(x)`` and ``log p(x_rest | x_k)`` (its marginals are
        uniform, so the same) on the first ``n`` test tuples."""
        def exact(n):
            joint = float(copula_log_density(data.test[:n], rho=data.dataset.rho).mean())
            return joint, joint
        return exact

    def missing_ratio_summary(self, by_ratio, record):
        return missing_ratio_summary(by_ratio, record["noise_floor"]["joint_w1_mean"])

    def figures(self, results, data, config, out: Path) -> list[str]:
        paths = []
        for name, runs in results.items():
            first = runs[0]["_samples"]["sample"]
            fig = copula_pairplot(data.test, first["unconditional"], f"{name}: unconditional samples (seed 0)")
            paths.append(save_figure(fig, out / f"pairplot_{name}.png"))
            fig = copula_pairplot(data.test, first["conditional"][0], f"{name}: generated given x1 (seed 0)")
            paths.append(save_figure(fig, out / f"pairplot_{name}_given_x1.png"))
        for protocol in PROTOCOLS:
            generated = {name: runs[0]["_samples"][protocol]["unconditional"] for name, runs in results.items()}
            fig = copula_pairplot_grid(data.test, generated,
                                       f"Unconditional generation, protocol '{protocol}' (seed 0)")
            paths.append(save_figure(fig, out / f"pairplots_{protocol}.png", dpi=80))
        return [str(p) for p in paths]


def likelihood_table(results: dict, exact=None) -> str:
    """Markdown table of the runs' ``likelihood`` records (empty when none has one); ``exact``:
    optional function of the number of test tuples scored, returning the data law's own mean
    ``(log p(x), log p(x_rest | x_k))`` on them (a row "true law")."""
    rows = []
    for name, runs in results.items():
        recs = [r["likelihood"] for r in runs if "likelihood" in r]
        if not recs:
            continue
        if "skipped" in recs[0]:
            rows.append(f"| {name} | n/a | n/a | n/a | | | {recs[0]['skipped']} |")
            continue
        joint, cond, ratio = ([r[key] for r in recs] for key in ("joint", "conditional_mean", "conditional_ratio_mean"))
        rows.append(f"| {name} | {mean_std([j['mean'] for j in joint], 3)} | {mean_std([c['mean'] for c in cond], 3)} | "
                    f"{mean_std([c['mean'] for c in ratio], 3)} | "
                    f"{np.mean([j['data_std_error'] for j in joint]):.3f} / {np.mean([c['data_std_error'] for c in cond]):.3f} | "
                    f"{np.max([j['monte_carlo_error'] for j in joint]):.4f} / {np.max([c['monte_carlo_error'] for c in cond]):.4f} | "
                    f"K {joint[0]['num_samples']}, {joint[0]['num_data']} test tuples; min ESS joint "
                    f"{min(j['min_ess'] for j in joint):.0f}, ratio {min(c['min_ess'] for c in ratio):.0f} |")
    if not rows:
        return ""
    scored = [r["likelihood"]["joint"]["num_data"] for runs in results.values() for r in runs
              if "joint" in r.get("likelihood", {})]
    if exact is not None and scored:
        joint, conditional = exact(scored[0])
        rows.append(f"| true law (exact density) | {joint:.3f} | {conditional:.3f} | {conditional:.3f} | | | "
                    f"the same {scored[0]} test tuples |")
    return ("\n**Log-likelihoods** (nats per tuple, higher is better; importance sampling from each model's own "
            "posterior and a defensive share of prior draws, `pyro_mcvae.evaluate.likelihood_scores`): joint "
            "log p(x_1..x_M), a stochastic lower bound, and log p(x_rest | x_k) averaged over the single given "
            "components k, by difference (the joint minus log p(x_k) moved up by twice its estimated Jensen gap) "
            "and by the ratio estimator on draws from the subset posterior of k; both conditionals' first-order "
            "bias is negative (far low when the weights degenerate: see the ESS). Mean ± std over seeds; the "
            "standard error over the test tuples and the largest Monte Carlo error of a seed's mean (joint / "
            "conditional by difference; nan when some tuple has fewer than 10 effective draws).\n\n"
            "| model | log p(x) | log p(x_rest given x_k) | same, ratio estimator | s.e. over data | Monte Carlo s.e. "
            "| estimate |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def sampler_table(results: dict, prior_w1: dict, floor: float, scale: float = 1000.0, protocol: str = "sample") -> str:
    """Markdown table: unconditional joint W1 (mean over coordinates, times ``scale``) with latents
    from the prior (``prior_w1``: name -> per-seed values) and from each fitted mixture of the
    runs' ``latent_sampler`` records (empty when none has one)."""
    sizes = sorted({c for runs in results.values() for r in runs for c in r.get("latent_sampler", {})
                    if c != "seconds"}, key=int)
    if not sizes:
        return ""
    rows = []
    for name, runs in results.items():
        cells = [mean_std(scale * np.array(prior_w1[name]))]
        for c in sizes:
            vals = [r["latent_sampler"][c][protocol]["joint_w1_mean"] for r in runs if c in r.get("latent_sampler", {})]
            cells.append(mean_std(scale * np.array(vals)) if vals else "")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows.append(f"| noise floor (true vs true) | {scale * floor:.1f} |" + " |" * len(sizes))
    head = ("| model | latents from the prior | " + " | ".join(f"mixture of {c}" for c in sizes) + " |\n|---|---|"
            + "---|" * len(sizes) + "\n")
    units = "W1 x 1000" if scale == 1000 else "W1"
    return (f"\n**Joint generation with post-hoc latent samplers** (protocol `{protocol}`): unconditional {units} "
            "(mean over coordinates, lower is better) with the decoder's latents drawn from the prior, or from "
            "a Gaussian mixture fitted to the posterior means of the complete training tuples "
            "(`pyro_mcvae.fit_latent_sampler`). Mean ± std over seeds.\n\n" + head + "\n".join(rows) + "\n")


def missing_ratio_summary(by_ratio: dict, floor: float, protocol: str = "sample"):
    """Quality against the missing ratio of the training data: ``by_ratio`` maps each ratio to
    a run's results (model -> per-seed records, as :func:`~pyro_mcvae.experiments.run_experiment`
    returns them under ``"_results"``). Returns the markdown table (unconditional and conditional
    joint W1 x 1000 of ``protocol``, joint and conditional log-likelihoods; mean ± std over seeds)
    and a figure (W1 against the ratio, one line per model, the noise floor ``floor`` dashed)."""
    import matplotlib.pyplot as plt

    ratios = sorted(by_ratio)
    models = list(dict.fromkeys(name for r in ratios for name in by_ratio[r]))
    columns = {"uncond. W1": lambda rec: 1000 * rec[protocol]["unconditional"]["joint_w1_mean"],
               "cond. W1": lambda rec: 1000 * rec[protocol]["conditional"]["joint_w1_mean"],
               "log p(x)": lambda rec: rec["likelihood"]["joint"]["mean"],
               "log p(x_rest given x_k)": lambda rec: rec["likelihood"]["conditional_mean"]["mean"]}
    rows, curves = [], {}
    for name in models:
        for r in ratios:
            runs = by_ratio[r].get(name)
            if not runs:
                continue
            cells = []
            for label, value in columns.items():
                likelihood = label.startswith("log")
                # a run without likelihoods (skipped for an energy prior, or not asked for) shows n/a
                vals = [value(rec) for rec in runs if not likelihood or "joint" in rec.get("likelihood", {})]
                cells.append(mean_std(vals, 3 if likelihood else 1) if vals else "n/a")
                if not likelihood:
                    curves.setdefault((name, label), []).append((r, np.mean(vals), np.std(vals)))
            rows.append(f"| {name} | {r:g} | {len(runs)} | " + " | ".join(cells) + " |")
    table = ("| model | missing ratio | seeds | " + " | ".join(columns) + " |\n|---|---|---|" + "---|" * len(columns)
             + "\n" + "\n".join(rows) + f"\n\nW1 x 1000 (protocol `{protocol}`, lower is better; noise floor "
             f"{1000 * floor:.1f}), log-likelihoods in nats per tuple (higher is better), on the complete test "
             "tuples; mean ± std over seeds.\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, label in zip(axes, ("uncond. W1", "cond. W1")):
        for name in models:
            pts = curves.get((name, label))
            if pts:
                r, m, sd = map(np.array, zip(*pts))
                ax.errorbar(r, m, yerr=sd, marker="o", capsize=3, label=name)
        ax.axhline(1000 * floor, color="0.5", ls="--", lw=1, label="noise floor")
        ax.set_xlabel("missing ratio of the training data")
        ax.set_title(f"{label} x 1000")
    axes[0].set_ylabel("W1 x 1000")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return table, fig


def protocol_table(results: dict, floor: dict, protocol: str) -> str:
    """Markdown table (Table I layout) of one generation protocol, mean ± std over seeds."""
    head = ("| model | uncond. W1 j=1 | uncond. W1 j=2 | uncond. mean | cond. W1 j=1 | cond. W1 j=2 | "
            "cond. mean | Spearman err. (pop.) | train s / seed |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, runs in results.items():
        scores = [r[protocol] for r in runs]
        u = [[s["unconditional"]["joint_w1"][j] for s in scores] for j in (1, 2)]
        c = [[np.mean([b["joint_w1"][j] for b in s["conditional"]["by_source"].values()]) for s in scores]
             for j in (1, 2)]
        cells = [mean_std(1000 * np.array(v)) for v in
                 (u[0], u[1], np.mean(u, axis=0), c[0], c[1], np.mean(c, axis=0))]
        sp = mean_std([s["spearman_population_error"] for s in scores], digits=3)
        secs = np.mean([r["train_seconds"] for r in runs])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {sp} | {secs:.0f} |")
    f = [1000 * floor["joint_w1"][j] for j in (1, 2)]
    rows.append(f"| noise floor (true vs true) | {f[0]:.1f} | {f[1]:.1f} | {np.mean(f):.1f} | {f[0]:.1f} | "
                f"{f[1]:.1f} | {np.mean(f):.1f} | {floor['spearman_population_error']:.3f} | |")
    what = {"sample": "generated tuples drawn from the full generative model, x ~ p(x | z)",
            "mean": "generated tuples are the decoder means E[x | z]"}[protocol]
    return (f"**Protocol `{protocol}`**: {what}.\n\n" + head + "\n".join(rows)
            + "\n\nW1 x 1000 (lower is better), mean ± std over seeds; conditional: mean over the "
              "single observed source components.\n")


register_experiment(CopulaExperiment())
