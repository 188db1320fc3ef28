"""The experimental NN-MRF prior against the GMRF prior on the copula benchmark.

    python examples/nn_mrf.py                       # 1 seed, 200 epochs, both models
    python examples/nn_mrf.py --seeds 3 --out results/nn-mrf

The same as ``pyro-mcvae run nnmrf``: the copula benchmark's options, metrics, tables and
figures, plus the HMC diagnostics and a trace plot (``--trace-transitions``); see
``pyro_mcvae/experiments/nnmrf.py``.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("nnmrf"), description=__doc__))
