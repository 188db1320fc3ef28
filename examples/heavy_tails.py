"""Heavy-tailed, skewed multi-component data: the GMRF MCVAE against the ALMRF.

    python examples/heavy_tails.py                                   # both models, 1 seed
    python examples/heavy_tails.py --seeds 3 --out results/heavy-tails

The same as ``pyro-mcvae run heavy_tails``; see ``pyro_mcvae/experiments/heavy_tails.py``.
"""

import sys

from pyro_mcvae.experiments import get_experiment, parse_config, run_experiment

EXPERIMENT = get_experiment("heavy_tails")


def main(argv=None) -> int:
    run_experiment(EXPERIMENT, parse_config(EXPERIMENT, argv, description=__doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
