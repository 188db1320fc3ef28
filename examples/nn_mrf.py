"""The experimental NN-MRF prior against the GMRF prior on the copula benchmark.

    python examples/nn_mrf.py                       # 1 seed, 200 epochs, both models
    python examples/nn_mrf.py --seeds 3 --out results/nn-mrf

The same as ``pyro-mcvae run nnmrf``: the copula benchmark's options, metrics, tables and
figures, plus the HMC diagnostics at the end of training and after ``--chain-transitions`` more
with the parameters fixed. Those chains are saved as ArviZ netCDF in the run folder
(``OUT/nnmrf/seed0/prior_chains.nc``; ``--chains-every N`` also saves them during training) and
drawn by ArviZ (``OUT/nnmrf_chains_{trace,rank,energy}.png``). Read them without this library:

    import arviz as az
    idata = az.from_netcdf("results/nn-mrf/nnmrf/seed0/prior_chains.nc")
    az.summary(idata, var_names=["energy", "sqnorm"]); az.plot_trace(idata, var_names=["energy"])

See ``pyro_mcvae/experiments/nnmrf.py``.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("nnmrf"), description=__doc__))
