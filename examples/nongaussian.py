"""Non-Gaussian dependence (an X-shaped or a Student-t copula): GMRF, ALMRF and NN-MRF MCVAEs.

    python examples/nongaussian.py --kind x                          # the three models, 1 seed
    python examples/nongaussian.py --kind t --model gmrf almrf --seeds 3 --out results/nongaussian-t

The same as ``pyro-mcvae run nongaussian``; see ``pyro_mcvae/experiments/nongaussian.py``.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("nongaussian"), description=__doc__))
