"""Gaussian-copula benchmark of the GMRF MCVAE paper (its Table I protocol).

    python examples/copula.py                                   # defaults: GMRF, 1 seed
    python examples/copula.py --model all --seeds 3 --jobs 2 --out results/copula

The same as ``pyro-mcvae run copula``; see ``pyro_mcvae/experiments/copula.py`` for what it
measures and writes. Running the same command again resumes and reuses finished runs.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment, parse_config

EXPERIMENT = get_experiment("copula")


def parse_args(argv=None):
    return parse_config(EXPERIMENT, argv, description=__doc__)


def main(argv=None) -> int:
    return command_line(EXPERIMENT, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
