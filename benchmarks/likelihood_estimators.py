"""Ratio against difference estimator of the conditional log-likelihood on a trained copula run.

    python benchmarks/likelihood_estimators.py --run results/copula-eval --model gmrf --seed 0

Loads ``<run>/<model>/seed<S>`` as ``examples/copula.py`` trained it (default settings) and, on
the first ``--tuples`` test tuples, for each ``K`` in ``--ks``: the joint ``log p(x)``, the
marginal ``log p(x_1)``, and ``log p(x_2, x_3, x_4 | x_1)`` by the ratio estimator (draws from the
subset posterior of component 1), by the difference estimator (the default: the joint minus the
marginal moved up by twice its Jensen gap) and by the plain difference ``log p^(x) - log p^(x_1)``
of the guide's draws alone (the estimator before, whose bias has either sign), each with its Monte
Carlo error (NaN below 10 effective draws) and smallest ESS. Writes
``<run>/likelihood_estimators_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="results/copula-eval")
    parser.add_argument("--model", default="gmrf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuples", type=int, default=100)
    parser.add_argument("--ks", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args(argv)

    from pyro_mcvae.experiments import get_experiment, parse_config
    from pyro_mcvae.experiments.runner import build_seeded, restore
    from pyro_mcvae.metrics import LikelihoodEstimate, conditional_log_likelihood, log_likelihood
    from pyro_mcvae.provenance import provenance

    experiment = get_experiment("copula")
    config = parse_config(experiment, ["--model", args.model, "--out", args.run])
    data = experiment.data(config)
    model = restore(build_seeded(experiment, config, data, args.model, args.seed),
                    Path(args.run) / args.model / f"seed{args.seed}")
    x = torch.as_tensor(data.test[:args.tuples], dtype=torch.float32)
    rows = []
    for k in args.ks:
        est = {"joint": log_likelihood(model, x, k, seed=1),
               "marginal x1": log_likelihood(model, x, k, components=[0], seed=2),
               "ratio": conditional_log_likelihood(model, x, [0], [1, 2, 3], k, estimator="ratio", seed=3),
               "difference": conditional_log_likelihood(model, x, [0], [1, 2, 3], k, seed=4)}
        plain = [log_likelihood(model, x, k, components=c, seed=s, defensive=0.0, min_ess=0)
                 for c, s in ((None, 5), ([0], 6))]
        est["plain difference"] = LikelihoodEstimate(plain[0].per_datum - plain[1].per_datum,
                                                     (plain[0].variance + plain[1].variance).sqrt(),
                                                     torch.minimum(plain[0].ess, plain[1].ess), k)
        row = {"K": k} | {name: {"mean": e.mean, "monte_carlo_error": e.monte_carlo_error,
                                 "min_ess": float(e.ess.min())} for name, e in est.items()}
        rows.append(row)
        print(f"K {k}: " + ", ".join(f"{n} {v['mean']:.3f} ± {v['monte_carlo_error']:.3f} (min ESS {v['min_ess']:.0f})"
                                      for n, v in row.items() if n != "K"), flush=True)
    out = Path(args.run) / f"likelihood_estimators_{args.model}.json"
    out.write_text(json.dumps(provenance(torch.device("cpu")) | {"settings": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
