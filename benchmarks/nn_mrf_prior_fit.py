"""How well a trained MCMC prior matches the aggregate posterior it is fitted to.

    python benchmarks/nn_mrf_prior_fit.py --run results/nn-mrf [--seed 0] [run options]

Loads ``<run>/nnmrf/seed<S>`` as ``examples/nn_mrf.py`` trained it (pass the same options the
run used, e.g. ``--penalty-form square``) and compares, per latent coordinate, the aggregate
posterior of the training tuples (the average of the encoders' Gaussians: mean of the means,
mean covariance plus covariance of the means) with the prior's saved chains
(``prior_chains.nc``, the draws with the parameters fixed): means, standard deviations and the
largest difference of correlations. Prints a table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="results/nn-mrf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args, rest = parser.parse_known_args(argv)

    import arviz as az

    from pyro_mcvae.experiments import get_experiment, parse_config
    from pyro_mcvae.experiments.runner import build_seeded, restore

    experiment = get_experiment("nnmrf")
    config = parse_config(experiment, ["--model", "nnmrf", "--out", args.run, *rest], prog="nn_mrf_prior_fit.py")
    data = experiment.data(config)
    run_dir = experiment.run_dir(config, "nnmrf", args.seed)
    model = restore(build_seeded(experiment, config, data, "nnmrf", args.seed), run_dir)
    x = experiment.train_data(data)
    with torch.no_grad():
        q = model.guide.posterior(list(x.unbind(1)) if torch.is_tensor(x) else list(x))
    mu, cov = q.mean.double(), q.covariance_matrix.double()
    agg_mean = mu.mean(0).numpy()
    agg_cov = (cov.mean(0) + torch.cov(mu.T)).numpy()
    z = az.from_netcdf(run_dir / "prior_chains.nc").posterior["z"].values.reshape(-1, mu.shape[-1])
    prior_mean, prior_cov = z.mean(0), np.cov(z.T)
    agg_std, prior_std = np.sqrt(np.diag(agg_cov)), np.sqrt(np.diag(prior_cov))

    def corr(c):
        s = np.sqrt(np.diag(c))
        return c / s[:, None] / s[None, :]

    result = {"aggregate_mean": agg_mean.tolist(), "prior_mean": prior_mean.tolist(),
              "aggregate_std": agg_std.tolist(), "prior_std": prior_std.tolist(),
              "max_abs_mean_difference": float(np.abs(agg_mean - prior_mean).max()),
              "max_abs_std_difference": float(np.abs(agg_std - prior_std).max()),
              "max_abs_correlation_difference": float(np.abs(corr(agg_cov) - corr(prior_cov)).max()),
              "chain_draws": int(z.shape[0])}
    print("| coordinate | aggregate mean | prior mean | aggregate std | prior std |\n|---|---|---|---|---|")
    for i in range(len(agg_mean)):
        print(f"| {i} | {agg_mean[i]:.2f} | {prior_mean[i]:.2f} | {agg_std[i]:.2f} | {prior_std[i]:.2f} |")
    print(f"\nlargest differences: mean {result['max_abs_mean_difference']:.2f}, std "
          f"{result['max_abs_std_difference']:.2f}, correlation {result['max_abs_correlation_difference']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), **result}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
