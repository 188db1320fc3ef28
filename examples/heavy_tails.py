"""Heavy-tailed, skewed multi-component data: the GMRF MCVAE against the ALMRF.

    python examples/heavy_tails.py                                   # both models, 1 seed
    python examples/heavy_tails.py --seeds 3 --out results/heavy-tails

The same as ``pyro-mcvae run heavy_tails``; see ``pyro_mcvae/experiments/heavy_tails.py``.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("heavy_tails"), description=__doc__))
