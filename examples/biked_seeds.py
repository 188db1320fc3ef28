"""Assemblies over seeds: one table of every model's metrics, mean ± standard deviation.

    python examples/biked_seeds.py results/biked-cpu-v2-seed0 results/biked-cpu-v2-seed1 \\
        results/biked-cpu-v2-seed2 --out results/biked-cpu-v2-seeds.md

Each source is an ``--out`` folder of ``examples/biked.py`` (each model's ``<model>/results.json``,
so models added by later commands count, or the folder's combined ``results.json``) or a results
file itself (one record, or ``{model: record}``). Records are grouped by their own seed, and runs
of a model whose settings differ from its preset (``--beta``, ``--prior-form``, ...) form rows of
their own, named by the differences; a row enters where every seed has it. Also writes the summary
as JSON beside ``--out``, and says for every metric whether the GMRF is best beyond the seed
spread (its mean ± sd apart from the best other model's).
"""

import sys

from pyro_mcvae.experiments.bikes import BIKE_VARIANTS, SEED_METRICS
from pyro_mcvae.experiments.seeds import seeds_main

if __name__ == "__main__":
    sys.exit(seeds_main(None, __doc__, SEED_METRICS, BIKE_VARIANTS))
